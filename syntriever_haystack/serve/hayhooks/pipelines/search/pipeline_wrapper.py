"""Hayhooks wrapper of the ``search`` pipeline: the saved query pipeline named by ``SYNTRIEVER_PIPELINE`` (or
``$SYNTRIEVER_RUN/pipelines/query.yaml``) served as ``POST /search/run``, without torch.

Hayhooks loads this file from its pipelines folder (``syntriever_haystack.serve.hayhooks.PIPELINES_DIR``); the
behaviour lives in :class:`syntriever_haystack.serve.hayhooks.search.SearchWrapper`, documented there and in
docker/README.md.
"""

from __future__ import annotations

from syntriever_haystack.serve.hayhooks.search import SearchWrapper


class PipelineWrapper(SearchWrapper):
    """Hybrid retrieval (BM25 + dense, fused), reranked when the saved pipeline has a ranker."""
