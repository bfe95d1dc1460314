from __future__ import annotations

import logging
import operator
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.document_stores.types import FilterPolicy, apply_filter_policy
from haystack.utils.filters import document_matches_filter

from syntriever_haystack.runtime.bm25 import BM25Index, BM25Params, corpus_fingerprint, indexable, tokenize
from syntriever_haystack.runtime.locations import resolve_path

logger = logging.getLogger(__name__)


@component
class SyntrieverBM25Retriever:
    """
    BM25 over an ``InMemoryDocumentStore`` with the exact scoring of syntriever-haystack's evaluation (``bm25``).

    ``bm25s`` with Lucene's formula (``k1=1.2``, ``b=0.75``), English stop words and PyStemmer's English stemmer
    (see ``syntriever_haystack.runtime.bm25``): for the same documents and query it returns the documents, order
    and scores of the evaluation's ``bm25`` system, so a report's BM25 and hybrid numbers are what this serves.
    A drop-in for Haystack's ``InMemoryBM25Retriever`` (same ``top_k`` semantics; documents scoring 0 are left
    out).

    The index is built from the store's documents with text content on the first run (or ``warm_up``) and rebuilt
    when the store's documents change. With ``index_path`` (by default the ``bm25_index_path`` of a
    ``SyntrieverInMemoryDocumentStore``: ``document_store.bm25/`` next to its file), a saved index is loaded
    instead when it was built from exactly the store's documents (a fingerprint of ids and contents) and these
    parameters.

    Metadata ``filters`` are applied to the ranked documents: every document is scored against the whole corpus
    (so scores do not depend on the filter), then the best ``top_k`` documents that match the filter are returned.
    That is exact (no matching document is lost to a cut-off), unlike re-indexing only the matching documents,
    whose scores would change with the filter.

    ### Usage example

    ```python
    from haystack import Document
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack_integrations.components.retrievers.syntriever import SyntrieverBM25Retriever

    store = InMemoryDocumentStore()
    store.write_documents([Document(content="Iron deficiency causes anaemia."), Document(content="Paris")])
    retriever = SyntrieverBM25Retriever(document_store=store, top_k=5)
    print(retriever.run(query="what causes anemia? iron")["documents"][0].content)
    # Iron deficiency causes anaemia.
    ```
    """

    def __init__(
        self,
        *,
        document_store: InMemoryDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        filter_policy: FilterPolicy | str = FilterPolicy.REPLACE,
        k1: float = 1.2,
        b: float = 0.75,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        index_path: str | Path | None = None,
    ) -> None:
        """
        Create the retriever. Nothing is indexed until :meth:`warm_up` (or the first :meth:`run`).

        :param document_store: An ``InMemoryDocumentStore`` (or ``SyntrieverInMemoryDocumentStore``).
        :param filters: Metadata filters applied on every run (see ``filter_policy``).
        :param top_k: Maximum number of documents to return.
        :param filter_policy: ``replace`` (run-time filters replace these) or ``merge`` (both apply).
        :param k1: BM25 term-frequency saturation.
        :param b: BM25 length normalisation.
        :param method: ``bm25s`` scoring variant (``lucene``, like the evaluation and Lucene / OpenSearch).
        :param stemmer: PyStemmer algorithm, or ``None`` for no stemming.
        :param stopwords: ``bm25s`` stop-word list (``en``), or ``None``.
        :param index_path: Folder of a saved BM25 index (``None``: the store's ``bm25_index_path``, if any). A
            relative path resolves like the models' (``syntriever_haystack.runtime.locations``).
        :raises TypeError: ``document_store`` is not an ``InMemoryDocumentStore``.
        :raises ValueError: ``top_k`` is not > 0.
        """
        if not isinstance(document_store, InMemoryDocumentStore):
            raise TypeError("document_store must be an instance of InMemoryDocumentStore")
        if top_k <= 0:
            raise ValueError(f"top_k must be greater than 0, but got {top_k}")
        self.document_store = document_store
        self.filters = filters
        self.top_k = top_k
        self.filter_policy = (
            filter_policy if isinstance(filter_policy, FilterPolicy) else FilterPolicy.from_str(filter_policy)
        )
        self.k1 = k1
        self.b = b
        self.method = method
        self.stemmer = stemmer
        self.stopwords = stopwords
        self.index_path = None if index_path is None else str(index_path)
        self._index_path = resolve_path(index_path) if index_path is not None else None
        self._params = BM25Params(k1=float(k1), b=float(b), method=method, stemmer=stemmer, stopwords=stopwords)
        self._lock = threading.Lock()
        self._index: BM25Index | None = None
        self._snapshot: list[Document] = []  # the store's documents the index was built for, in storage order
        self._documents: list[Document] = []  # the indexed ones (with text), by index position
        self._storage: Any = None

    def _saved_index_dir(self) -> Path | None:
        if self._index_path is not None:
            return self._index_path
        path = getattr(self.document_store, "bm25_index_path", None)
        return Path(path) if path is not None else None

    def _current(self) -> bool:
        storage = self.document_store.storage
        return (
            self._index is not None
            and storage is self._storage
            and len(storage) == len(self._snapshot)
            and all(map(operator.is_, storage.values(), self._snapshot))
        )

    def warm_up(self) -> None:
        """Build (or load) the index of the store's documents. Idempotent while the documents are unchanged."""
        with self._lock:
            if self._current():
                return
            storage = self.document_store.storage
            snapshot = list(storage.values())
            positions, ids, texts = indexable(snapshot)
            fingerprint = corpus_fingerprint(ids, texts, self._params)
            folder = self._saved_index_dir()
            index = BM25Index.load(folder, fingerprint=fingerprint, params=self._params) if folder else None
            if index is None:
                if folder is not None and folder.exists():
                    logger.info("the BM25 index in %s does not match the store's documents: rebuilding it", folder)
                index = BM25Index.build(texts, self._params)
            self._index, self._storage, self._snapshot = index, storage, snapshot
            self._documents = [snapshot[p] for p in positions]

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component to a dictionary (the document store included, like Haystack's retrievers)."""
        return default_to_dict(
            self,
            document_store=self.document_store,
            filters=self.filters,
            top_k=self.top_k,
            filter_policy=self.filter_policy.value,
            k1=self.k1,
            b=self.b,
            method=self.method,
            stemmer=self.stemmer,
            stopwords=self.stopwords,
            index_path=self.index_path,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntrieverBM25Retriever:
        """Deserialize this component (and its document store) from a dictionary."""
        init_params = data.get("init_parameters", {})
        if "filter_policy" in init_params:
            init_params["filter_policy"] = FilterPolicy.from_str(init_params["filter_policy"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None) -> dict[str, Any]:
        """
        Retrieve the documents that best match ``query`` by BM25.

        :param query: The query text.
        :param filters: Metadata filters (combined with the init filters by ``filter_policy``).
        :param top_k: Maximum number of documents to return (``None``: the init value; 0 returns none).
        :returns: A dictionary with ``documents``: new Documents with their BM25 ``score``, best first.
        :raises ValueError: ``query`` is empty, ``top_k`` is negative, or ``filters`` are malformed.
        """
        if not query:
            raise ValueError("Query should be a non-empty string")
        top_k = self.top_k if top_k is None else top_k
        if top_k < 0:
            raise ValueError(f"top_k must be greater than or equal to 0, but got {top_k}")
        filters = apply_filter_policy(self.filter_policy, self.filters, filters)
        if filters and "operator" not in filters:
            raise ValueError(
                "Invalid filter syntax. See https://docs.haystack.deepset.ai/docs/metadata-filtering for details."
            )
        if top_k == 0:
            return {"documents": []}
        self.warm_up()
        with self._lock:
            index, documents = self._index, self._documents
        assert index is not None
        tokens = tokenize([query], index.params)[0]
        positions, scores = index.ranking(tokens, None if filters else top_k)
        strict = bool(getattr(self.document_store, "strict_datetime_comparison", False))
        keep_embedding = bool(getattr(self.document_store, "return_embedding", True))
        embedding_of = getattr(self.document_store, "embedding_of", None)  # vectors a store keeps beside Documents
        found: list[Document] = []
        for position, score in zip(positions.tolist(), scores.tolist(), strict=True):
            document = documents[position]
            if filters and not document_matches_filter(
                filters=filters, document=document, strict_datetime_comparison=strict
            ):
                continue
            embedding = None
            if keep_embedding:
                embedding = embedding_of(document) if embedding_of is not None else document.embedding
            found.append(replace(document, score=float(score), embedding=embedding))
            if len(found) == top_k:
                break
        return {"documents": found}
