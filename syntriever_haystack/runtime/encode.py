"""The encoding rules of an exported model, in one place: what the serving components, the evaluator and the
score judges all run, so evaluation measures exactly what is served.

- Bi-encoder: a query is embedded as ``query_prefix + text + suffix``, a document as
  ``document_prefix + passage_text(...) + suffix``; the prefixes come from the model's ``syntriever.json`` unless
  overridden, and so does L2 normalisation (``normalize``).
- Cross-encoder: the pair ``(query_prefix + query + query_suffix, document_prefix + text + document_suffix)`` is
  scored; the score is the raw logit or its sigmoid (``scale_score``), as float64.
- Search: a cosine model that does not normalise is searched with unit vectors (:func:`unit_vectors_for_search`).

Torch-free: NumPy and the runtime only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.runtime.onnx_model import OnnxModel, l2_normalize

__all__ = [
    "RERANK_BATCH_SIZE",
    "embed_documents",
    "embed_queries",
    "l2_normalize",
    "passage_text",
    "resolve_document_prefix",
    "resolve_normalize",
    "resolve_query_prefix",
    "scale_logits",
    "score_documents",
    "unit_vectors_for_search",
]

# Pairs per ONNX Runtime call of the served ``SyntrieverRanker`` (its default) and of the evaluation's rerank stages:
# int8 files quantise each call's activations with one dynamic scale, so a pair's int8 score depends on the pairs
# that share its call; evaluating at the served batch scores what is served.
RERANK_BATCH_SIZE = 2


def resolve_query_prefix(metadata: ModelMetadata, override: str | None = None) -> str:
    """The text put before a query: ``override``, or the model's ``query_prefix`` when ``None``."""
    return metadata.query_prefix if override is None else override


def resolve_document_prefix(metadata: ModelMetadata, override: str | None = None) -> str:
    """The text put before a document: ``override``, or the model's ``document_prefix`` when ``None``."""
    return metadata.document_prefix if override is None else override


def resolve_normalize(metadata: ModelMetadata, override: bool | None = None) -> bool:
    """Whether embeddings are L2-normalised: ``override``, or the model's ``normalize`` when ``None``."""
    return metadata.normalize if override is None else override


def passage_text(
    content: str | None,
    meta: Mapping[str, Any] | None = None,
    *,
    meta_fields: Sequence[str] = (),
    separator: str = "\n",
) -> str:
    """A document's text before prefixes: the selected meta values, then the content, joined by ``separator``.

    Same convention as the sentence-transformers Haystack components, so embeddings are interchangeable.
    """
    meta = meta or {}
    meta_values = [str(meta[key]) for key in meta_fields if meta.get(key) is not None]
    return separator.join([*meta_values, content or ""])


def unit_vectors_for_search(metadata: ModelMetadata) -> bool:
    """Whether exact search must L2-normalise the vectors (a cosine model whose embeddings are not unit)."""
    return metadata.similarity == "cosine" and not metadata.normalize


def _embed(
    model: OnnxModel,
    texts: Sequence[str],
    prefix: str,
    suffix: str,
    normalize: bool | None,
    batch_size: int,
    progress_bar: bool,
) -> np.ndarray:
    return model.embed(
        [prefix + text + suffix for text in texts],
        batch_size=batch_size,
        normalize=resolve_normalize(model.metadata, normalize),
        progress_bar=progress_bar,
    )


def embed_queries(
    model: OnnxModel,
    queries: Sequence[str],
    *,
    prefix: str | None = None,
    suffix: str = "",
    normalize: bool | None = None,
    batch_size: int = 32,
    progress_bar: bool = False,
) -> np.ndarray:
    """Embed query texts with a bi-encoder: float32 ``(len(queries), dim)``, in input order.

    :param prefix: Overrides the model's ``query_prefix`` (``None``: use it).
    :param normalize: Overrides the model's ``normalize`` (``None``: use it).
    """
    text_prefix = resolve_query_prefix(model.metadata, prefix)
    return _embed(model, queries, text_prefix, suffix, normalize, batch_size, progress_bar)


def embed_documents(
    model: OnnxModel,
    texts: Sequence[str],
    *,
    prefix: str | None = None,
    suffix: str = "",
    normalize: bool | None = None,
    batch_size: int = 32,
    progress_bar: bool = False,
) -> np.ndarray:
    """Embed document texts (see :func:`passage_text`) with a bi-encoder: float32 ``(len(texts), dim)``.

    :param prefix: Overrides the model's ``document_prefix`` (``None``: use it).
    :param normalize: Overrides the model's ``normalize`` (``None``: use it).
    """
    text_prefix = resolve_document_prefix(model.metadata, prefix)
    return _embed(model, texts, text_prefix, suffix, normalize, batch_size, progress_bar)


def scale_logits(logits: np.ndarray, scale_score: bool) -> np.ndarray:
    """Cross-encoder logits as float64 scores: ``sigmoid(logit)`` when ``scale_score``, else the logit."""
    wide = logits.astype(np.float64)
    if scale_score:
        scaled: np.ndarray = 1.0 / (1.0 + np.exp(-wide))
        return scaled
    return wide


def score_documents(
    model: OnnxModel,
    query: str,
    texts: Sequence[str],
    *,
    query_prefix: str | None = None,
    query_suffix: str = "",
    document_prefix: str | None = None,
    document_suffix: str = "",
    scale_score: bool = True,
    batch_size: int = 16,
    progress_bar: bool = False,
) -> np.ndarray:
    """Relevance of each document text (see :func:`passage_text`) to ``query`` with a cross-encoder.

    :param query_prefix: Overrides the model's ``query_prefix`` (``None``: use it).
    :param document_prefix: Overrides the model's ``document_prefix`` (``None``: use it).
    :param scale_score: ``sigmoid(logit)`` instead of the raw logit.
    :returns: float64 scores, in input order.
    """
    metadata = model.metadata
    full_query = resolve_query_prefix(metadata, query_prefix) + query + query_suffix
    text_prefix = resolve_document_prefix(metadata, document_prefix)
    logits = model.score(
        full_query,
        [text_prefix + text + document_suffix for text in texts],
        batch_size=batch_size,
        progress_bar=progress_bar,
    )
    return scale_logits(logits, scale_score)
