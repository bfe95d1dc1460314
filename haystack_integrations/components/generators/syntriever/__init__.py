"""LLM components of syntriever-haystack: synthetic-data generators and judges, and the embedded offline LLM."""

from haystack_integrations.components.generators.syntriever.gguf_chat_generator import (
    MODELS,
    GGUFChatGenerator,
    render_few_shot_prompt,
)
from haystack_integrations.components.generators.syntriever.preference_judge import SyntrieverPreferenceJudge
from haystack_integrations.components.generators.syntriever.query_generator import SyntrieverQueryGenerator
from haystack_integrations.components.generators.syntriever.relevance_labeler import SyntrieverRelevanceLabeler
from haystack_integrations.components.generators.syntriever.training_example_generator import (
    SyntrieverTrainingExampleGenerator,
)

__all__ = [
    "MODELS",
    "GGUFChatGenerator",
    "SyntrieverPreferenceJudge",
    "SyntrieverQueryGenerator",
    "SyntrieverRelevanceLabeler",
    "SyntrieverTrainingExampleGenerator",
    "render_few_shot_prompt",
]
