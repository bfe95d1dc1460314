"""The BM25 first stage: ``bm25s`` (default, fast, with stemming and stop words) or Haystack's in-memory BM25."""

from __future__ import annotations

from syntriever_haystack.errors import SyntrieverError
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
    try:
        import bm25s
    except ImportError as exc:
        raise SyntrieverError(
            f"bm25 needs the eval extra ({exc.name} is missing): pip install 'syntriever-haystack[eval]'"
        ) from None
    stemmer_name = options.get("stemmer", "english")
    stemmer = None
    if stemmer_name != "none":
        try:
            import Stemmer
        except ImportError:
            raise SyntrieverError(
                "bm25 stems English words with PyStemmer, which is not installed: "
                "pip install 'syntriever-haystack[eval]' (or use bm25?stemmer=none)"
            ) from None
        stemmer = Stemmer.Stemmer(stemmer_name)
    stopwords = options.get("stopwords", "en")
    stop: str | None = None if stopwords == "none" else stopwords
    retriever = bm25s.BM25(
        method=options.get("method", "lucene"), k1=float(options.get("k1", 1.2)), b=float(options.get("b", 0.75))
    )
    corpus_tokens = bm25s.tokenize(texts.doc_texts, stopwords=stop, stemmer=stemmer, show_progress=False)
    retriever.index(corpus_tokens, show_progress=False)
    query_tokens = bm25s.tokenize(texts.query_texts, stopwords=stop, stemmer=stemmer, show_progress=False)
    k = min(depth, len(texts.doc_ids))
    run: Run = {}
    # bm25s returns empty token lists for queries made only of stop words; score those as "no results".
    results, scores = retriever.retrieve(query_tokens, k=k, show_progress=False, n_threads=0)
    for row, query_id in enumerate(texts.query_ids):
        run[query_id] = {texts.doc_ids[j]: float(s) for j, s in zip(results[row], scores[row], strict=True) if s > 0}
    return run


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
