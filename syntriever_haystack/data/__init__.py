"""Data in: BEIR folders (strict reader, public downloads), MedQuAD's XML release, a user's own documents.

``load_documents`` / ``documents_from_store`` / ``write_beir_corpus`` import Haystack converters and are loaded
lazily.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from syntriever_haystack.data.beir import (
    BeirDataset,
    DatasetError,
    Passage,
    available_splits,
    load_beir,
    read_corpus,
    read_qrels,
    read_queries,
)
from syntriever_haystack.data.download import BEIR_DATASETS, BeirSource, download_beir, resolve_dataset
from syntriever_haystack.data.medquad_xml import convert_medquad_xml, read_liveqa_questions

if TYPE_CHECKING:
    from syntriever_haystack.data.documents import documents_from_store, load_documents, write_beir_corpus

_LAZY = {
    "documents_from_store": "syntriever_haystack.data.documents",
    "load_documents": "syntriever_haystack.data.documents",
    "write_beir_corpus": "syntriever_haystack.data.documents",
}

__all__ = [
    "BEIR_DATASETS",
    "BeirDataset",
    "BeirSource",
    "DatasetError",
    "Passage",
    "available_splits",
    "convert_medquad_xml",
    "documents_from_store",
    "download_beir",
    "load_beir",
    "load_documents",
    "read_corpus",
    "read_liveqa_questions",
    "read_qrels",
    "read_queries",
    "resolve_dataset",
    "write_beir_corpus",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'syntriever_haystack.data' has no attribute {name!r}")
