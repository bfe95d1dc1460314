"""Serving memory benchmark: the peak RSS of a torch-free query process over 1,000 queries.

The process serves the hybrid + rerank query pipeline of ``serve/pipelines.py`` (``query_pipeline``: BM25 and
``SyntrieverTextEmbedder`` → embedding retriever, fused by its default score fusion, ``SyntrieverRanker`` over the
top 100 at 256 tokens, int8) on the SciFact corpus (5,183 documents), and runs 1,000 queries (SciFact test + train
queries, cycling). Target (issue 17): peak RSS (VmHWM) <= 300 MB.

The parent process exports the models and indexes the corpus once (reused from ``.cache/bench/``); the measured
CHILD process only loads the saved store file (``SyntrieverInMemoryDocumentStore``) and its BM25 index, so
indexing memory does not count, and torch / transformers / sentence-transformers / optimum imports are blocked in
it (as in a slim serving image). It reports VmHWM and VmRSS (``/proc/self/status``) after the imports, after the
index load, after the model load, after warm-up queries and at the end, the ONNX Runtime sessions it created, the
largest resident mappings (``/proc/self/smaps``), and the pipeline / rerank-100 latencies.

    python benchmarks/serving_memory.py [--dataset ../shared/datasets/scifact] [--variants all]

``--variants`` also runs named configurations (ONNX Runtime session options as they were before issue 17, other
ranker batch sizes, ...) to show what each change is worth; they are applied in the child by wrapping
``onnxruntime.InferenceSession`` (session options) or by setting component attributes, never by editing code.
Writes ``benchmarks/results/serving_memory.{json,md}``. Needs the ``export`` and ``models`` extras in the parent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 300

# Named configurations run with --variants. "session" keys are applied to every session's SessionOptions before
# ONNX Runtime sees them ("config" entries through add_session_config_entry); "ranker"/"embedder" keys are set on
# the components after the pipeline is built.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "before issue 17 (mem pattern on; ranker batch 16)": {
        "session": {"enable_mem_pattern": True},
        "ranker": {"batch_size": 16},
    },
    "mem pattern on": {"session": {"enable_mem_pattern": True}},
    "ranker batch 1": {"ranker": {"batch_size": 1}},
    "ranker batch 4": {"ranker": {"batch_size": 4}},
    "ranker batch 8": {"ranker": {"batch_size": 8}},
    "ranker batch 16": {"ranker": {"batch_size": 16}},
    "arena off": {"session": {"enable_cpu_mem_arena": False}},
    "shared env arena kSameAsRequested": {"session": {"env_arena": {"arena_extend_strategy": 1}}},
    "initialisers outside the arena": {"session": {"config": {"session.use_device_allocator_for_initializers": "1"}}},
    "prepacking off": {"session": {"config": {"session.disable_prepacking": "1"}}},
}


# ---------------------------------------------------------------------------------------------------- child side
def _status() -> dict[str, float]:
    """VmRSS and VmHWM in MB (VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent)."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


def _mappings(top: int = 8) -> dict[str, Any]:
    """Resident MB by mapping: anonymous (heap, arenas, Python objects) vs each file (shared libraries, mmaps)."""
    by_name: dict[str, float] = {}
    name = "[anon]"
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split(None, 5)
                name = parts[5].strip() if len(parts) > 5 else "[anon]"
                name = "[anon]" if name in ("", "[heap]") else name
            elif first == "Rss:":
                by_name[name] = by_name.get(name, 0.0) + int(line.split()[1]) / 1024
    files = sorted(((k, v) for k, v in by_name.items() if not k.startswith("[")), key=lambda kv: -kv[1])
    return {
        "anonymous_mb": round(by_name.get("[anon]", 0.0), 1),
        "files_mb": round(sum(v for _, v in files), 1),
        "largest_files_mb": {Path(k).name: round(v, 1) for k, v in files[:top]},
    }


def _block_imports() -> None:
    from syntriever_haystack.serve.torch_free import block_torch  # what `syntriever serve` does

    if not block_torch():
        raise RuntimeError("torch was imported before the serving process could block it")


