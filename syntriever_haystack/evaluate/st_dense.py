"""The dense first stage over a sentence-transformers model (``st:MODEL``; needs torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.evaluate.embedding_cache import EmbeddingCache, _hash_files
from syntriever_haystack.evaluate.texts import SplitTexts, int_option
from syntriever_haystack.runtime.encode import l2_normalize
from syntriever_haystack.specs import StageSpec

__all__ = ["st_vectors"]

_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".json", ".txt", ".model"}


def _fingerprint(source: str) -> str:
    local = Path(source)
    if not local.is_dir():
        return source
    weights = [p for p in local.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES]
    return _hash_files(weights) if weights else str(local.resolve())


def st_vectors(
    stage: StageSpec, texts: SplitTexts, cache: EmbeddingCache, *, show_progress: bool = True
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Document and query vectors of an ``st:MODEL`` stage (unit vectors for a cosine model).

    :returns: ``(document vectors, query vectors, whether the document vectors came from the cache)``.
    """
    from syntriever_haystack.models import resolve_model

    options = stage.options
    source = resolve_model(stage.target)
    fingerprint = _fingerprint(source)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SyntrieverError(
            "st: systems need sentence-transformers: pip install 'syntriever-haystack[train]', or export the "
            "model with `syntriever export` and evaluate it as dense:DIR"
        ) from None
    batch_size = int_option(stage, "batch_size", 32)
    max_length = stage.int_option("max_length")
    model_holder: list[Any] = []

    def model() -> Any:
        if not model_holder:
            m = SentenceTransformer(source, device="cpu")
            if max_length is not None:
                m.max_seq_length = max_length
            model_holder.append(m)
        return model_holder[0]

    def encode(items: list[str], *, query: bool) -> np.ndarray:
        m = model()
        fn = m.encode_query if query and hasattr(m, "encode_query") else m.encode
        if not query and hasattr(m, "encode_document"):
            fn = m.encode_document
        vectors = fn(items, batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    # max_length stays the text of the SPEC in the key, so caches written before stay valid.
    key = {"model": fingerprint, "backend": "sentence-transformers", "max_length": options.get("max_length")}
    key.update(texts.corpus_key)
    doc_vectors, cached = cache.get_or_compute(key, len(texts.doc_ids), lambda: encode(texts.doc_texts, query=False))
    query_vectors = encode(texts.query_texts, query=True)
    if getattr(model(), "similarity_fn_name", "cosine") in ("cosine", None):
        doc_vectors, query_vectors = l2_normalize(doc_vectors), l2_normalize(query_vectors)
    return doc_vectors, query_vectors, cached
