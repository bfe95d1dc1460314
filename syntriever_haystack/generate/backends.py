"""Which chat model writes the data: ``--llm`` spec → a Haystack ChatGenerator.

- ``local`` / ``local:gemma3-270m`` / ``local:smollm2-135m`` / ``local:PATH.gguf``: the embedded offline model
  (:class:`~haystack_integrations.components.generators.syntriever.GGUFChatGenerator`), with optional
  ``?backend=transformers|llama_cpp&precision=fp32|bf16&n_threads=N``.
- ``openai:MODEL`` (or just ``MODEL``): :class:`haystack.components.generators.chat.OpenAIChatGenerator`, for
  OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp server, TGI) via ``api_base_url``.
  The API key is read from an environment variable through a Haystack ``Secret`` and never written anywhere.
"""

from __future__ import annotations

import os
from typing import Any

from syntriever_haystack.errors import SyntrieverError

_LOCAL_OPTIONS = {"backend", "precision", "prompt_format", "n_threads"}


def make_generator(
    spec: str,
    *,
    api_base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout_s: float | None = None,
) -> Any:
    """Build the chat generator named by ``spec`` (see the module docstring)."""
    kind, _, name = spec.partition(":")
    if kind == "local":
        try:
            from haystack_integrations.components.generators.syntriever.gguf_chat_generator import GGUFChatGenerator
        except ImportError as error:  # pragma: no cover - depends on the installed extras
            raise SyntrieverError(
                f"The local LLM needs extra packages ({error}); install them with "
                "pip install 'syntriever-haystack[llm-local]'."
            ) from error
        model_name, _, query = name.partition("?")
        options: dict[str, Any] = {}
        for part in filter(None, query.split("&")):
            key, sep, value = part.partition("=")
            if not sep or key not in _LOCAL_OPTIONS:
                raise SyntrieverError(
                    f"--llm {spec!r}: options after '?' are {sorted(_LOCAL_OPTIONS)} as name=value, "
                    "e.g. local:gemma3-270m?backend=transformers&precision=bf16."
                )
            options[key] = int(value) if key == "n_threads" else value
        try:
            return GGUFChatGenerator(model=model_name or "gemma3-270m", **options)
        except ValueError as error:
            raise SyntrieverError(f"--llm {spec!r}: {error}") from error
    model = name if kind == "openai" else spec
    if not model:
        raise SyntrieverError("--llm openai: needs a model name, e.g. --llm openai:gpt-4o-mini.")
    try:
        from haystack.components.generators.chat import OpenAIChatGenerator
        from haystack.utils import Secret
    except ImportError as error:  # pragma: no cover
        raise SyntrieverError("OpenAI-compatible models need `pip install 'syntriever-haystack[llm]'`.") from error
    if os.environ.get(api_key_env):
        secret = Secret.from_env_var(api_key_env)
    elif api_base_url:
        # self-hosted OpenAI-compatible servers often need no key; the client still wants one
        secret = Secret.from_token("unused")
    else:
        raise SyntrieverError(
            f"No API key: set {api_key_env} (or choose another variable with --api-key-env), or point --api-base-url "
            "at an OpenAI-compatible server."
        )
    return OpenAIChatGenerator(
        api_key=secret,
        model=model,
        api_base_url=api_base_url,
        timeout=timeout_s,
        max_retries=0,  # retries (with Retry-After, backoff and accounting) are done by LLMClient
    )
