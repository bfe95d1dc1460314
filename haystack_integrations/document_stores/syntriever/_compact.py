"""The in-memory storage of ``SyntrieverInMemoryDocumentStore``, compact for a serving process (issue 17).

:class:`CompactInMemoryDocumentStore` is Haystack's ``InMemoryDocumentStore`` that can hold loaded Documents with
``embedding=None`` and their vectors in one matrix beside them (``DetachedVectors``), and count Haystack's BM25
statistics of the loaded Documents only when something first reads them. Every public method answers as Haystack's
store of the same Documents would: the embeddings are given back wherever Haystack shows one.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from haystack import Document
from haystack.core.serialization import generate_qualified_class_name
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.document_stores.in_memory.document_store import BM25DocumentStats
from haystack.document_stores.types import DuplicatePolicy
from haystack.utils.filters import document_matches_filter

from haystack_integrations.document_stores.syntriever._vectors import DetachedVectors

logger = logging.getLogger(__name__)

# Per shared index (process-global, as Haystack's storages): the vectors kept beside the loaded Documents, and
# whether Haystack's BM25 statistics of the loaded Documents are still to be counted. Non-shared stores keep theirs.
_SHARED_STATE: dict[str, dict[str, Any]] = {"vectors": {}, "bm25_pending": {}}
_BM25_LOCK = threading.RLock()
_BARE = threading.local()


class CompactInMemoryDocumentStore(InMemoryDocumentStore):
    """``InMemoryDocumentStore`` whose loaded Documents may keep their vectors beside them (see the module doc).

    Subclasses fill it with :meth:`_load`; ``detach_vectors`` says whether they kept the vectors beside the
    Documents (``True``) or in them (``False``: a plain store may share the index, so the statistics are counted at
    once).
    """

    detach_vectors: bool = True

    # ------------------------------------------------------------------ loading: vectors and BM25 statistics
    def _load(self, documents: list[Document], vectors: DetachedVectors | None) -> None:
        """Put the file's Documents in the storage (the last of an id wins, as an overwrite), their vectors beside
        them, and leave Haystack's BM25 statistics to be counted when first needed."""
        storage = self.storage
        for document in documents:
            storage.pop(document.id, None)  # an overwrite moves the id to the end, as in Haystack's store
            storage[document.id] = document
        self._set_state("vectors", vectors)
        self._set_state("bm25_pending", True)
        if not self.detach_vectors:  # a plain store may share the index: it reads the statistics directly
            self._count_bm25()

    def _state(self, name: str) -> Any:
        """This store's ``name`` in ``_SHARED_STATE`` (its index's, when shared; its own, else), while the storage it
        was set for is the current one (any store's ``delete_all_documents`` replaces the storage: it ends)."""
        entry = _SHARED_STATE[name].get(self.index) if self._shared else self.__dict__.get(f"_local_{name}")
        return entry[1] if entry is not None and entry[0] is self.storage else None

    def _set_state(self, name: str, value: Any) -> None:
        entry = None if value is None else (self.storage, value)
        if not self._shared:
            self.__dict__[f"_local_{name}"] = entry
        elif entry is None:
            _SHARED_STATE[name].pop(self.index, None)
        else:
            _SHARED_STATE[name][self.index] = entry

    @property
    def _vectors(self) -> DetachedVectors | None:
        vectors: DetachedVectors | None = self._state("vectors")
        return vectors

    def _count_bm25(self) -> None:
        """Haystack's BM25 statistics of the loaded Documents, counted as ``write_documents`` counts them (same
        order, same running average), the first time anything reads them. A serving process that searches with
        ``SyntrieverBM25Retriever`` (its own index) never does: SciFact, 20 MB less."""
        if not self._state("bm25_pending"):
            return
        with _BM25_LOCK:
            if not self._state("bm25_pending"):
                return
            attr = InMemoryDocumentStore._bm25_attr.fget(self)  # type: ignore[attr-defined]
            vocab: Counter = InMemoryDocumentStore._freq_vocab_for_idf.fget(self)  # type: ignore[attr-defined]
            average = InMemoryDocumentStore._avg_doc_len.fget(self)  # type: ignore[attr-defined]
            for document in self.storage.values():
                if document.content is None:
                    continue
                tokens = self._tokenize_bm25(document.content)
                attr[document.id] = BM25DocumentStats(Counter(tokens), len(tokens))
                vocab.update(set(tokens))
                average = (len(tokens) + average * (len(attr) - 1)) / len(attr)
            InMemoryDocumentStore._avg_doc_len.fset(self, average)  # type: ignore[attr-defined]
            self._set_state("bm25_pending", None)

    @property
    def _bm25_attr(self) -> dict[str, BM25DocumentStats]:
        self._count_bm25()
        attr: dict[str, BM25DocumentStats] = InMemoryDocumentStore._bm25_attr.fget(self)  # type: ignore[attr-defined]
        return attr

    @property
    def _freq_vocab_for_idf(self) -> Counter:
        self._count_bm25()
        vocab: Counter = InMemoryDocumentStore._freq_vocab_for_idf.fget(self)  # type: ignore[attr-defined]
        return vocab

    @property
    def _avg_doc_len(self) -> float:
        self._count_bm25()
        average: float = InMemoryDocumentStore._avg_doc_len.fget(self)  # type: ignore[attr-defined]
        return average

    @_avg_doc_len.setter
    def _avg_doc_len(self, value: float) -> None:
        self._count_bm25()
        InMemoryDocumentStore._avg_doc_len.fset(self, value)  # type: ignore[attr-defined]

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Haystack's ``write_documents`` (the loaded Documents' BM25 statistics are counted first)."""
        self._count_bm25()
        return super().write_documents(documents, policy)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Haystack's ``delete_documents`` (the loaded Documents' BM25 statistics are counted first)."""
        self._count_bm25()
        super().delete_documents(document_ids)

    def delete_all_documents(self) -> None:
        """Delete all documents (and the vectors kept beside them)."""
        super().delete_all_documents()
        self._set_state("vectors", None)
        self._set_state("bm25_pending", None)

    # ------------------------------------------------------------------ embeddings where Haystack shows them
    def embedding_of(self, document: Document) -> list[float] | None:
        """The embedding of a stored ``document``: its own, or the one kept beside it (a Document loaded from the
        file holds ``embedding=None`` and its vector in one matrix of the store: issue 17's serving memory)."""
        if document.embedding is not None:
            return document.embedding
        vectors = self._vectors
        return vectors.embedding(document) if vectors is not None else None

    def stored_documents(self) -> list[Document]:
        """Every stored Document with its embedding (new Document objects only where it was kept beside them)."""
        return [self._with_embedding(doc) for doc in self.storage.values()]

    def _with_embedding(self, document: Document) -> Document:
        if document.embedding is not None:
            return document
        embedding = self.embedding_of(document)
        return document if embedding is None else replace(document, embedding=embedding)

    def _matching(self, filters: dict[str, Any] | None) -> list[Document]:
        """The stored Document objects that match ``filters`` (a condition on ``embedding`` sees the kept vectors)."""
        if not filters:
            return list(self.storage.values())
        InMemoryDocumentStore._validate_filters(filters)
        view = self._with_embedding if self._vectors is not None and _names_embedding(filters) else None
        strict = self.strict_datetime_comparison
        return [
            doc
            for doc in self.storage.values()
            if document_matches_filter(
                filters=filters, document=doc if view is None else view(doc), strict_datetime_comparison=strict
            )
        ]

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """Haystack's ``filter_documents``; with ``return_embedding``, each Document has its embedding (a Document
        whose vector is kept beside it comes back as a copy holding it)."""
        if self._vectors is None:
            return super().filter_documents(filters)
        documents = self._matching(filters)
        if getattr(_BARE, "active", False):
            return documents
        if not self.return_embedding:
            return [replace(doc, embedding=None) for doc in documents]
        return [self._with_embedding(doc) for doc in documents]

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        """Haystack's ``count_documents_by_filter`` (a condition on ``embedding`` sees the kept vectors)."""
        if self._vectors is None or not _names_embedding(filters):
            return super().count_documents_by_filter(filters)
        return len(self._matching(filters))

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Haystack's ``update_by_filter`` (a condition on ``embedding`` sees the kept vectors)."""
        if self._vectors is None or not _names_embedding(filters):
            return super().update_by_filter(filters, meta)
        matching = self._matching(filters)
        for doc in matching:
            doc.meta.update(meta)
        return len(matching)

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Haystack's ``delete_by_filter`` (a condition on ``embedding`` sees the kept vectors)."""
        if self._vectors is None or not _names_embedding(filters):
            return super().delete_by_filter(filters)
        ids = [doc.id for doc in self._matching(filters)]
        self.delete_documents(ids)
        return len(ids)

    @contextmanager
    def _bare(self) -> Iterator[None]:
        """Within: ``filter_documents`` returns the stored objects as they are (Haystack's BM25 only reads text)."""
        previous = getattr(_BARE, "active", False)
        _BARE.active = True
        try:
            yield
        finally:
            _BARE.active = previous

    def bm25_retrieval(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int = 10, scale_score: bool = False
    ) -> list[Document]:
        """Haystack's ``bm25_retrieval`` (the kept vectors are not copied for every candidate)."""
        with self._bare():
            documents = super().bm25_retrieval(query, filters=filters, top_k=top_k, scale_score=scale_score)
        if not self.return_embedding or self._vectors is None:
            return documents
        storage = self.storage
        out = []
        for doc in documents:
            stored = storage.get(doc.id)
            embedding = None if doc.embedding is not None or stored is None else self.embedding_of(stored)
            out.append(doc if embedding is None else replace(doc, embedding=embedding))
        return out

    def embedding_retrieval(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        scale_score: bool = False,
        return_embedding: bool | None = False,
    ) -> list[Document]:
        """Haystack's ``embedding_retrieval``, over the Documents' own embeddings and those kept beside them."""
        if len(query_embedding) == 0 or not isinstance(query_embedding[0], float):
            raise ValueError("query_embedding should be a non-empty list of floats.")
        candidates = self._matching(filters)
        vectors = self._vectors
        searchable = [
            doc
            for doc in candidates
            if doc.embedding is not None or (vectors is not None and vectors.row(doc) is not None)
        ]
        if not searchable:
            logger.warning("No Documents found with embeddings. Returning empty list.")
            return []
        scores = self._compute_query_embedding_similarity_scores(query_embedding, searchable, scale_score)
        resolved = self.return_embedding if return_embedding is None else return_embedding
        top = []
        for doc, score in sorted(zip(searchable, scores, strict=True), key=lambda x: x[1], reverse=True)[:top_k]:
            fields = doc.to_dict()
            fields["score"] = score
            fields["embedding"] = self.embedding_of(doc) if resolved else None
            top.append(Document.from_dict(fields))
        return top

    def _search_matrix(self, documents: list[Document]) -> Any:
        """The float32 matrix of ``documents``' vectors (unit rows for cosine), or ``None`` if they are ragged;
        built once and reused while the same Document objects are searched."""
        import numpy as np

        cached: tuple[list[Document], Any] | None = self.__dict__.get("_dense_matrix")
        if (
            cached is not None
            and len(cached[0]) == len(documents)
            and all(a is b for a, b in zip(cached[0], documents, strict=True))
        ):
            return cached[1]
        vectors = self._vectors
        rows = [vectors.row(doc) for doc in documents] if vectors is not None else [None] * len(documents)
        if vectors is not None and all(r is not None for r in rows):
            if rows == list(range(len(vectors.documents))) and vectors.matrix.dtype == np.float32:
                matrix = vectors.matrix  # the whole file, in order: no copy (a copy only for cosine, below)
            else:
                matrix = vectors.matrix[[r for r in rows if r is not None]].astype(np.float32)
        else:
            try:
                matrix = np.asarray(
                    [doc.embedding if r is None else vectors.matrix[r] for doc, r in zip(documents, rows, strict=True)],  # type: ignore[union-attr]
                    dtype=np.float32,
                )
            except ValueError:  # ragged vectors
                return None
            if matrix.ndim != 2:
                return None
        if self.embedding_similarity_function == "cosine":
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms == 0.0, 1.0, norms)
        self.__dict__["_dense_matrix"] = (list(documents), matrix)  # holds the Documents: their ids stay theirs
        return matrix

    def _compute_query_embedding_similarity_scores(
        self, embedding: list[float], documents: list[Document], scale_score: bool = False
    ) -> list[float]:
        """Haystack's similarity scores of ``documents`` to ``embedding``, from one float32 matrix of the documents'
        vectors built once and reused while the same Document objects are searched, instead of a float64 matrix
        built from the vectors' Python lists on every query (SciFact: 16 MB allocated per query, most of the dense
        retriever's time). Scores agree with Haystack's to float32 precision; scaling is Haystack's."""
        import numpy as np

        matrix = self._search_matrix(documents)
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if matrix is None or query.shape[0] != matrix.shape[1]:
            return super()._compute_query_embedding_similarity_scores(
                embedding, [self._with_embedding(doc) for doc in documents], scale_score
            )
        if self.embedding_similarity_function == "cosine":
            norm = float(np.linalg.norm(query))
            query = query / (norm if norm else 1.0)
        scores = (matrix @ query).astype(np.float64)
        if scale_score:
            if self.embedding_similarity_function == "dot_product":
                scores = 1.0 / (1.0 + np.exp(-scores / 100.0))  # Haystack's expit(x / DOT_PRODUCT_SCALING_FACTOR)
            else:
                scores = (scores + 1.0) / 2.0
        return [float(x) for x in scores]

    def save_to_disk(self, path: str) -> None:
        """Haystack's ``save_to_disk``, every Document with its embedding, in a file that both
        ``InMemoryDocumentStore.load_from_disk`` and this store's ``path`` read."""
        import json

        data: dict[str, Any] = in_memory_config(self)
        data["documents"] = [doc.to_dict(flatten=False) for doc in self.stored_documents()]
        with open(path, "w") as handle:
            json.dump(data, handle)


def _names_embedding(filters: Any) -> bool:
    """Whether a Haystack filter has a condition on the ``embedding`` field."""
    if not isinstance(filters, dict):
        return False
    if filters.get("field") == "embedding":
        return True
    return any(_names_embedding(c) for c in filters.get("conditions") or [])


def in_memory_config(store: InMemoryDocumentStore) -> dict[str, Any]:
    """The ``InMemoryDocumentStore`` part of a store file for ``store`` (what ``load_from_disk`` rebuilds)."""
    data = InMemoryDocumentStore.to_dict(store)  # the base class's settings, whatever the subclass
    data["type"] = generate_qualified_class_name(InMemoryDocumentStore)
    return data


__all__ = ["CompactInMemoryDocumentStore", "in_memory_config"]
