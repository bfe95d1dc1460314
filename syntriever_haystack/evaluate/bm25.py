"""The BM25 first stage: the served BM25 (default: ``bm25s``, Lucene formula, English stemming and stop words; see
:mod:`syntriever_haystack.runtime.bm25`) or Haystack's in-memory BM25 (``backend=haystack``)."""

from __future__ import annotations

from syntriever_haystack.evaluate.metrics import Run
from syntriever_haystack.evaluate.texts import SplitTexts, progress
from syntriever_haystack.specs import StageSpec, SystemSpecError

__all__ = ["bm25_run"]


def bm25_run(stage: StageSpec, texts: SplitTexts, depth: int, *, show_progress: bool = True) -> Run:
    """The top-``depth`` documents of every query by BM25 (documents scoring 0 are left out)."""
    backend = stage.options.get("backend", "bm25s")
    if backend == "haystack":
        return _haystack_run(texts, depth, show_progress=show_progress)
    if backend != "bm25s":
        raise SystemSpecError(f"unknown bm25 backend {backend!r}; use bm25s or haystack")
    return _bm25s_run(stage.options, texts, depth)


def _bm25s_run(options: dict[str, str], texts: SplitTexts, depth: int) -> Run:
    """The served BM25 (:mod:`syntriever_haystack.runtime.bm25`, what ``SyntrieverBM25Retriever`` runs)."""
    from syntriever_haystack.runtime.bm25 import BM25Index, BM25Params

    index = BM25Index.build(texts.doc_texts, BM25Params.from_options(options))
    # a query made only of stop words has no token: it finds nothing and still counts (as 0)
    hits = index.search(texts.query_texts, depth)
    return {
        query_id: {texts.doc_ids[position]: score for position, score in found}
        for query_id, found in zip(texts.query_ids, hits, strict=True)
    }


def _haystack_run(texts: SplitTexts, depth: int, *, show_progress: bool) -> Run:
    from haystack import Document
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    store = InMemoryDocumentStore(bm25_algorithm="BM25Okapi")
    store.write_documents([Document(id=i, content=t) for i, t in zip(texts.doc_ids, texts.doc_texts, strict=True)])
    retriever = InMemoryBM25Retriever(document_store=store, top_k=depth)
    run: Run = {}
    for query_id, text in progress(texts.queries(), "BM25", enabled=show_progress):
        docs = retriever.run(query=text)["documents"]
        run[query_id] = {d.id: float(d.score) for d in docs if d.score is not None and d.score > 0}
    return run
