"""The index task: run an indexing pipeline over documents in bounded batches, with progress.

``syntriever index`` and the flow's ``index`` step both call :func:`index_documents`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from haystack import Document, Pipeline

from syntriever_haystack.serve.pipelines import indexing_inputs

BATCH_DOCUMENTS = 256


@dataclass
class IndexingResult:
    """What an indexing run wrote, and (when asked) the documents with the embeddings written."""

    written: int = 0
    embedded: list[Document] = field(default_factory=list)


def index_documents(
    pipeline: Pipeline,
    documents: list[Document],
    *,
    batch_size: int = BATCH_DOCUMENTS,
    progress: bool = True,
    keep_embedded: bool = False,
) -> IndexingResult:
    """Run ``pipeline`` (an :func:`~syntriever_haystack.serve.pipelines.indexing_pipeline`, or one loaded from its
    YAML) over ``documents``, ``batch_size`` at a time so memory stays bounded whatever the corpus size.

    :param keep_embedded: Also return the embedder's output documents (with their embeddings).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    components = dict(pipeline.walk())
    embedder = "embedder" if keep_embedded and "embedder" in components else None
    result = IndexingResult()
    with tqdm(total=len(documents), desc="Indexing", unit="doc", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(documents), batch_size):
            batch = documents[start : start + batch_size]
            outputs: dict[str, Any] = pipeline.run(
                indexing_inputs(pipeline, batch), include_outputs_from={embedder} if embedder else None
            )
            result.written += int(outputs.get("writer", {}).get("documents_written", 0))
            if embedder:
                result.embedded.extend(outputs.get(embedder, {}).get("documents") or [])
            bar.update(len(batch))
    return result
