"""The served search of a run: its document store, the indexing and query pipelines, and the sample query.

Pipelines, stores and queries come from :mod:`syntriever_haystack.serve.pipelines`,
:mod:`syntriever_haystack.serve.memory_store` and :mod:`syntriever_haystack.opensearch.store` (what ``syntriever
index`` / ``search`` use); this module wires them to the recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from syntriever_haystack.flow.context import FlowContext, FlowError
from syntriever_haystack.flow.recipe import ServeSection
from syntriever_haystack.specs import Precision


def document_store(
    serve: ServeSection,
    model: Path,
    *,
    store_file: Path | None = None,
    missing: Literal["error", "empty"] = "error",
) -> Any:
    """The store of ``serve`` laid out for the exported bi-encoder ``model``: a shared in-memory index
    (``serve.index``) or an OpenSearch index (created now if absent, checked against the model if present).

    :param store_file: In memory: a ``SyntrieverInMemoryDocumentStore`` over this store file (not read now; a
        pipeline loaded from YAML reads it), so the saved pipelines answer in any process.
    :param missing: With ``store_file``: ``"error"`` (query pipelines) or ``"empty"`` (the indexing pipeline).
    """
    from syntriever_haystack.runtime.metadata import ModelMetadata

    metadata = ModelMetadata.load(model)
    if serve.store == "memory":
        from syntriever_haystack.serve.memory_store import file_document_store, memory_document_store

        if store_file is not None:
            return file_document_store(metadata, store_file, index=serve.index, missing=missing, load=False)
        return memory_document_store(metadata, index=serve.index)
    from syntriever_haystack.opensearch.connection import OpenSearchConnection
    from syntriever_haystack.opensearch.store import opensearch_document_store

    return opensearch_document_store(OpenSearchConnection(url=str(serve.url)), serve.index, metadata)


def build_pipelines(
    store: Any,
    *,
    embedder: Path,
    ranker: Path | None,
    precision: Precision,
    ranker_precision: Precision,
    top_k: int,
    rerank_depth: int,
    query_store: Any = None,
) -> dict[str, Any]:
    """``indexing`` (whole documents, no splitting: what the evaluation scores), ``query`` (hybrid: BM25 + dense,
    reciprocal rank fusion) and, with a ranker, ``query-rerank`` (the fused top ``rerank_depth`` reranked).

    :param query_store: The query pipelines' store (default: ``store``, the indexing pipeline's).
    """
    from syntriever_haystack.serve.pipelines import indexing_pipeline, query_pipeline

    built = {
        "indexing": indexing_pipeline(
            store,
            embedder,
            split_by=None,
            quantization=precision,
            progress_bar=True,
        ),
        "query": query_pipeline(query_store or store, embedder, quantization=precision, top_k=top_k),
    }
    if ranker is not None:
        built["query-rerank"] = query_pipeline(
            query_store or store,
            embedder,
            ranker,
            quantization=precision,
            ranker_quantization=ranker_precision,
            top_k=top_k,
            candidates=rerank_depth,
        )
    return built


def store_of(pipeline: Any) -> Any:
    """The document store the pipeline's retriever or writer uses."""
    for _, component in pipeline.walk():
        store = getattr(component, "document_store", None)
        if store is not None:
            return store
    raise FlowError("the pipeline has no component with a document store")


def clear_store(store: Any) -> None:
    """Delete every document (a re-index starts from an empty index)."""
    if not store.count_documents():
        return
    delete_all = getattr(store, "delete_all_documents", None)
    if delete_all is not None:
        delete_all()
    else:  # pragma: no cover - stores without delete_all_documents
        store.delete_documents([d.id for d in store.filter_documents()])


def choose_query_pipeline(ctx: FlowContext) -> tuple[Path, str]:
    """The saved query pipeline that answers the sample query, and why."""
    layout = ctx.layout
    mode = ctx.recipe.serve.reranker
    has_ranker = layout.query_rerank_yaml.is_file()
    if mode == "never" or not has_ranker:
        return layout.query_yaml, "hybrid retrieval" + ("" if has_ranker else " (no reranker in this run)")
    if mode == "always":
        return layout.query_rerank_yaml, "hybrid retrieval + reranker (serve.reranker: always)"
    evaluation = ctx.results.get("evaluate") or {}
    rows = {r["system"]: r for r in evaluation.get("rows", [])}
    metric = (evaluation.get("metrics") or ["nDCG@10"])[0]
    for first in ("hybrid", "trained"):
        alone, reranked = rows.get(first), rows.get(f"{first}+rerank")
        if alone is None or reranked is None:
            continue
        a, b = alone["means"][metric], reranked["means"][metric]
        if b > a:
            return layout.query_rerank_yaml, (
                f"hybrid retrieval + reranker: in the evaluation the reranker improved {first} ({metric} {a:.4f} → "
                f"{b:.4f})"
            )
        return layout.query_yaml, (
            f"hybrid retrieval without the reranker: in the evaluation the reranker did not improve {first} "
            f"({metric} {a:.4f} → {b:.4f})"
        )
    return layout.query_yaml, "hybrid retrieval (serve.reranker: auto, and no reranked system was evaluated)"


def answer_sample_query(ctx: FlowContext) -> dict[str, Any]:
    """Run the sample query through the saved query pipeline; mark the documents judged relevant."""
    from syntriever_haystack.serve.pipelines import load_pipeline, run_query

    path, reason = choose_query_pipeline(ctx)
    if not path.is_file():
        raise FlowError(f"{path} is missing; rerun the pipelines step (--force-step pipelines)")
    pipeline = load_pipeline(path)
    if ctx.recipe.serve.store == "memory" and store_of(pipeline).count_documents() == 0:
        from syntriever_haystack.serve.memory_store import load_memory_store

        load_memory_store(ctx.layout.document_store)  # fills the shared in-memory index the pipeline reads
    dataset = ctx.eval_dataset()
    query = ctx.recipe.sample_query or dataset.queries[ctx.sample(sorted(dataset.queries), 1)[0]]
    query_id = next((q for q, text in dataset.queries.items() if text == query), None)
    relevant = dataset.relevant(query_id) if query_id else set()
    answers = []
    for document in run_query(pipeline, query):
        text = " ".join(str(document.content or "").split())
        title = str((document.meta or {}).get("title") or "")
        if title and text.startswith(title):
            text = text[len(title) :].strip()
        doc_id = str((document.meta or {}).get("source_id") or document.id)
        answers.append(
            {
                "id": doc_id,
                "score": None if document.score is None else round(float(document.score), 4),
                "title": title,
                "text": text[:240] + ("…" if len(text) > 240 else ""),
                "relevant": (doc_id in relevant) if query_id else None,
            }
        )
    return {
        "query": query,
        "query_id": query_id,
        "pipeline": ctx.relative(path),
        "reason": reason,
        "documents": answers,
    }
