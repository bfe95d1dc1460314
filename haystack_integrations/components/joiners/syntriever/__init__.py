"""Score fusion for hybrid retrieval in syntriever-haystack's served query pipelines."""

from haystack_integrations.components.joiners.syntriever.score_fusion_joiner import SyntrieverScoreFusionJoiner

__all__ = ["SyntrieverScoreFusionJoiner"]
