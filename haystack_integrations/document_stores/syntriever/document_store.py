from __future__ import annotations

import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Literal

from haystack import Document, default_from_dict, default_to_dict

from haystack_integrations.document_stores.syntriever._compact import CompactInMemoryDocumentStore, in_memory_config
from haystack_integrations.document_stores.syntriever._vectors import DetachedVectors, parse_store_json
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.runtime.bm25 import bm25_index_dir
from syntriever_haystack.runtime.locations import resolve_path

META_KEY = "syntriever"


class StoreFile:
    """A parsed store file: the ``InMemoryDocumentStore`` settings, the documents, the ``"syntriever"`` record."""

    __slots__ = ("__weakref__", "documents", "record", "settings", "vectors")

    def __init__(
        self,
        settings: dict[str, Any],
        documents: list[Document],
        record: dict[str, Any],
        vectors: DetachedVectors | None = None,
    ) -> None:
        self.settings, self.documents, self.record, self.vectors = settings, documents, record, vectors


# Parsed store files by (file, mtime, size), while a store holds them: the stores of one loaded pipeline (a YAML
# serialises the store once per retriever / writer) parse the file once and share the same Document objects.
_PARSED: weakref.WeakValueDictionary[tuple[str, int, int, bool], StoreFile] = weakref.WeakValueDictionary()
_PARSED_LOCK = threading.Lock()


def read_store_file(path: Path, *, detach_vectors: bool = True) -> StoreFile:
    """The parsed store file ``path`` (shared with the stores that hold the same version of it).

    :param detach_vectors: Keep the embeddings beside the Documents (see ``parse_store_json``), not in them.

    :raises SyntrieverError: The file is missing or unreadable (the message names the fix).
    """
    try:
        stat = path.stat()
    except OSError:
        raise SyntrieverError(
            f"the document store file {path} does not exist. Build it first: `syntriever run RECIPE --until index` "
            f"for a run folder, or `syntriever index --store memory --store-path {path} ...`."
        ) from None
    key = (str(path), stat.st_mtime_ns, stat.st_size, detach_vectors)
    with _PARSED_LOCK:
        parsed = _PARSED.get(key)
        if parsed is None:
            try:
                data, documents, vectors = parse_store_json(path.read_text(encoding="utf-8"), detach=detach_vectors)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                raise SyntrieverError(
                    f"cannot read the document store file {path}: {exc}. Rebuild it (`syntriever index` or "
                    "`syntriever run RECIPE --force-step index`)."
                ) from exc
            settings, record = dict(data.get("init_parameters") or {}), dict(data.get(META_KEY) or {})
            parsed = StoreFile(settings, documents, record, vectors)
            _PARSED[key] = parsed
    return parsed


