"""The served search: ``pipelines`` (indexing + query pipelines saved as YAML), ``index`` (the corpus through the
indexing pipeline) and ``answer`` (the sample query through the saved query pipeline).

The wiring to the recipe (stores, pipelines, the choice of query pipeline) is :mod:`syntriever_haystack.flow.serving`.
"""

from __future__ import annotations

from typing import Any

from syntriever_haystack.flow.context import FlowContext, write_json
from syntriever_haystack.flow.step import Step, as_dict


def run_pipelines(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Build the indexing and query pipelines over the recipe's document store and save them as YAML."""
    from syntriever_haystack.flow.serving import build_pipelines, document_store
    from syntriever_haystack.serve.pipelines import save_pipeline

    layout = ctx.layout
    reranker = layout.reranker_onnx if ctx.recipe.train.reranker.enabled else None
    # in memory: stores over the run's store file (data/document_store.json, written by the index step), which
    # the saved pipelines load themselves; the YAML holds paths relative to pipelines/, so the run folder can move
    # the dense model that passed the gate (the trained retriever, or the base model it did not beat)
    model, precision = ctx.served_retriever()
    serve, store_file = ctx.recipe.serve, layout.document_store.absolute()
    store = document_store(serve, model, store_file=store_file, missing="empty")
    query_store = document_store(serve, model, store_file=store_file) if serve.store == "memory" else store
    built = build_pipelines(
        store,
        query_store=query_store,
        embedder=model.resolve(),
        ranker=reranker.resolve() if reranker else None,
        precision=precision,
        ranker_precision=ctx.precision("export-reranker"),
        top_k=ctx.recipe.serve.top_k,
        rerank_depth=ctx.recipe.evaluate.rerank_depth,
        fusion=ctx.recipe.serve.fusion,
        rerank_first_stage_weight=ctx.recipe.serve.rerank_first_stage_weight,
    )
    paths = {"indexing": layout.indexing_yaml, "query": layout.query_yaml, "query-rerank": layout.query_rerank_yaml}
    result: dict[str, Any] = {
        "store": ctx.recipe.serve.store,
        "index": ctx.recipe.serve.index,
        "dense_model": ctx.relative(model),
        "reranked": ctx.serves_reranker(),
    }
    for name, pipeline in built.items():
        result[name] = ctx.relative(save_pipeline(pipeline, paths[name]))
    return result


PIPELINES = Step(
    "pipelines",
    "build and save the indexing and query pipelines (YAML)",
    run_pipelines,
    config=lambda r: {
        "serve": {k: v for k, v in as_dict(r.serve).items() if k not in ("index_corpus", "reranker")},
        "precision": r.export.precision,
        "rerank_depth": r.evaluate.rerank_depth,
        "reranker": r.train.reranker.enabled,
    },
    outputs=lambda lay: [lay.indexing_yaml, lay.query_yaml],
    deps=("export-retriever", "export-reranker", "gate"),
    clean=lambda lay: [lay.pipelines],
)


def run_index(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Run the saved indexing pipeline over the corpus (the evaluation sample or the full corpus)."""
    import numpy as np
    from haystack import Document

    from syntriever_haystack.flow.evaluation import cached_corpus_embeddings, embeds_like_evaluation, onnx_fingerprint
    from syntriever_haystack.flow.serving import clear_store, store_of
    from syntriever_haystack.serve.indexing import index_documents
    from syntriever_haystack.serve.pipelines import load_pipeline

    layout = ctx.layout
    pipeline = load_pipeline(layout.indexing_yaml)
    store = store_of(pipeline)
    sampled = ctx.recipe.serve.index_corpus == "evaluation"
    dataset = ctx.eval_dataset() if sampled or ctx.eval_split() is None else ctx.full_eval_dataset()
    documents = [
        Document(id=d, content=ctx.passage_text(p), meta={"title": p.title}) for d, p in dataset.corpus.items()
    ]
    clear_store(store)
    components = dict(pipeline.walk())
    embedder = "embedder" if "embedder" in components else None
    if embedder:  # one progress bar for the whole corpus (index_documents'), not one per batch
        setattr(pipeline.get_component(embedder), "progress_bar", False)  # noqa: B010 - a Component protocol
    # the gate / an evaluation embedded this corpus with the served model and the same text rule: write those vectors
    # (through the pipeline's writer) instead of embedding the corpus again
    cached = None
    if embedder and "splitter" not in components and "writer" in components:
        texts = [str(d.content) for d in documents]
        cached = cached_corpus_embeddings(ctx, pipeline.get_component(embedder), dataset, texts)
    indexed = index_documents(
        pipeline, documents, progress=ctx.progress, keep_embedded=embedder is not None, embeddings=cached
    )
    result: dict[str, Any] = {
        "documents": store.count_documents(),
        "corpus": "evaluation" if sampled else "full",
        "corpus_documents": len(dataset.corpus),
        "store": ctx.recipe.serve.store,
        "reused_cached_embeddings": indexed.reused,
    }
    embedded = indexed.embedded
    served, precision = ctx.served_retriever()
    if embedder and embedded and embeds_like_evaluation(pipeline.get_component(embedder), served, precision):
        by_id = {d.id: d.embedding for d in embedded if d.embedding is not None}
        if set(by_id) == set(dataset.corpus):  # whole documents (no splitting): the evaluation can reuse them
            layout.index_dir.mkdir(parents=True, exist_ok=True)
            np.save(layout.index_dir / "embeddings.npy", np.asarray([by_id[d] for d in dataset.corpus], np.float32))
            result.update(
                embeddings=ctx.relative(layout.index_dir / "embeddings.npy"),
                corpus_fingerprint=dataset.fingerprint(),
                model_fingerprint=onnx_fingerprint(served, precision),
                precision=precision,
            )
    if ctx.recipe.serve.store == "memory":
        from syntriever_haystack.runtime.bm25 import bm25_index_dir
        from syntriever_haystack.runtime.metadata import ModelMetadata
        from syntriever_haystack.serve.memory_store import save_memory_store, store_record

        record = store_record(ModelMetadata.load(served), model_name=str(served.resolve()))
        result["saved_store"] = ctx.relative(save_memory_store(store, layout.document_store, record))
        result["bm25_index"] = ctx.relative(bm25_index_dir(layout.document_store))  # saved with the store
    write_json(layout.index_dir / "index.json", result)
    reused = " with the embeddings cached by the gate / evaluation" if indexed.reused else ""
    ctx.echo(
        f"        indexed {result['documents']:,} documents ({result['corpus']} corpus) into {result['store']}{reused}"
    )
    return result


def _store_files(layout: Any) -> list[Any]:
    from syntriever_haystack.runtime.bm25 import bm25_index_dir

    return [layout.document_store, bm25_index_dir(layout.document_store)]


INDEX = Step(
    "index",
    "index the corpus with the indexing pipeline",
    run_index,
    config=lambda r: {
        "store": r.serve.store,
        "index_corpus": r.serve.index_corpus,
        "corpus_sample": r.evaluate.corpus_sample if r.serve.index_corpus == "evaluation" else None,
        "max_queries": r.evaluate.max_queries if r.serve.index_corpus == "evaluation" else None,
        "seed": r.seed,
        "include_title": r.dataset.include_title,
    },
    outputs=lambda lay: [lay.index_dir / "index.json"],
    deps=("data", "pipelines"),
    clean=lambda lay: [lay.index_dir, *_store_files(lay)],
)


def run_answer(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Answer the sample query with the saved query pipeline (reranked when the recipe / evaluation says so)."""
    from syntriever_haystack.flow.serving import answer_sample_query

    return answer_sample_query(ctx)


ANSWER = Step(
    "answer",
    "answer the sample query with the saved query pipeline",
    run_answer,
    config=lambda r: {"sample_query": r.sample_query, "reranker": r.serve.reranker},
    outputs=lambda lay: [],
    deps=("pipelines", "index", "evaluate"),
)
