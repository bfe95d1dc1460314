"""What the generation components share: an LLMClient around any ChatGenerator, serialisation, sync/async."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from haystack import default_from_dict, default_to_dict
from haystack.core.serialization import component_to_dict
from haystack.utils.deserialization import deserialize_chatgenerator_inplace

from syntriever_haystack.generate.llm import LLMClient, LLMSettings
from syntriever_haystack.generate.prompts import PromptTemplate, load_prompts

T = TypeVar("T")


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from synchronous code, also when called inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))  # type: ignore[arg-type]
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


class LLMComponentMixin:
    """Plain attributes + lazy :class:`LLMClient` for components that call a chat model.

    Subclasses call :meth:`_init_llm` from their keyword-only ``__init__`` and list their own extra init
    parameters in ``_extra_init_parameters`` for :meth:`to_dict`.
    """

    _extra_init_parameters: tuple[str, ...] = ()

    def _init_llm(
        self,
        *,
        chat_generator: Any,
        prompts: dict[str, dict[str, Any]] | None,
        cache_path: str | None,
        concurrency: int,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        max_retries: int,
        parse_retries: int,
        structured_output: bool,
        generation_kwargs: dict[str, Any] | None,
    ) -> None:
        self.chat_generator = chat_generator
        self.prompts = prompts
        self.cache_path = cache_path
        self.concurrency = concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.max_retries = max_retries
        self.parse_retries = parse_retries
        self.structured_output = structured_output
        self.generation_kwargs = generation_kwargs
        self._templates: dict[str, PromptTemplate] = load_prompts(prompts)
        self._client: LLMClient | None = None

    def warm_up(self) -> None:
        """Warm the chat generator and open the response cache (idempotent)."""
        if self._client is not None:
            return
        if hasattr(self.chat_generator, "warm_up"):
            self.chat_generator.warm_up()
        self._client = LLMClient.open(
            self.chat_generator,
            cache_path=self.cache_path or None,
            settings=LLMSettings(
                concurrency=self.concurrency,
                requests_per_minute=self.requests_per_minute,
                tokens_per_minute=self.tokens_per_minute,
                max_retries=self.max_retries,
                parse_retries=self.parse_retries,
                structured_output=self.structured_output,
                generation_kwargs=self.generation_kwargs,
            ),
        )

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            self.warm_up()
        assert self._client is not None
        return self._client

    def _llm_init_parameters(self) -> dict[str, Any]:
        return {
            "chat_generator": (
                component_to_dict(obj=self.chat_generator, name="chat_generator")
                if self.chat_generator is not None
                else None
            ),
            "prompts": self.prompts,
            "cache_path": self.cache_path,
            "concurrency": self.concurrency,
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "max_retries": self.max_retries,
            "parse_retries": self.parse_retries,
            "structured_output": self.structured_output,
            "generation_kwargs": self.generation_kwargs,
        }

    def to_dict(self) -> dict[str, Any]:
        extra = {name: getattr(self, name) for name in self._extra_init_parameters}
        return default_to_dict(self, **self._llm_init_parameters(), **extra)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        if data["init_parameters"].get("chat_generator") is not None:
            deserialize_chatgenerator_inplace(data["init_parameters"], key="chat_generator")
        return default_from_dict(cls, data)

    def _reset_client_loop(self) -> None:
        if self._client is not None:
            self._client.reset_loop_state()
