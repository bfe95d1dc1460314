"""An ``InMemoryDocumentStore`` for an exported bi-encoder, saved to and loaded from one JSON file.

The file is Haystack's own ``save_to_disk`` format (``InMemoryDocumentStore.load_from_disk`` reads it) plus a
``"syntriever"`` block recording the model, so a later search can check the model before querying. Next to it,
``document_store.bm25/`` holds the BM25 index of its documents (what ``SyntrieverBM25Retriever`` loads).

A pipeline reads the file itself through a ``SyntrieverInMemoryDocumentStore(path=...)``
(:func:`file_document_store`): its YAML records the file, not the documents.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from haystack import Document
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_integrations.document_stores.syntriever.document_store import (
    META_KEY,
    SyntrieverInMemoryDocumentStore,
    in_memory_config,
)
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.runtime.bm25 import BM25Index, BM25Params, bm25_index_dir, corpus_fingerprint, indexable
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.runtime.vector_space import VectorSpace, vector_space


def memory_document_store(
    metadata: ModelMetadata, *, index: str | None = None, shared: bool = True
) -> InMemoryDocumentStore:
    """An empty ``InMemoryDocumentStore`` whose similarity fits the model (``dot_product`` or ``cosine``).

    :param metadata: The bi-encoder's metadata.
    :param index: Store index name. Stores with the same ``index`` and ``shared=True`` share their documents
        within a process (that is how a pipeline loaded from YAML finds the documents of a loaded store file).
    :param shared: Use Haystack's process-global storage for ``index``.
    :returns: The store.
    """
    space = vector_space(metadata)
    return InMemoryDocumentStore(embedding_similarity_function=space.haystack_similarity, index=index, shared=shared)  # type: ignore[arg-type]


def file_document_store(
    metadata: ModelMetadata,
    path: str | Path,
    *,
    index: str | None = None,
    missing: Literal["error", "empty"] = "error",
    load: bool = True,
) -> SyntrieverInMemoryDocumentStore:
    """A :class:`SyntrieverInMemoryDocumentStore` over the store file ``path``, its similarity fitting the model.

    :param metadata: The bi-encoder's metadata.
    :param path: The store file (a relative path resolves like a pipeline's, see ``runtime.locations``).
    :param index: Shared in-memory index name (``None``: the file's).
    :param missing: ``"error"`` for a query store, ``"empty"`` for an indexing store (starts empty when the file is
        missing).
    :param load: ``False``: do not read the file now (to build pipelines before it exists).
    """
    space = vector_space(metadata)
    return SyntrieverInMemoryDocumentStore(
        path=path,
        missing=missing,
        index=index,
        embedding_similarity_function=space.haystack_similarity,  # type: ignore[arg-type]
        load=load,
    )


def store_record(metadata: ModelMetadata, *, model_name: str) -> dict[str, Any]:
    """The ``"syntriever"`` block saved with a store: the model and its vector space."""
    from syntriever_haystack._version import __version__

    space = vector_space(metadata)
    return {
        "model": model_name,
        "source_model": metadata.source_model,
        "dimension": space.dimension,
        "space_type": space.space_type,
        "similarity": space.similarity,
        "normalize": space.normalized,
        "syntriever_haystack": __version__,
    }


def save_memory_store(store: InMemoryDocumentStore, path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``store`` (configuration + documents) and ``record`` to ``path`` atomically.

    :param store: The store.
    :param path: The JSON file to write (parent folders are created).
    :param record: :func:`store_record` of the model that embedded the documents.
    :returns: The path written.
    """
    target = Path(path).expanduser()
    data: dict[str, Any] = in_memory_config(store)  # plain InMemoryDocumentStore settings: load_from_disk reads it
    stored = getattr(store, "stored_documents", None)  # with the embeddings a loaded store keeps beside them
    documents = stored() if stored is not None else list(store.storage.values())
    data["documents"] = [_document_record(doc) for doc in documents]
    data[META_KEY] = record
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    save_bm25_index(documents, target)
    return target


_PLAIN = (str, int, float, bool, type(None))


def _document_record(doc: Document) -> dict[str, Any]:
    """``doc.to_dict(flatten=False)``, without its deep copy of every embedding value when nothing needs converting
    (no blob, no sparse embedding, plain meta values): the same JSON, ~10x faster for a store of embedded documents."""
    if (
        doc.blob is not None
        or doc.sparse_embedding is not None
        or not all(type(v) in _PLAIN for v in doc.meta.values())
    ):
        return doc.to_dict(flatten=False)
    return {f.name: getattr(doc, f.name) for f in fields(doc)}


def save_bm25_index(documents: list[Document], store_file: str | Path, params: BM25Params | None = None) -> Path:
    """Build the BM25 index of ``documents`` (a store's, in storage order) and save it next to ``store_file``
    (``document_store.bm25/``), where ``SyntrieverBM25Retriever`` finds it.

    :returns: The index folder.
    """
    params = params or BM25Params()
    _, ids, texts = indexable(documents)
    index = BM25Index.build(texts, params)
    return index.save(bm25_index_dir(store_file), ids=ids, fingerprint=corpus_fingerprint(ids, texts, params))


def load_memory_store(path: str | Path) -> tuple[InMemoryDocumentStore, dict[str, Any]]:
    """Load a store file written by :func:`save_memory_store` (or by ``InMemoryDocumentStore.save_to_disk``).

    The store is a :class:`SyntrieverInMemoryDocumentStore` over the file (its BM25 index is the one saved next to
    it), on the file's shared index name: pipelines on that index within this process see its documents. Its
    Documents hold their embeddings (``detach_vectors=False``), as a plain ``InMemoryDocumentStore`` needs.

    :param path: The JSON file.
    :returns: The store and its ``"syntriever"`` record (empty for a plain Haystack file).
    :raises SyntrieverError: The file does not exist or cannot be read.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise SyntrieverError(
            f"store file {source} does not exist; build it first with `syntriever index --store memory "
            f"--store-path {source} ...`."
        )
    # the Documents keep their vectors: a plain InMemoryDocumentStore on the same index reads the storage itself
    store = SyntrieverInMemoryDocumentStore(path=source.absolute(), missing="empty", detach_vectors=False)
    return store, dict(store.record)


def check_memory_store(
    store: InMemoryDocumentStore, record: dict[str, Any], metadata: ModelMetadata, *, label: str
) -> VectorSpace:
    """Check that the documents of ``store`` were embedded in the model's vector space.

    :param store: The loaded store.
    :param record: Its ``"syntriever"`` record (may be empty: then the first document's embedding is measured).
    :param metadata: The query model's metadata.
    :param label: How to name the store in messages (e.g. its file).
    :returns: The model's vector space.
    :raises SyntrieverError: Dimension or space differ; the message names the fix.
    """
    space = vector_space(metadata)
    dimension = record.get("dimension")
    if dimension is None:
        embedding_of = getattr(store, "embedding_of", None)
        embeddings = (d.embedding if embedding_of is None else embedding_of(d) for d in store.storage.values())
        first = next((e for e in embeddings if e is not None), None)
        dimension = len(first) if first is not None else None
    problems = []
    if dimension is not None and int(dimension) != space.dimension:
        problems.append(f"{label} holds {int(dimension)}-d vectors, the model makes {space.dimension}-d vectors")
    recorded_space = record.get("space_type")
    if recorded_space and recorded_space != space.space_type:
        problems.append(f"{label} was built for space '{recorded_space}', the model needs '{space.space_type}'")
    if problems:
        built_with = f" ({record['model']})" if record.get("model") else ""
        raise SyntrieverError(
            "; ".join(problems) + f". Search with the model the store was built with{built_with}, or rebuild it "
            "with this model (`syntriever index --recreate ...`)."
        )
    return space


__all__ = [
    "check_memory_store",
    "file_document_store",
    "load_memory_store",
    "memory_document_store",
    "save_bm25_index",
    "save_memory_store",
    "store_record",
]
