"""Hayhooks wrapper: syntriever's query pipeline served as ``POST /search/run``, without torch.

BM25 and dense retrieval fused by reciprocal rank fusion, then reranked by a ``SyntrieverRanker`` when a reranker
is configured: :func:`syntriever_haystack.serve.pipelines.query_pipeline`, the pipeline ``syntriever search``
runs. This file only reads the environment, opens the document store and shapes the HTTP answer.

Environment (docker/README.md has the details):

- ``SYNTRIEVER_EMBEDDER`` (required): folder written by ``syntriever export`` for the bi-encoder the documents
  were indexed with.
- ``SYNTRIEVER_RANKER``: folder of an exported cross-encoder; unset or empty means no reranking.
- ``SYNTRIEVER_PRECISION``: ``fp32`` (default) or ``int8`` ONNX models.
- ``SYNTRIEVER_CANDIDATES``: fused documents handed to the reranker (default: all of them, up to 100).
- ``OPENSEARCH_URL``: serve from this OpenSearch cluster, index ``SYNTRIEVER_INDEX`` (default ``syntriever``),
  which must exist and fit the embedder (``syntriever index --store opensearch`` creates it). Credentials come
  from ``OPENSEARCH_USERNAME`` / ``OPENSEARCH_PASSWORD``; TLS certificates are verified unless
  ``OPENSEARCH_VERIFY_CERTS=false``; ``OPENSEARCH_CA_CERTS`` names a CA bundle for a private authority.
- ``SYNTRIEVER_DOCUMENTS``: without ``OPENSEARCH_URL``, the in-memory store file written by
  ``syntriever index --store memory --store-path FILE``.

Start-up fails, and Hayhooks does not serve, when a model folder, the index or the store file is missing or does
not fit the embedder.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from hayhooks import BasePipelineWrapper, log
from pydantic import Field

from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.serve.pipelines import query_pipeline, run_query

DEFAULT_INDEX = "syntriever"
MAX_TOP_K = 100


def _env(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None


def _flag(name: str, default: bool) -> bool:
    value = (_env(name) or "").lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


def _document_store(metadata: ModelMetadata) -> Any:
    """OpenSearch when ``OPENSEARCH_URL`` is set, else the in-memory store file ``SYNTRIEVER_DOCUMENTS``."""
    url = _env("OPENSEARCH_URL")
    if url:
        from syntriever_haystack.opensearch.connection import OpenSearchConnection
        from syntriever_haystack.opensearch.errors import opensearch_errors
        from syntriever_haystack.opensearch.store import opensearch_document_store

        connection = OpenSearchConnection(
            url=url, verify_certs=_flag("OPENSEARCH_VERIFY_CERTS", True), ca_certs=_env("OPENSEARCH_CA_CERTS")
        )
        with opensearch_errors(connection.url):  # create=False: a missing index is an error, not an empty answer
            return opensearch_document_store(
                connection, _env("SYNTRIEVER_INDEX") or DEFAULT_INDEX, metadata, create=False
            )
    path = _env("SYNTRIEVER_DOCUMENTS")
    if not path:
        raise RuntimeError(
            "No document store: set OPENSEARCH_URL (and SYNTRIEVER_INDEX), or SYNTRIEVER_DOCUMENTS to a store file "
            "written by `syntriever index --store memory --store-path FILE`."
        )
    from syntriever_haystack.serve.memory_store import check_memory_store, load_memory_store

    store, record = load_memory_store(path)
    check_memory_store(store, record, metadata, label=f"store file {path}")
    return store


class PipelineWrapper(BasePipelineWrapper):
    """Hybrid retrieval (BM25 + dense, reciprocal rank fusion) with optional cross-encoder reranking."""

    def setup(self) -> None:
        embedder = _env("SYNTRIEVER_EMBEDDER")
        if not embedder:
            raise RuntimeError("SYNTRIEVER_EMBEDDER is not set: point it at an exported bi-encoder folder.")
        ranker = _env("SYNTRIEVER_RANKER")
        candidates = _env("SYNTRIEVER_CANDIDATES")
        store = _document_store(ModelMetadata.load(embedder))
        self.pipeline = query_pipeline(
            store,
            embedder,
            ranker,
            top_k=MAX_TOP_K,
            candidates=int(candidates) if candidates else None,
            precision=_env("SYNTRIEVER_PRECISION") or "fp32",
        )
        self.pipeline.warm_up()  # load the ONNX models now, not on the first request
        log.info("search: {} documents, embedder {}, reranker {}", store.count_documents(), embedder, ranker)

    def run_api(
        self,
        query: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"\S")],
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 5,
    ) -> list[dict]:
        """
        Search the indexed documents.

        :param query: The user's question or keywords.
        :param top_k: How many documents to return (1-100).
        :returns: The best documents first: id, content, score and meta (title, source_id of a chunk, ...).
        """
        documents = run_query(self.pipeline, query)[:top_k]
        return [{"id": doc.id, "content": doc.content, "score": doc.score, "meta": doc.meta} for doc in documents]