def _wrap_sessions(session_overrides: dict[str, Any], created: list[str]) -> None:
    """Count the ONNX Runtime sessions created and apply ``session_overrides`` to their options."""
    import onnxruntime as ort

    arena = session_overrides.get("env_arena")
    if arena is not None:  # one process-wide CPU arena, shared by the sessions that opt in
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(arena))
    original = ort.InferenceSession

    def make(path: Any, sess_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        options = sess_options if sess_options is not None else ort.SessionOptions()
        for key, value in session_overrides.items():
            if key == "env_arena":
                options.add_session_config_entry("session.use_env_allocators", "1")
            elif key == "config":
                for entry, entry_value in value.items():
                    options.add_session_config_entry(entry, entry_value)
            else:
                setattr(options, key, value)
        created.append(Path(str(path)).name)
        return original(path, options, *args, **kwargs)

    ort.InferenceSession = make  # type: ignore[misc,assignment]


def child(config: dict[str, Any]) -> dict[str, Any]:
    _block_imports()
    stages: dict[str, dict[str, float]] = {"start": _status()}
    t0 = time.perf_counter()
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.serve.memory_store import file_document_store
    from syntriever_haystack.serve.pipelines import query_pipeline, run_query
    from syntriever_haystack.serve.torch_free import BLOCKED

    import_s = time.perf_counter() - t0
    stages["imports"] = _status()
    created: list[str] = []
    _wrap_sessions(config.get("session", {}), created)

    t0 = time.perf_counter()
    store = file_document_store(ModelMetadata.load(config["bi"]), config["store"])
    pipeline = query_pipeline(
        store,
        config["bi"],
        config["ce"],
        top_k_bm25=config["rerank"],
        top_k_dense=config["rerank"],
        top_k=10,
        candidates=config["rerank"],
        quantization=config["precision"],
        ranker_quantization=config["ce_precision"],
    )
    pipeline.get_component("bm25_retriever").warm_up()  # the saved BM25 index
    index_s = time.perf_counter() - t0
    stages["index_load"] = _status()

    ranker = pipeline.get_component("ranker")
    embedder = pipeline.get_component("text_embedder")
    for key, value in config.get("ranker", {}).items():
        setattr(ranker, key, value)
    for key, value in config.get("embedder", {}).items():
        setattr(embedder, key, value)
    t0 = time.perf_counter()
    pipeline.warm_up()
    model_s = time.perf_counter() - t0
    stages["model_load"] = _status()

    rerank_s: list[float] = []
    original_run = ranker.run

    def timed_run(**kwargs: Any) -> Any:
        start = time.perf_counter()
        result = original_run(**kwargs)
        rerank_s.append(time.perf_counter() - start)
        return result

    ranker.run = timed_run
    queries = json.loads(Path(config["queries"]).read_text(encoding="utf-8"))
    reranked: list[int] = []
    for query in queries[: config["warmup"]]:
        run_query(pipeline, query)
    stages["warm"] = _status()
    rerank_s.clear()
    query_s: list[float] = []
    for i in range(config["n"]):
        start = time.perf_counter()
        found = run_query(pipeline, queries[i % len(queries)])
        query_s.append(time.perf_counter() - start)
        reranked.append(len(found))
    stages["end"] = _status()

    def pct(samples: list[float], q: float) -> float:
        ordered = sorted(samples)
        return round(1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)

    return {
        "stages_mb": stages,
        "peak_rss_mb": stages["end"]["VmHWM"],
        "mappings_at_end": _mappings(),
        "sessions": created,
        "import_s": round(import_s, 3),
        "index_load_s": round(index_s, 3),
        "model_load_s": round(model_s, 3),
        "queries": len(query_s),
        "query_p50_ms": pct(query_s, 50),
        "query_p95_ms": pct(query_s, 95),
        "rerank100_p50_ms": pct(rerank_s, 50),
        "rerank100_p95_ms": pct(rerank_s, 95),
        "ranker_batch_size": ranker.batch_size,
        "documents_returned_min": min(reranked),
        "blocked_modules_loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
    }


# ---------------------------------------------------------------------------------------------------- parent side
def prepare_models(work: Path) -> tuple[Path, Path, str, str]:
    """The exported MiniLM bi-encoder and cross-encoder (fresh 1-logit head: for latency and memory only), as
    ``serving_benchmark.py`` exports them into ``work``.

    :returns: bi-encoder folder, cross-encoder folder, the cross-encoder precision to serve, a note on it.
    """
    from serving_benchmark import prepare_models as export_models  # this script's folder is on sys.path

    from syntriever_haystack.runtime.metadata import ModelMetadata

    _, bi, _, ce = export_models(work)
    if "int8" in ModelMetadata.load(ce).files:
        return bi, ce, "int8", "cross-encoder int8"
    return bi, ce, "fp32", "cross-encoder fp32 (its int8 variant did not pass the parity gate)"


def prepare_queries(work: Path, dataset: Path) -> Path:
    """The SciFact test + train queries as one JSON list (the child cycles through them), written once."""
    queries_file = work / "serving-memory-queries.json"
    if not queries_file.exists():
        from syntriever_haystack.data import load_beir

        texts: list[str] = []
        for split in ("test", "train"):
            beir = load_beir(dataset, split)
            texts += [beir.queries[q] for q in sorted(beir.qrels)]
        queries_file.write_text(json.dumps(texts), encoding="utf-8")
    return queries_file


def prepare_store(work: Path, bi: Path, dataset: Path, precision: str) -> Path:
    """Index the corpus (no splitting: SciFact abstracts are the passages) into a saved store file, once."""
    store_file = work / f"serving-memory-store-{precision}" / "document_store.json"
    if store_file.exists():
        return store_file
    from haystack import Document

    from syntriever_haystack.data import load_beir
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.serve.memory_store import memory_document_store, save_memory_store, store_record
    from syntriever_haystack.serve.pipelines import indexing_inputs, indexing_pipeline

    beir = load_beir(dataset, "test")
    documents = [Document(id=i, content=t) for i, t in zip(beir.doc_ids, beir.doc_texts(), strict=True)]
    metadata = ModelMetadata.load(bi)
    store = memory_document_store(metadata, index="serving-memory", shared=False)
    pipeline = indexing_pipeline(store, bi, split_by=None, quantization=precision, progress_bar=True)  # type: ignore[arg-type]
    pipeline.run(indexing_inputs(pipeline, documents))
    save_memory_store(store, store_file, store_record(metadata, model_name=bi.name))
    return store_file


def run_child(config: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "HAYSTACK_TELEMETRY_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the serving process failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def render_markdown(report: dict[str, Any]) -> str:
    default = report["results"]["default"]
    stages = default["stages_mb"]
    maps = default["mappings_at_end"]
    lines = [
        "# Serving memory (issue 17): peak RSS of a torch-free query process",
        "",
        f"- pipeline: `query_pipeline` (BM25 + `SyntrieverTextEmbedder` → embedding retriever, score fusion, "
        f"`SyntrieverRanker` over the top {report['rerank']} at 256 tokens); embedder {report['precision']}, "
        f"{report['ce_note']}",
        f"- corpus: SciFact, {report['documents']} documents, loaded from the saved store file (indexing not counted)",
        f"- {default['queries']} queries (SciFact test + train, cycling) after {report['warmup']} warm-up queries; "
        f"torch / transformers / optimum / sentence-transformers imports blocked",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, Python "
        f"{report['machine']['python']}, onnxruntime {report['machine']['onnxruntime']}",
        "",
        f"**Peak RSS (VmHWM): {default['peak_rss_mb']} MB** (target <= {TARGET_MB} MB); rerank-100 p50 "
        f"{default['rerank100_p50_ms']} ms, query p50 / p95 {default['query_p50_ms']} / {default['query_p95_ms']} ms.",
        "",
        "| stage | VmRSS (MB) | VmHWM (MB) |",
        "|---|---:|---:|",
    ]
    labels = {
        "start": "interpreter",
        "imports": "after imports (haystack, pipelines, store)",
        "index_load": "after index load (store file + BM25 index)",
        "model_load": "after model load (2 ONNX sessions + tokenizers)",
        "warm": f"after {report['warmup']} warm-up queries",
        "end": f"after {default['queries']} queries",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {stages[key]['VmRSS']} | {stages[key]['VmHWM']} |")
    lines += [
        "",
        f"At the end: {maps['anonymous_mb']} MB anonymous (Python objects, ONNX Runtime weights and buffers), "
        f"{maps['files_mb']} MB file-backed (shared libraries); largest: "
        + ", ".join(f"{k} {v}" for k, v in maps["largest_files_mb"].items())
        + f". Sessions created: {len(default['sessions'])} ({', '.join(default['sessions'])}).",
        "",
    ]
    if len(report["results"]) > 1:
        lines += [
            "| variant | queries | peak RSS (MB) | RSS at end (MB) | rerank-100 p50 (ms) | query p50 (ms) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in report["results"].items():
            lines.append(
                f"| {name} | {r['queries']} | {r['peak_rss_mb']} | {r['stages_mb']['end']['VmRSS']} "
                f"| {r['rerank100_p50_ms']} | {r['query_p50_ms']} |"
            )
        lines.append("")
    return "\n".join(lines)


def measure(*, dataset: Path, work: Path, queries: int = 1000, warmup: int = 10, rerank: int = 100) -> dict[str, Any]:
    """The default configuration's serving process (for ``serving_benchmark.py``): peak RSS, import time,
    rerank-100 and query latency over ``queries`` queries after ``warmup``."""
    bi, ce, ce_precision, _ = prepare_models(work)
    config = {
        "bi": str(bi),
        "ce": str(ce),
        "store": str(prepare_store(work, bi, dataset, "int8")),
        "queries": str(prepare_queries(work, dataset)),
        "n": queries,
        "warmup": warmup,
        "rerank": rerank,
        "precision": "int8",
        "ce_precision": ce_precision,
    }
    return {"queries": queries, "ce_precision": ce_precision, **run_child(config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "scifact"))
    parser.add_argument("--work-dir", default=str(ROOT / ".cache" / "bench"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--variant-queries", type=int, default=20, help="queries of each --variants run")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rerank", type=int, default=100, help="candidates reranked (BM25 and dense top-k too)")
    parser.add_argument("--precision", default="int8", choices=("fp32", "int8"))
    parser.add_argument("--variants", default="", help=f"comma-separated names, or 'all': {', '.join(VARIANTS)}")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the results files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    dataset = Path(args.dataset)
    if not (dataset / "corpus.jsonl").exists():
        raise SystemExit(f"SciFact not found at {dataset}: pass --dataset PATH to the BEIR folder.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"
    work, out = Path(args.work_dir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)

    bi, ce, ce_precision, ce_note = prepare_models(work)
    store_file = prepare_store(work, bi, dataset, args.precision)
    queries_file = prepare_queries(work, dataset)
    documents = sum(1 for line in (dataset / "corpus.jsonl").open(encoding="utf-8") if line.strip())

    names = list(VARIANTS) if args.variants == "all" else [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    base = {
        "bi": str(bi),
        "ce": str(ce),
        "store": str(store_file),
        "queries": str(queries_file),
        "n": args.queries,
        "warmup": args.warmup,
        "rerank": args.rerank,
        "precision": args.precision,
        "ce_precision": ce_precision,
    }
    results: dict[str, Any] = {}
    for name in ["default", *[n for n in names if n != "default"]]:
        print(f"[serving_memory] {name} ...", flush=True)
        n = args.queries if name == "default" else args.variant_queries
        results[name] = run_child({**base, **VARIANTS[name], "n": n})
        r = results[name]
        print(
            f"[serving_memory] {name}: peak {r['peak_rss_mb']} MB, rerank p50 {r['rerank100_p50_ms']} ms, "
            f"stages {json.dumps({k: v['VmRSS'] for k, v in r['stages_mb'].items()})}",
            flush=True,
        )

    import onnxruntime

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
        },
        "dataset": str(dataset),
        "documents": documents,
        "rerank": args.rerank,
        "warmup": args.warmup,
        "precision": args.precision,
        "ce_precision": ce_precision,
        "ce_note": ce_note,
        "target_peak_rss_mb": TARGET_MB,
        "results": results,
        "variants": {name: VARIANTS[name] for name in results},
    }
    md = render_markdown(report)
    if not args.no_write:
        out.mkdir(parents=True, exist_ok=True)
        (out / "serving_memory.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (out / "serving_memory.md").write_text(md, encoding="utf-8")
    print("\n" + md)


if __name__ == "__main__":
    main()
