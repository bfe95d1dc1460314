"""A self-loading in-memory document store of syntriever-haystack (Haystack YAML pipelines that answer when loaded)."""

from haystack_integrations.document_stores.syntriever.document_store import SyntrieverInMemoryDocumentStore

__all__ = ["SyntrieverInMemoryDocumentStore"]
