"""Torch-free ONNX embedders of syntriever-haystack (also importable from ``syntriever_haystack``)."""

from haystack_integrations.components.embedders.syntriever.document_embedder import SyntrieverDocumentEmbedder
from haystack_integrations.components.embedders.syntriever.text_embedder import SyntrieverTextEmbedder

__all__ = ["SyntrieverDocumentEmbedder", "SyntrieverTextEmbedder"]
