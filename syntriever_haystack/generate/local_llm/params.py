"""Options of the local chat model and its OpenAI-style generation parameters, validated once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LLM_LOCAL_HINT",
    "SUPPORTED_GENERATION_KWARGS",
    "Backend",
    "Generation",
    "GenerationParams",
    "Precision",
    "PromptFormat",
    "parse_generation_kwargs",
    "validate_options",
]

LLM_LOCAL_HINT = "pip install 'syntriever-haystack[llm-local]'"

Backend = Literal["auto", "transformers", "llama_cpp"]
PromptFormat = Literal["auto", "chat_template", "few_shot"]
Precision = Literal["fp32", "bf16"]


def validate_options(backend: str, prompt_format: str, precision: str) -> None:
    """
    Check the load options of a local chat model.

    :raises ValueError: On an unknown backend, prompt format or precision.
    """
    if backend not in ("auto", "transformers", "llama_cpp"):
        raise ValueError(f"Unknown backend {backend!r}; use 'auto', 'transformers' or 'llama_cpp'.")
    if prompt_format not in ("auto", "chat_template", "few_shot"):
        raise ValueError(f"Unknown prompt_format {prompt_format!r}; use 'auto', 'chat_template' or 'few_shot'.")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"Unknown precision {precision!r}; use 'fp32' or 'bf16'.")


@dataclass(frozen=True)
class GenerationParams:
    """Validated generation parameters (the OpenAI names understood by the local chat model)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


SUPPORTED_GENERATION_KWARGS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n")


def parse_generation_kwargs(kwargs: Mapping[str, Any] | None) -> GenerationParams:
    """
    Validate OpenAI-style generation kwargs.

    :param kwargs: ``max_tokens`` (or ``max_completion_tokens``; default 256), ``temperature`` (0 ⇒ greedy, the
        default), ``top_p``, ``seed``, ``stop`` (a string or a list of strings), ``n`` (only 1).
    :returns: The parameters.
    :raises ValueError: On an unknown key, ``n`` other than 1, or an out-of-range value.
    """
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - set(SUPPORTED_GENERATION_KWARGS))
    if unknown:
        raise ValueError(
            f"GGUFChatGenerator does not understand the generation kwargs {unknown}; "
            f"supported: {list(SUPPORTED_GENERATION_KWARGS)}."
        )
    n = kwargs.get("n", 1)
    if n is not None and int(n) != 1:
        raise ValueError(
            f"GGUFChatGenerator returns one reply per request (n=1); got n={n}. "
            "Send several requests with different seeds instead."
        )
    max_tokens = kwargs.get("max_tokens", kwargs.get("max_completion_tokens"))
    max_tokens = 256 if max_tokens is None else int(max_tokens)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1; got {max_tokens}.")
    temperature = float(kwargs.get("temperature") or 0.0)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy decoding); got {temperature}.")
    top_p = kwargs.get("top_p")
    if top_p is not None:
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1]; got {top_p}.")
    seed = kwargs.get("seed")
    stop = kwargs.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not all(isinstance(s, str) for s in stop):
        raise ValueError(f"stop must be a string or a list of strings; got {stop!r}.")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=None if seed is None else int(seed),
        stop=tuple(s for s in stop if s),
    )


@dataclass(frozen=True)
class Generation:
    """One completion from a backend."""

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
