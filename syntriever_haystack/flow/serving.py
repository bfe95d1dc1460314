"""The served search of a run: its document store, the indexing and query pipelines, and the sample query.

Pipelines, stores and queries come from :mod:`syntriever_haystack.serve.pipelines`,
:mod:`syntriever_haystack.serve.memory_store` and :mod:`syntriever_haystack.opensearch.store` (what ``syntriever
index`` / ``search`` use); this module wires them to the recipe.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from syntriever_haystack.flow.context import FlowContext, FlowError
from syntriever_haystack.flow.recipe import ServeSection
from syntriever_haystack.specs import DEFAULT_FUSION, Fusion, Precision


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
    fusion: Fusion = DEFAULT_FUSION,
    rerank_first_stage_weight: float = 0.0,
) -> dict[str, Any]:
    """``indexing`` (whole documents, no splitting: what the evaluation scores), ``query`` (hybrid: BM25 + dense,
    fused by ``fusion``) and, with a ranker, ``query-rerank`` (the fused top ``rerank_depth`` reranked).

    :param query_store: The query pipelines' store (default: ``store``, the indexing pipeline's).
    :param fusion: ``dbsf`` or ``rrf`` (``serve.fusion``).
    :param rerank_first_stage_weight: The ranker's weight of the first stage's scores
        (``serve.rerank_first_stage_weight``).
    """
    from syntriever_haystack.serve.pipelines import indexing_pipeline, query_pipeline

    # the retrievers keep query_pipeline's default depth, HYBRID_CANDIDATES: what the evaluation's hybrids fuse
    shared: dict[str, Any] = {"quantization": precision, "fusion": fusion}

    built = {
        "indexing": indexing_pipeline(
            store,
            embedder,
            split_by=None,
            quantization=precision,
            progress_bar=True,
        ),
        "query": query_pipeline(query_store or store, embedder, top_k=top_k, **shared),
    }
    if ranker is not None:
        built["query-rerank"] = query_pipeline(
            query_store or store,
            embedder,
            ranker,
            ranker_quantization=ranker_precision,
            top_k=top_k,
            candidates=rerank_depth,
            ranker_first_stage_weight=rerank_first_stage_weight,
            **shared,
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
    """The saved query pipeline that is served (and answers the sample query), and why: ``serve.reranker``, and with
    ``auto`` the ship gate's label-free decision (never the evaluation's judgments)."""
    layout = ctx.layout
    mode = ctx.recipe.serve.reranker
    if not layout.query_rerank_yaml.is_file():
        return layout.query_yaml, "hybrid retrieval (no reranker in this run)"
    if mode != "auto":
        reranked = mode == "always"
        path = layout.query_rerank_yaml if reranked else layout.query_yaml
        return path, f"hybrid retrieval{' + reranker' if reranked else ''} (serve.reranker: {mode})"
    check = next((c for c in (ctx.results.get("gate") or {}).get("checks", []) if c["component"] == "reranker"), None)
    if ctx.serves_reranker():
        why = "" if check is None else f": the gate saw {check['delta']:+.4f} on held-out synthetic queries"
        return layout.query_rerank_yaml, f"hybrid retrieval + reranker{why}"
    why = "" if check is None else f" ({check['delta']:+.4f} on held-out synthetic queries)"
    return layout.query_yaml, f"hybrid retrieval without the reranker: it did not pass the gate{why}"


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
    if not ctx.recipe.sample_query and not dataset.queries:  # no evaluation split: a held-out synthetic query
        from syntriever_haystack.flow.steps.synthetic import read_gate_queries

        held_out = read_gate_queries(ctx)
        if held_out:
            dataset = dataclasses.replace(dataset, queries={held_out[0].query_id: held_out[0].query}, qrels={})
    if not ctx.recipe.sample_query and not dataset.queries:
        return {"query": None, "pipeline": ctx.relative(path), "reason": reason, "documents": []}
    query = ctx.recipe.sample_query or dataset.queries[ctx.sample(sorted(dataset.queries), 1)[0]]
    query_id = next((q for q, text in dataset.queries.items() if text == query), None)
    relevant = dataset.relevant(query_id) if query_id and dataset.qrels else set()
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
                "relevant": (doc_id in relevant) if query_id and dataset.qrels else None,
            }
        )
    return {
        "query": query,
        "query_id": query_id,
        "pipeline": ctx.relative(path),
        "reason": reason,
        "documents": answers,
    }
