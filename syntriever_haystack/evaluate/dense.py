"""The dense first stage over our exported ONNX bi-encoders (torch-free).

Documents and queries are encoded by the shared rules of :mod:`syntriever_haystack.runtime.encode`, the code the
serving embedders run: ``document_prefix + text`` and ``query_prefix + text``, normalised as the model's metadata
says, then L2-normalised for search when the model compares by cosine without normalising.

Queries are embedded one at a time by default (``query_batch_size=1``), as the served ``SyntrieverTextEmbedder``
embeds them: int8 ONNX files quantise each call's activations with one dynamic scale, so a query's int8 vector
depends on the other queries of its call (on SciFact, batches of 32 moved the base model's nDCG@10 by 0.003).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from syntriever_haystack.evaluate.embedding_cache import EmbeddingCache, onnx_model_fingerprint
from syntriever_haystack.evaluate.texts import SplitTexts, int_option
from syntriever_haystack.runtime.encode import (
    embed_documents,
    embed_queries,
    l2_normalize,
    resolve_document_prefix,
    unit_vectors_for_search,
)
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.runtime.onnx_model import load_onnx_model
from syntriever_haystack.specs import StageSpec, SystemSpecError

__all__ = ["onnx_corpus_key", "onnx_vectors"]


def onnx_corpus_key(
    fingerprint: str, metadata: ModelMetadata, precision: str, max_length: int | None, corpus_key: dict[str, Any]
) -> dict[str, Any]:
    """The embedding-cache key of a corpus embedded by an exported bi-encoder with the evaluation's text rule
    (``document_prefix + text``, the model's normalisation, no meta fields, no suffix).

    :param fingerprint: :func:`~.embedding_cache.onnx_model_fingerprint` of the ONNX file in use.
    :param metadata: The model's metadata (its document prefix is part of the key).
    :param precision: ``fp32`` or ``int8``.
    :param max_length: The ``max_length`` option (``None``: the exported maximum).
    :param corpus_key: :attr:`SplitTexts.corpus_key` of the corpus.
    """
    key = {"model": fingerprint, "precision": precision, "max_length": max_length, **corpus_key}
    key["prefix"] = resolve_document_prefix(metadata)
    return key


def onnx_vectors(
    stage: StageSpec,
    texts: SplitTexts,
    cache: EmbeddingCache,
    *,
    show_progress: bool = True,
    query_batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Document and query vectors of a ``dense:EXPORTED_DIR`` stage, ready for inner-product search.

    :param query_batch_size: Queries per ONNX call; ``None``: the stage's ``query_batch_size`` option, default 1
        (the served text embedder's). A caller that only needs the vectors (not the served ones) may batch them.
    :returns: ``(document vectors, query vectors, whether the document vectors came from the cache)``.
    """
    metadata = ModelMetadata.load(stage.target)
    precision = stage.precision
    file_name = stage.options.get("file_name")
    onnx_file = Path(stage.target) / (file_name or metadata.files.get(precision, ""))
    if not onnx_file.is_file():
        raise SystemSpecError(
            f"{stage.target} has no {precision} ONNX file; exported precisions: {', '.join(metadata.files)}"
        )
    max_length = stage.int_option("max_length")
    batch_size = int_option(stage, "batch_size", 32)
    fingerprint = onnx_model_fingerprint(Path(stage.target), onnx_file)
    model = load_onnx_model(
        stage.target, precision=precision, file_name=file_name, max_length=max_length, expected_kind="bi-encoder"
    )

    key = onnx_corpus_key(fingerprint, model.metadata, precision, max_length, texts.corpus_key)
    doc_vectors, cached = cache.get_or_compute(
        key,
        len(texts.doc_ids),
        lambda: embed_documents(model, texts.doc_texts, batch_size=batch_size, progress_bar=show_progress),
    )
    if query_batch_size is None:
        query_batch_size = int_option(stage, "query_batch_size", 1)
    query_vectors = embed_queries(model, texts.query_texts, batch_size=query_batch_size, progress_bar=show_progress)
    if unit_vectors_for_search(model.metadata):
        doc_vectors = l2_normalize(doc_vectors)
        query_vectors = l2_normalize(query_vectors)
    return doc_vectors, query_vectors, cached