class SyntrieverInMemoryDocumentStore(CompactInMemoryDocumentStore):
    """
    An ``InMemoryDocumentStore`` that loads its documents from a saved store file when it is created.

    Its ``to_dict`` records the file, not the documents, so a pipeline saved as YAML answers as soon as
    ``Pipeline.loads`` returns, in any process. The file is the one ``save_memory_store`` (syntriever-haystack's
    ``syntriever index`` and the ``index`` step of ``syntriever run``) writes: Haystack's ``save_to_disk`` format
    plus the model record; the BM25 index saved next to it (``document_store.bm25/``) is what
    ``SyntrieverBM25Retriever`` loads.

    A relative ``path`` resolves against the pipeline's folder (``load_pipeline``), ``$SYNTRIEVER_PIPELINE_DIR`` or
    the current directory (see ``syntriever_haystack.runtime.locations``).

    ### Usage example

    ```python
    from haystack_integrations.document_stores.syntriever import SyntrieverInMemoryDocumentStore

    store = SyntrieverInMemoryDocumentStore(path="runs/quickstart/data/document_store.json")
    print(store.count_documents())
    ```
    """

    def __init__(
        self,
        *,
        path: str | Path,
        missing: Literal["error", "empty"] = "error",
        index: str | None = None,
        shared: bool = True,
        embedding_similarity_function: Literal["dot_product", "cosine"] | None = None,
        return_embedding: bool = True,
        detach_vectors: bool = True,
        load: bool = True,
    ) -> None:
        """
        Create the store and load the documents of ``path``.

        :param path: The store file (JSON).
        :param missing: What a missing or empty file means: ``"error"`` (a query store: nothing to search) or
            ``"empty"`` (an indexing store: start empty, the documents are written and then saved).
        :param index: Name of the in-memory index (stores with the same name and ``shared`` share documents in a
            process). ``None``: the name saved in the file, else a new one.
        :param shared: Keep the documents in Haystack's process-global storage of ``index``.
        :param embedding_similarity_function: ``"dot_product"`` or ``"cosine"``; ``None``: the file's (else
            ``dot_product``). It must fit the model that embedded the documents.
        :param return_embedding: Return the embeddings of retrieved Documents.
        :param detach_vectors: Keep the loaded Documents' vectors in one matrix beside them (``embedding=None`` in the
            storage; every method gives them back) instead of as Python lists (~8x less memory), and count
            Haystack's BM25 statistics when first read. ``False`` when a plain ``InMemoryDocumentStore`` shares this
            store's index: it reads the storage and the statistics directly.
        :param load: ``False`` creates the store empty without reading the file (to build pipelines before the file
            exists). Not serialised: a deserialised store always loads.
        :raises SyntrieverError: ``missing="error"`` and the file is missing or has no document; the file is
            unreadable; or it was saved with another similarity than ``embedding_similarity_function``.
        """
        if missing not in ("error", "empty"):
            raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}")
        self.path = str(path)
        self.missing = missing
        self._path = resolve_path(path)
        self._similarity = embedding_similarity_function
        self.detach_vectors = detach_vectors
        self._file: StoreFile | None = None
        if load and (missing == "error" or self._path.exists()):
            # held: other stores loading this file share its documents
            self._file = read_store_file(self._path, detach_vectors=detach_vectors)
        saved = self._file.settings if self._file else {}
        documents = self._file.documents if self._file else []
        self.record: dict[str, Any] = dict(self._file.record) if self._file else {}
        if self._file is not None and not documents and missing == "error":
            raise SyntrieverError(
                f"the document store file {self._path} holds no document. Index the corpus first: "
                "`syntriever run RECIPE --until index` for a run folder, or `syntriever index --store memory "
                f"--store-path {self._path} ...`."
            )
        similarity = embedding_similarity_function or saved.get("embedding_similarity_function") or "dot_product"
        if saved.get("embedding_similarity_function") not in (None, similarity):
            raise SyntrieverError(
                f"the document store file {self._path} was saved with embedding_similarity_function="
                f"{saved['embedding_similarity_function']!r}, this store asks for {similarity!r}: drop the setting "
                "or rebuild the store with the model's similarity."
            )
        super().__init__(
            embedding_similarity_function=similarity,
            index=index if index is not None else saved.get("index"),
            shared=shared,
            return_embedding=return_embedding,
        )
        if documents and not self._holds(documents):
            self.delete_all_documents()
            self._load(documents, self._file.vectors if self._file else None)

    def _holds(self, documents: list[Document]) -> bool:
        """Whether the storage already holds exactly these Document objects (another store of the same pipeline
        loaded the same file into the shared index)."""
        storage = self.storage
        return len(storage) == len(documents) and all(
            stored is doc for stored, doc in zip(storage.values(), documents, strict=True)
        )

    @classmethod
    def load_from_disk(cls, path: str) -> SyntrieverInMemoryDocumentStore:
        """A store over the file ``path`` (what ``save_to_disk`` and ``save_memory_store`` write)."""
        return cls(path=path)

    def _tokenize_bm25(self, text: str) -> list[str]:
        """Haystack's BM25 tokens of ``text``, interned: the per-document token counts that ``write_documents`` keeps
        for Haystack's own BM25 then share one string per distinct token (SciFact's 5,183 abstracts: 20 MB instead
        of 55 MB in a serving process that never reads them; ``SyntrieverBM25Retriever`` has its own index)."""
        return [sys.intern(token) for token in super()._tokenize_bm25(text)]

    @property
    def file_path(self) -> Path:
        """The store file, resolved."""
        return self._path

    @property
    def bm25_index_path(self) -> Path:
        """Where the BM25 index of this store is saved: next to the file (``document_store.bm25/``)."""
        return bm25_index_dir(self._path)

    def to_dict(self) -> dict[str, Any]:
        """Serialise the store: its file and settings, not its documents."""
        return default_to_dict(
            self,
            path=self.path,
            missing=self.missing,
            index=self.index,
            shared=self._shared,
            embedding_similarity_function=self._similarity,
            return_embedding=self.return_embedding,
            detach_vectors=self.detach_vectors,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntrieverInMemoryDocumentStore:
        """Deserialise the store (loads its file)."""
        return default_from_dict(cls, data)


__all__ = ["META_KEY", "StoreFile", "SyntrieverInMemoryDocumentStore", "in_memory_config", "read_store_file"]
