"""Embeddings of a loaded store file kept in one matrix instead of in their Documents (issue 17: serving memory).

A Document's embedding as a Python list costs 32 bytes a value (a float object and its pointer); SciFact's 5,183
384-d vectors take ~64 MB that way and 8 MB as a float32 matrix. :func:`parse_store_json` reads a store file's JSON
so that no document's list of floats outlives its own parse (a ``json`` object hook moves each into an array as
soon as the document's object is complete), and returns the Documents with ``embedding=None`` and their vectors as
:class:`DetachedVectors`. The store gives the vectors back wherever Haystack's API shows an embedding.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from haystack import Document

__all__ = ["DetachedVectors", "parse_store_json"]


class DetachedVectors:
    """The vectors of some Documents, by Document object (not id: a Document written later under the same id is
    another object and keeps its own embedding).

    :param documents: The Documents, held so their object identities stay theirs.
    :param matrix: One row per Document, in the same order: float32 when that is exact for every value (vectors
        an ONNX model made), else float64.
    """

    __slots__ = ("_rows", "documents", "matrix")

    def __init__(self, documents: list[Document], matrix: np.ndarray) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != len(documents):
            raise ValueError(f"need one row per document: {len(documents)} documents, matrix {matrix.shape}")
        self.documents = documents
        self.matrix = matrix
        self._rows = {id(doc): row for row, doc in enumerate(documents)}

    def row(self, document: Document) -> int | None:
        """The row of ``document`` (this very object), or ``None``."""
        return self._rows.get(id(document))

    def embedding(self, document: Document) -> list[float] | None:
        """The embedding of ``document`` as Haystack holds one (a list of floats), or ``None`` if not detached."""
        row = self._rows.get(id(document))
        if row is None:
            return None
        values: list[float] = self.matrix[row].tolist()
        return values


def parse_store_json(
    text: str, *, detach: bool = True
) -> tuple[dict[str, Any], list[Document], DetachedVectors | None]:
    """A store file's JSON (Haystack's ``save_to_disk`` format): its other keys, its Documents, their vectors.

    The top-level Documents' embeddings are detached when all of them have the same dimension (else they stay
    lists, as Haystack would load them), and only lists of JSON floats are. Values come back exactly: the matrix is
    float32 only when float32 holds every value. An ``"embedding"`` inside a meta value is left as it was.

    :param detach: ``False``: the Documents keep their embeddings (and no vectors are returned).
    :raises ValueError: The text is not JSON (or not a store file's structure).
    """
    if not detach:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("documents") or [], list):
            raise ValueError("the file is not a store file (a JSON object with a 'documents' list)")
        return data, [Document.from_dict(record) for record in data.pop("documents", None) or []], None
    parsed: dict[int, tuple[dict[str, Any], np.ndarray]] = {}

    def hook(obj: dict[str, Any]) -> dict[str, Any]:
        embedding = obj.get("embedding")
        if type(embedding) is list and embedding and "id" in obj and all(type(x) is float for x in embedding):
            obj["embedding"] = None  # the list's floats are freed now, before the next document is read
            parsed[id(obj)] = (obj, np.asarray(embedding, dtype=np.float64))
        return obj

    data = json.loads(text, object_hook=hook)
    if not isinstance(data, dict):
        raise ValueError("the file is not a JSON object")
    records = data.pop("documents", None) or []
    if not isinstance(records, list):
        raise ValueError("'documents' is not a list")
    detached = [(r, parsed.pop(id(r))[1]) for r in records if isinstance(r, dict) and id(r) in parsed]
    for obj, vector in parsed.values():  # a dict inside a meta value: give its list back
        obj["embedding"] = vector.tolist()
    if len({len(vector) for _, vector in detached}) > 1:  # ragged: keep lists, as Haystack would
        for record, vector in detached:
            record["embedding"] = vector.tolist()
        detached = []
    detached_ids = {id(record) for record, _ in detached}
    documents: list[Document] = []
    with_vectors: list[Document] = []
    for record in records:
        document = Document.from_dict(record)
        documents.append(document)
        if id(record) in detached_ids:
            with_vectors.append(document)
    if not with_vectors:
        return data, documents, None
    wide = np.stack([vector for _, vector in detached])
    narrow = wide.astype(np.float32)
    matrix = narrow if np.array_equal(narrow, wide) else wide
    return data, documents, DetachedVectors(with_vectors, matrix)
