"""Torch-free ONNX cross-encoder ranker of syntriever-haystack (also importable from ``syntriever_haystack``)."""

from haystack_integrations.components.rankers.syntriever.ranker import SyntrieverRanker

__all__ = ["SyntrieverRanker"]
