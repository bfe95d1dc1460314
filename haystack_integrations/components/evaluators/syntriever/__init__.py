"""IR-metric evaluator of syntriever-haystack (also importable from ``syntriever_haystack``)."""

from haystack_integrations.components.evaluators.syntriever.retrieval_evaluator import SyntrieverRetrievalEvaluator

__all__ = ["SyntrieverRetrievalEvaluator"]
