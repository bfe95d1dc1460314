"""OpenSearch: connection, index management, ML Commons models and pipelines (needs the ``opensearch`` extra)."""

from syntriever_haystack.opensearch.connection import OpenSearchConnection

__all__ = ["OpenSearchConnection"]
