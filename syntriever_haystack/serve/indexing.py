"""The index task: run an indexing pipeline over documents in bounded batches, with progress in documents/s.

``syntriever index`` and the flow's ``index`` step both call :func:`index_documents`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from haystack import Document, Pipeline

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.serve.pipelines import indexing_inputs

BATCH_DOCUMENTS = 256

# documents/s always (tqdm's default turns a rate under 1/s into s/doc), averaged over the run (smoothing=0)
_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]"


@dataclass
class IndexingResult:
    """What an indexing run wrote, and (when asked) the documents with the embeddings written.

    :param reused: Documents written with embeddings given to :func:`index_documents` (the embedder did not run).
    """

    written: int = 0
    embedded: list[Document] = field(default_factory=list)
    reused: int = 0


def index_documents(
    pipeline: Pipeline,
    documents: list[Document],
    *,
    batch_size: int = BATCH_DOCUMENTS,
    progress: bool = True,
    keep_embedded: bool = False,
    embeddings: np.ndarray | Sequence[Sequence[float]] | None = None,
) -> IndexingResult:
    """Run ``pipeline`` (an :func:`~syntriever_haystack.serve.pipelines.indexing_pipeline`, or one loaded from its
    YAML) over ``documents``, ``batch_size`` at a time so memory stays bounded whatever the corpus size. The
    progress bar counts documents (``doc/s``).

    :param keep_embedded: Also return the embedder's output documents (with their embeddings).
    :param embeddings: The embeddings of ``documents`` (one row each, in order), already computed with exactly the
        pipeline embedder's model, quantization and text rule (the caller's responsibility: e.g. the evaluation's
        cached corpus vectors, whose cache key says so). The embedder then does not run: each document gets its row
        as ``embedding`` (as the embedder sets it) and goes through the pipeline's ``writer``, so the store receives
        documents as the full pipeline writes them. Only for a pipeline without splitter (``embedder`` → ``writer``).
    :raises SyntrieverError: ``embeddings`` for a pipeline with a splitter or without ``embedder`` / ``writer``, or
        with another number of rows than ``documents``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    components = dict(pipeline.walk())
    writer = _reuse_writer(components, documents, embeddings) if embeddings is not None else None
    embedder = "embedder" if keep_embedded and "embedder" in components else None
    result = IndexingResult()
    with tqdm(
        total=len(documents),
        desc="Indexing",
        unit="doc",
        smoothing=0,
        bar_format=_BAR_FORMAT,
        disable=not progress,
        file=sys.stderr,
    ) as bar:
        for start in range(0, len(documents), batch_size):
            batch = documents[start : start + batch_size]
            if writer is not None and embeddings is not None:
                rows = embeddings[start : start + batch_size]
                embedded = [
                    replace(d, embedding=np.asarray(r, np.float32).tolist()) for d, r in zip(batch, rows, strict=True)
                ]
                written = writer.run(documents=embedded).get("documents_written", 0)
                result.written += int(written)
                result.reused += len(embedded)
                if keep_embedded:
                    result.embedded.extend(embedded)
            else:
                outputs: dict[str, Any] = pipeline.run(
                    indexing_inputs(pipeline, batch), include_outputs_from={embedder} if embedder else None
                )
                result.written += int(outputs.get("writer", {}).get("documents_written", 0))
                if embedder:
                    result.embedded.extend(outputs.get(embedder, {}).get("documents") or [])
            bar.update(len(batch))
    return result


def _reuse_writer(
    components: dict[str, Any], documents: list[Document], embeddings: np.ndarray | Sequence[Sequence[float]]
) -> Any:
    """The pipeline's ``writer``, checked to take the place of ``embedder`` → ``writer`` with ``embeddings``."""
    if "splitter" in components or "embedder" not in components or "writer" not in components:
        raise SyntrieverError(
            "precomputed embeddings need an indexing pipeline of whole documents (embedder → writer, no splitter); "
            f"this one has {', '.join(components)}."
        )
    if len(embeddings) != len(documents):
        raise SyntrieverError(f"{len(embeddings)} precomputed embeddings for {len(documents)} documents.")
    return components["writer"]


__all__ = ["BATCH_DOCUMENTS", "IndexingResult", "index_documents"]
