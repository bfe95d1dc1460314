"""The served BM25 of syntriever-haystack: the evaluation's ``bm25`` over an in-memory document store."""

from haystack_integrations.components.retrievers.syntriever.bm25_retriever import SyntrieverBM25Retriever

__all__ = ["SyntrieverBM25Retriever"]
