"""``LocalChatModel``: a small GGUF model answering Haystack chat messages in-process, offline, on CPU.

Everything the ``GGUFChatGenerator`` Haystack component does at run time happens here: resolving the model
(:mod:`.registry`), choosing and loading a backend (:mod:`.backends`), choosing the prompt format
(:mod:`.prompting`), and answering ``run(messages, generation_kwargs)`` with ``{"replies": [ChatMessage]}`` whose
``meta`` has the keys of Haystack's ``OpenAIChatGenerator`` (``model``, ``index``, ``finish_reason``, ``usage``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from haystack.dataclasses import ChatMessage

from syntriever_haystack.generate.local_llm import backends
from syntriever_haystack.generate.local_llm.params import (
    Backend,
    Precision,
    PromptFormat,
    parse_generation_kwargs,
    validate_options,
)
from syntriever_haystack.generate.local_llm.registry import default_cache_dir, resolve_model

__all__ = ["LocalChatModel"]

logger = logging.getLogger(__name__)

Engine = backends.TransformersBackend | backends.LlamaCppBackend


class LocalModelError(ValueError):
    """The local model file exists but cannot be loaded (corrupt, truncated, unsupported)."""


class LocalChatModel:
    """
    A local chat model: one model loaded on first use, calls serialised (a 270M model keeps both cores busy).

    :param model: A registry name (``"gemma3-270m"``, ``"smollm2-135m"``), a path to a ``.gguf`` file, or a
        path to a transformers causal-LM directory.
    :param backend: ``"transformers"``, ``"llama_cpp"`` or ``"auto"`` (llama_cpp for GGUF files when it is
        importable, else transformers).
    :param generation_kwargs: Defaults for every request (see
        :func:`~syntriever_haystack.generate.local_llm.params.parse_generation_kwargs`); per-run kwargs
        override them per key.
    :param n_threads: CPU threads (for transformers: torch's process-wide thread count).
    :param cache_dir: Where assembled GGUF files and converted models are kept (default:
        :func:`~syntriever_haystack.generate.local_llm.registry.default_cache_dir`).
    :param prompt_format: ``"chat_template"``, ``"few_shot"`` or ``"auto"`` (the chat template of instruct
        models that have one, else a few-shot transcript).
    :param precision: Weights of the transformers backend, ``"fp32"`` or ``"bf16"``.
    :raises ValueError: On an unknown backend, prompt format or precision, or invalid generation kwargs.
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
        validate_options(backend, prompt_format, precision)
        parse_generation_kwargs(generation_kwargs)
        self.model = str(model)
        self.backend = backend
        self.generation_kwargs = dict(generation_kwargs or {})
        self.n_threads = n_threads
        self.cache_dir = cache_dir
        self.prompt_format = prompt_format
        self.precision = precision
        self._engine: Engine | None = None
        self._few_shot = True
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the model (assembling / converting it into the cache on first use). Idempotent."""
        with self._lock:
            self._load()

    def _load(self) -> Engine:
        if self._engine is not None:
            return self._engine
        started = time.perf_counter()
        cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
        resolved = resolve_model(self.model, cache_dir)
        use_llama_cpp = self.backend == "llama_cpp" or (
            self.backend == "auto" and resolved.kind == "gguf" and backends.llama_cpp_available()
        )
        loaded: Engine
        try:
            if use_llama_cpp:
                loaded = backends.LlamaCppBackend(resolved, self.n_threads)
            else:
                loaded = backends.TransformersBackend(resolved, cache_dir, self.n_threads, self.precision)
        except (ValueError, RuntimeError, OSError, KeyError, IndexError) as error:
            # the loaders' own messages ("Failed to load model from file", a KeyError on a GGUF field) are
            # tracebacks to the user: one line naming the file instead
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise LocalModelError(
                f"Cannot load the local model {resolved.path} ({detail}): the file is corrupt, truncated or not a "
                "supported model; download it again, or use a registry model such as local:gemma3-270m."
            ) from error
        template = loaded.chat_template
        if self.prompt_format == "chat_template":
            if not template:
                raise ValueError(f"Model {self.model!r} has no chat template; use prompt_format='few_shot'.")
            self._few_shot = False
        elif self.prompt_format == "few_shot":
            self._few_shot = True
        else:
            instruct = resolved.instruct if resolved.instruct is not None else bool(template)
            self._few_shot = not (instruct and template)
        self._engine = loaded
        logger.info(
            "Loaded %s with the %s backend in %.1f s (%s prompts)",
            self.model,
            loaded.name,
            time.perf_counter() - started,
            "few-shot" if self._few_shot else "chat-template",
        )
        return loaded

    @property
    def engine(self) -> Engine | None:
        """The loaded backend (its ``model`` / ``tokenizer`` or ``llm``), ``None`` before loading."""
        return self._engine

    @property
    def loaded_backend(self) -> str | None:
        """``"transformers"`` or ``"llama_cpp"`` once loaded, else ``None``."""
        return None if self._engine is None else self._engine.name

    def run(
        self, messages: list[ChatMessage] | str, generation_kwargs: dict[str, Any] | None = None
    ) -> dict[str, list[ChatMessage]]:
        """
        Generate one reply (loading the model first if needed).

        :param messages: The conversation (system, user and assistant messages; the last one a user message),
            or a string, taken as one user message.
        :param generation_kwargs: Overrides of the init ``generation_kwargs``, per key.
        :returns: ``{"replies": [ChatMessage]}``: one assistant message whose ``meta`` has ``model``, ``index``
            (0), ``finish_reason`` (``"stop"``, or ``"length"`` when ``max_tokens`` was hit) and ``usage``
            (``prompt_tokens``, ``completion_tokens``, ``total_tokens``).
        :raises ValueError: On invalid generation kwargs (unknown key, ``n`` > 1) or messages.
        """
        if isinstance(messages, str):
            messages = [ChatMessage.from_user(messages)]
        params = parse_generation_kwargs({**self.generation_kwargs, **(generation_kwargs or {})})
        with self._lock:
            engine = self._load()
            result = engine.generate(messages, self._few_shot, params)
        meta = {
            "model": self.model,
            "index": 0,
            "finish_reason": result.finish_reason,
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }
        return {"replies": [ChatMessage.from_assistant(result.text, meta=meta)]}

    async def run_async(
        self, messages: list[ChatMessage] | str, generation_kwargs: dict[str, Any] | None = None
    ) -> dict[str, list[ChatMessage]]:
        """Asynchronous :meth:`run`: generation runs in a worker thread; calls are serialised on the one model."""
        return await asyncio.to_thread(self.run, messages, generation_kwargs)
