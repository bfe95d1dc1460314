"""syntriever-haystack: synthetic-data-trained retrievers and rerankers, exported to ONNX, served in Haystack.

Layout (the flow of the product): ``generate`` → ``train`` → ``export`` → ``serve`` → ``evaluate``.
The serving components are torch-free and are imported lazily, so ``import syntriever_haystack`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from syntriever_haystack._version import __version__

_LAZY = {
    "SyntrieverTextEmbedder": "haystack_integrations.components.embedders.syntriever",
    "SyntrieverDocumentEmbedder": "haystack_integrations.components.embedders.syntriever",
    "SyntrieverRanker": "haystack_integrations.components.rankers.syntriever",
    "SyntrieverBM25Retriever": "haystack_integrations.components.retrievers.syntriever",
    "SyntrieverInMemoryDocumentStore": "haystack_integrations.document_stores.syntriever",
    "SyntrieverRetrievalEvaluator": "haystack_integrations.components.evaluators.syntriever",
    "ModelMetadata": "syntriever_haystack.runtime.metadata",
    "OnnxModel": "syntriever_haystack.runtime.onnx_model",
}

__all__ = [*sorted(_LAZY), "__version__"]

if TYPE_CHECKING:
    from haystack_integrations.components.embedders.syntriever import (
        SyntrieverDocumentEmbedder,
        SyntrieverTextEmbedder,
    )
    from haystack_integrations.components.evaluators.syntriever import SyntrieverRetrievalEvaluator
    from haystack_integrations.components.rankers.syntriever import SyntrieverRanker
    from haystack_integrations.components.retrievers.syntriever import SyntrieverBM25Retriever
    from haystack_integrations.document_stores.syntriever import SyntrieverInMemoryDocumentStore
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.runtime.onnx_model import OnnxModel


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'syntriever_haystack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
