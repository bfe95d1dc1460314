"""Synthetic-data components: any chat model writes queries, passages and judgements; an offline GGUF model."""

from haystack_integrations.components.generators.syntriever.preference_judge import SyntrieverPreferenceJudge
from haystack_integrations.components.generators.syntriever.query_generator import SyntrieverQueryGenerator
from haystack_integrations.components.generators.syntriever.relevance_labeler import SyntrieverRelevanceLabeler
from haystack_integrations.components.generators.syntriever.training_example_generator import (
    SyntrieverTrainingExampleGenerator,
)

__all__ = [
    "GGUFChatGenerator",
    "SyntrieverPreferenceJudge",
    "SyntrieverQueryGenerator",
    "SyntrieverRelevanceLabeler",
    "SyntrieverTrainingExampleGenerator",
]


def __getattr__(name: str) -> object:
    # the GGUF generator imports torch/transformers lazily itself; keep this package import light
    if name == "GGUFChatGenerator":
        from haystack_integrations.components.generators.syntriever.gguf_chat_generator import GGUFChatGenerator

        return GGUFChatGenerator
    raise AttributeError(name)
