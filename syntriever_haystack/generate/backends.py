"""Which chat model writes the data: an ``--llm`` spec (:class:`~syntriever_haystack.specs.LLMSpec`) → a chat model.

- ``local`` / ``local:gemma3-270m`` / ``local:smollm2-135m`` / ``local:PATH.gguf``: the embedded offline model
  (:class:`~syntriever_haystack.generate.local_llm.LocalChatModel`, the engine of the ``GGUFChatGenerator``
  Haystack component), with optional ``?backend=transformers|llama_cpp&precision=fp32|bf16&n_threads=N``.
- ``openai:MODEL`` (or just ``MODEL``): :class:`haystack.components.generators.chat.OpenAIChatGenerator`, for
  OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp server, TGI) via ``api_base_url``.
  The API key is read from an environment variable through a Haystack ``Secret`` and never written anywhere.

Either object is what :class:`~syntriever_haystack.generate.llm.LLMClient` takes: ``model``, ``warm_up()``,
``run(messages, generation_kwargs)`` and ``run_async(...)`` returning ``{"replies": [ChatMessage]}``.
"""

from __future__ import annotations

import os
from typing import Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.generate.local_llm.model import LocalChatModel
from syntriever_haystack.specs import LLMSpec


class GGUFChatGenerator(LocalChatModel):
    """The local chat model :func:`make_generator` returns (a library object, not the Haystack component).

    Named like the component it replaced here so that the ``generator`` recorded in provenance
    (``type(client.generator).__name__``) stays ``"GGUFChatGenerator"`` for local runs.
    """


def make_generator(
    spec: LLMSpec | str,
    *,
    api_base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout_s: float | None = None,
) -> Any:
    """
    Build the chat model named by ``spec`` (see the module docstring).

    :param spec: A parsed :class:`~syntriever_haystack.specs.LLMSpec`, or its text (parsed with ``api_base_url``,
        ``api_key_env`` and ``timeout_s``; an ``LLMSpec`` carries its own and these keywords are not used).
    :raises SyntrieverError: On an invalid spec (:class:`~syntriever_haystack.specs.LLMSpecError`), invalid
        local-model options, or no API key for an OpenAI model.
    """
    text = spec if isinstance(spec, str) else str(spec)
    if isinstance(spec, str):
        spec = LLMSpec.parse(spec, api_base_url=api_base_url, api_key_env=api_key_env, timeout_s=timeout_s)
    if spec.is_local:
        options: dict[str, Any] = spec.local_options()
        try:
            return GGUFChatGenerator(model=spec.model, **options)
        except ValueError as error:
            raise SyntrieverError(f"--llm {text!r}: {error}") from error
    return _openai_generator(spec)


def _openai_generator(spec: LLMSpec) -> Any:
    try:
        from haystack.components.generators.chat import OpenAIChatGenerator
        from haystack.utils import Secret
    except ImportError as error:  # pragma: no cover
        raise SyntrieverError("OpenAI-compatible models need `pip install 'syntriever-haystack[llm]'`.") from error
    if os.environ.get(spec.api_key_env):
        secret = Secret.from_env_var(spec.api_key_env)
    elif spec.api_base_url:
        # self-hosted OpenAI-compatible servers often need no key; the client still wants one
        secret = Secret.from_token("unused")
    else:
        raise SyntrieverError(
            f"No API key: set {spec.api_key_env} (or choose another variable with --api-key-env), or point "
            "--api-base-url at an OpenAI-compatible server."
        )
    return OpenAIChatGenerator(
        api_key=secret,
        model=spec.model,
        api_base_url=spec.api_base_url,
        timeout=spec.timeout_s,
        max_retries=0,  # retries (with Retry-After, backoff and accounting) are done by LLMClient
    )
