"""One async client in front of any Haystack ChatGenerator: cache, concurrency, rate limits, retries, accounting.

``LLMClient.ask(template, variables)`` is the only way the generation code talks to an LLM:

1. the request (model id + rendered messages + generation parameters) is looked up in the SQLite cache;
2. on a miss it waits for a concurrency slot and for the requests/tokens-per-minute budget, then calls the
   generator's ``run_async`` (or ``run`` in a worker thread);
3. 429s, 5xx, 408/409, timeouts and dropped connections are retried with exponential backoff and jitter;
   a ``Retry-After`` / ``retry-after-ms`` header is honoured and pauses *all* requests until it expires;
4. the answer is parsed (:mod:`~syntriever_haystack.generate.parsing`); an unparseable answer is asked again
   (``parse_retries`` times, with a new cache key and temperature ≥ 0.5), then reported as a failure with
   its cause — never guessed;
5. calls, cache hits, tokens, cost, retries and failures are counted in :class:`Accounting`.

In ``collect`` mode (OpenAI Batch API) a cache miss is not sent: the request body is queued in ``pending`` and
:class:`Deferred` is raised; once the batch results are written into the cache, the same run completes.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import inspect
import json
import random
import time
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from haystack.dataclasses import ChatMessage

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.generate.accounting import Accounting
from syntriever_haystack.generate.cache import ResponseCache, cache_key
from syntriever_haystack.generate.parsing import ParseFailure, parse_answer
from syntriever_haystack.generate.prompts import PromptTemplate
from syntriever_haystack.generate.ratelimit import RateLimiter

# (setting, accepted type, allowed range) checked by LLMSettings; the CLI's argument types enforce the same ranges
_SETTING_RANGES: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("concurrency", int, "an integer >= 1"),
    ("requests_per_minute", (int, float), "a number > 0, or None"),
    ("tokens_per_minute", (int, float), "a number > 0, or None"),
    ("max_retries", int, "an integer >= 0"),
    ("backoff_initial_s", (int, float), "a number >= 0"),
    ("backoff_max_s", (int, float), "a number >= 0"),
    ("request_timeout_s", (int, float), "a number > 0, or None"),
    ("parse_retries", int, "an integer >= 0"),
)


@dataclass
class LLMSettings:
    """How requests are sent.

    :param concurrency: Requests in flight at once.
    :param requests_per_minute: Request budget per minute (``None``: unlimited).
    :param tokens_per_minute: Token budget per minute, estimated before and corrected after each call.
    :param max_retries: Re-sends of a request after a retryable error (429, 5xx, 408, 409, timeout, reset).
    :param backoff_initial_s: First backoff delay; doubles per retry (with jitter) up to ``backoff_max_s``.
    :param request_timeout_s: Give up waiting for one response after this long (then retry).
    :param parse_retries: New requests after an unparseable answer before it counts as a failure.
    :param structured_output: Ask for JSON with a JSON-schema ``response_format`` (OpenAI and compatible
        servers that support it); otherwise plain text with tolerant parsing.
    :param max_tokens_param: Name of the output-length parameter sent to the backend (``max_tokens``, or
        ``max_completion_tokens`` for OpenAI reasoning models).
    :param generation_kwargs: Extra parameters for every request (override a prompt's defaults).
    """

    concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 6
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    request_timeout_s: float | None = 120.0
    parse_retries: int = 2
    structured_output: bool = False
    max_tokens_param: str = "max_tokens"
    generation_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Reject values that would fail later (a traceback deep in the client) or silently do nothing."""
        problems = []
        for name, kind, allowed in _SETTING_RANGES:
            value = getattr(self, name)
            if value is None and "None" in allowed:
                continue
            typed = isinstance(value, kind) and not isinstance(value, bool)
            if not typed or not (value > 0 if "> 0" in allowed else value >= (1 if ">= 1" in allowed else 0)):
                problems.append(f"{name} must be {allowed} (got {value!r})")
        if problems:
            raise ValueError("Invalid LLM settings: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class Completion:
    """One raw completion (from the cache or the LLM)."""

    text: str | None
    finish_reason: str | None
    usage: dict[str, int]
    cached: bool
    key: str


@dataclass(frozen=True)
class Answer:
    """A parsed answer, or the reason there is none.

    :param value: Parsed value (``str``, ``bool`` or ``int``), ``None`` on failure.
    :param failure: Cause code when no answer could be had (``http_500``, ``timeout``, ``not_yes_no``, ...).
    :param prompt: ``name@version#digest`` of the template used.
    :param model: Model id of the backend.
    :param attempts: Requests made for this answer (parse retries included; cache hits count too).
    :param cached: Whether the accepted answer came from the cache.
    """

    value: Any
    text: str | None
    failure: str | None
    prompt: str
    model: str
    attempts: int
    cached: bool

    @property
    def ok(self) -> bool:
        return self.failure is None


class LLMCallError(SyntrieverError):
    """A request failed for good (non-retryable error, or retries exhausted); ``cause`` is counted."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


class Deferred(Exception):  # noqa: N818 - control flow, not an error
    """Collect mode: the request was queued for a batch job instead of being sent."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(float(lowered["retry-after-ms"]) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)


# Causes after which no further request can succeed (the key, the permission or the model/URL is wrong): the first
# one stops the run's remaining requests instead of spending the budget on the same answer.
FATAL_CAUSES = frozenset({"http_401", "http_403", "http_404"})


def classify_error(error: BaseException) -> tuple[bool, str, float | None]:
    """``(retryable, cause, retry_after_s)`` for an exception raised by a generator."""
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return True, "timeout", None
    if isinstance(error, json.JSONDecodeError):
        # a 200 whose body is not JSON (a proxy's error page, a cut connection): transient, like a 502
        return True, "bad_response", None
    if isinstance(error, AssertionError) and "Unexpected response type" in str(error):
        # the same with a non-JSON content type: the openai client hands back text, Haystack's generator asserts
        return True, "bad_response", None
    name = type(error).__name__
    status = getattr(error, "status_code", None)
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    retry_after = parse_retry_after(headers) if headers is not None else None
    if isinstance(status, int):
        if status == 429:
            return True, "rate_limited", retry_after
        if status >= 500 or status in (408, 409):
            return True, f"http_{status}", retry_after
        return False, f"http_{status}", None
    if "Timeout" in name:
        return True, "timeout", None
    if "Connection" in name or "RemoteProtocol" in name:
        return True, "connection", None
    if name == "APIResponseValidationError":
        return True, "bad_response", None
    return False, f"error:{name}", None


def _generator_model(generator: Any) -> str:
    for attribute in ("model", "model_name"):
        value = getattr(generator, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(generator).__name__


class LLMClient:
    """Async, cached, rate-limited access to one Haystack ChatGenerator.

    :param generator: Any Haystack chat generator (``run(messages, generation_kwargs)`` returning
        ``{"replies": [ChatMessage]}``), e.g. ``OpenAIChatGenerator`` (pass ``max_retries=0`` so retries are
        done here, with the accounting) or ``GGUFChatGenerator``.
    :param cache: Response cache; ``None`` disables caching (not recommended for real runs).
    :param settings: Concurrency, rate limits, retries, structured output.
    :param accounting: Counters shared by the run; a new one by default.
    :param model: Model id used in cache keys and price lookups (default: the generator's ``model``).
    :param mode: ``live`` sends requests; ``collect`` queues cache misses for the Batch API.
    :param sync_calls: Call the generator's synchronous ``run`` in worker threads even if it has ``run_async``
        (for clients reused across several ``asyncio.run`` calls: async HTTP clients are bound to one loop).

    Usage example::

        from haystack.components.generators.chat import OpenAIChatGenerator
        from haystack.utils import Secret
        from syntriever_haystack.generate import LLMClient, LLMSettings, ResponseCache, load_prompts

        generator = OpenAIChatGenerator(model="gpt-4o-mini", api_key=Secret.from_env_var("OPENAI_API_KEY"),
                                        max_retries=0)
        client = LLMClient(generator, cache=ResponseCache("runs/llm-cache.sqlite"),
                           settings=LLMSettings(concurrency=16, requests_per_minute=500))
        answer = await client.ask(load_prompts()["queries"], {"passage": text, "query_type": "question"})
    """

    def __init__(
        self,
        generator: Any,
        *,
        cache: ResponseCache | None = None,
        settings: LLMSettings | None = None,
        accounting: Accounting | None = None,
        model: str | None = None,
        mode: Literal["live", "collect"] = "live",
        sync_calls: bool = False,
    ) -> None:
        self.generator = generator
        self.cache = cache
        self.settings = settings or LLMSettings()
        self.accounting = accounting or Accounting()
        self.model = model or _generator_model(generator)
        self.mode = mode
        self.sync_calls = sync_calls
        self._executor: ThreadPoolExecutor | None = None
        self.pending: dict[str, dict[str, Any]] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._limiter: RateLimiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cooldown_until = 0.0
        self._warmed = False
        self._stopped: LLMCallError | None = None  # the failure that stopped the run's remaining requests
        self._answered = 0  # responses received (a server that answered once is reachable)

    @classmethod
    def open(
        cls,
        generator: Any,
        *,
        cache_path: str | Path | None,
        settings: LLMSettings,
        accounting: Accounting | None = None,
        sync_calls: bool = False,
    ) -> LLMClient:
        """The one way a command, a flow step or a component assembles its client: ``generator`` with a response
        cache at ``cache_path`` (``None``: no cache), ``settings`` and fresh accounting."""
        return cls(
            generator,
            cache=ResponseCache(cache_path) if cache_path is not None else None,
            settings=settings,
            accounting=accounting or Accounting(),
            sync_calls=sync_calls,
        )

    # ------------------------------------------------------------------------------------------- plumbing
    def _loop_state(self) -> tuple[asyncio.Semaphore, RateLimiter]:
        # created lazily inside the running loop (asyncio primitives bind to the loop that first uses them)
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            # a new event loop (a second asyncio.run): loop-bound primitives and the generator's async HTTP
            # client belong to the old, closed loop; continue with fresh primitives and synchronous calls
            self._semaphore = None
            self._limiter = None
            self.sync_calls = True
        self._loop = loop
        if self._semaphore is None or self._limiter is None:
            self._semaphore = asyncio.Semaphore(max(1, self.settings.concurrency))
            self._limiter = RateLimiter(
                requests_per_minute=self.settings.requests_per_minute,
                tokens_per_minute=self.settings.tokens_per_minute,
            )
        return self._semaphore, self._limiter

    def reset_loop_state(self) -> None:
        """Forget loop-bound primitives (call between two ``asyncio.run`` of the same client)."""
        self._semaphore = None
        self._limiter = None

    def warm_up(self) -> None:
        if not self._warmed and self.mode == "live" and hasattr(self.generator, "warm_up"):
            try:
                self.generator.warm_up()
            except ValueError as error:  # a local model file that cannot be loaded: one line, not a traceback
                if isinstance(error, SyntrieverError):
                    raise
                raise SyntrieverError(f"--llm {self.model}: {error}") from error
        self._warmed = True

    def request_kwargs(
        self, template: PromptTemplate | None, overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The generation parameters a request of ``template`` is sent with (prompt defaults < settings < overrides)."""
        kwargs: dict[str, Any] = dict(template.generation_kwargs) if template else {}
        kwargs.update(self.settings.generation_kwargs or {})
        kwargs.update(overrides or {})
        if "max_tokens" in kwargs and self.settings.max_tokens_param != "max_tokens":
            kwargs[self.settings.max_tokens_param] = kwargs.pop("max_tokens")
        return kwargs

    async def _invoke(self, messages: list[ChatMessage], kwargs: dict[str, Any]) -> ChatMessage | None:
        run_async = getattr(self.generator, "run_async", None)
        call: Any
        if not self.sync_calls and run_async is not None and inspect.iscoroutinefunction(run_async):
            call = run_async(messages=messages, generation_kwargs=kwargs)
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=max(1, self.settings.concurrency))
            run = functools.partial(self.generator.run, messages=messages, generation_kwargs=kwargs)
            call = asyncio.get_running_loop().run_in_executor(self._executor, run)
        timeout = self.settings.request_timeout_s
        result = await (asyncio.wait_for(call, timeout) if timeout else call)
        replies = result.get("replies") or []
        return replies[0] if replies else None

    async def _wait_for_cooldown(self) -> None:
        """Sleep until a server-requested pause (``Retry-After``) has expired; it may be extended meanwhile."""
        while (wait := self._cooldown_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    @property
    def stopped(self) -> LLMCallError | None:
        """The failure (401/403/404, or an unreachable server) that made the client stop sending, if any."""
        return self._stopped

    def _check_stopped(self, step: str) -> None:
        """Fail a request without sending it once the run was stopped by a failure no retry can fix."""
        stopped = self._stopped
        if stopped is not None:
            self.accounting.skip(step, stopped.cause)
            raise LLMCallError(stopped.cause, f"not sent: {stopped}")

    def _backoff(self, attempt: int) -> float:
        delay = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * (2**attempt))
        return delay * (0.5 + random.random() / 2)

    # ----------------------------------------------------------------------------------------------- calls
    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        step: str,
        generation_kwargs: Mapping[str, Any] | None = None,
        key_extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """One completion for ``messages`` (cache first). ``step`` names the counters it lands in.

        :raises LLMCallError: when the request fails for good.
        :raises Deferred: in ``collect`` mode, on a cache miss.
        """
        kwargs = dict(generation_kwargs or {})
        wire_messages = [{"role": m.role.value, "content": m.text or ""} for m in messages]
        key = cache_key(self.model, wire_messages, {**kwargs, **(key_extra or {})})
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.accounting.record(step, self.model, hit.usage, cached=True, batch=hit.batch)
                return Completion(hit.text, hit.finish_reason, hit.usage, cached=True, key=key)
        if self.mode == "collect":
            self.pending[key] = {"model": self.model, "messages": wire_messages, **kwargs}
            raise Deferred(key)
        self.warm_up()
        semaphore, limiter = self._loop_state()
        estimate = sum(len(m["content"]) for m in wire_messages) / 4 + float(
            kwargs.get(self.settings.max_tokens_param, kwargs.get("max_tokens", 256))
        )
        for attempt in range(self.settings.max_retries + 1):
            self._check_stopped(step)
            await self._wait_for_cooldown()
            handle = await limiter.acquire(estimate)
            async with semaphore:
                # a 429 with Retry-After may have arrived while this request waited for the limiter or a slot
                await self._wait_for_cooldown()
                self._check_stopped(step)
                try:
                    reply = await self._invoke(list(messages), dict(kwargs))
                except Exception as error:
                    if type(error).__name__ == "LengthFinishReasonError":
                        # openai's structured-output parse endpoint raises on a reply cut by the token limit
                        self.accounting.record(step, self.model, {}, cached=False)
                        return Completion(None, "length", {}, cached=False, key=key)
                    retryable, cause, retry_after = classify_error(error)
                    self.accounting.record_attempt_failure(step)
                    if not retryable or attempt == self.settings.max_retries:
                        self.accounting.fail(cause)
                        failure = LLMCallError(cause, f"LLM request failed ({cause}): {error}")
                        unreachable = cause == "connection" and self._answered == 0
                        if self._stopped is None and (cause in FATAL_CAUSES or unreachable):
                            self._stopped = failure
                            self.accounting.stop(cause, str(error))
                        raise failure from error
                    self.accounting.retry(cause)
                    delay = retry_after if retry_after is not None else self._backoff(attempt)
                    if retry_after is not None:
                        self._cooldown_until = max(self._cooldown_until, time.monotonic() + retry_after)
                    reply = None
                else:
                    self._answered += 1
                    meta = dict(reply.meta) if reply is not None else {}
                    usage = {k: int(v) for k, v in (meta.get("usage") or {}).items() if isinstance(v, int | float)}
                    limiter.settle(handle, usage.get("total_tokens", estimate))
                    text = reply.text if reply is not None else None
                    finish_reason = meta.get("finish_reason")
                    self.accounting.record(step, self.model, usage, cached=False)
                    if self.cache is not None:
                        self.cache.put(
                            key,
                            model=self.model,
                            prompt=step,
                            request={"messages": wire_messages, "params": kwargs},
                            text=text,
                            finish_reason=finish_reason,
                            usage=usage,
                            response_model=meta.get("model"),
                        )
                    return Completion(text, finish_reason, usage, cached=False, key=key)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def ask(
        self,
        template: PromptTemplate,
        variables: Mapping[str, Any],
        *,
        generation_kwargs: Mapping[str, Any] | None = None,
        sample: int = 0,
    ) -> Answer:
        """Ask ``template`` with ``variables`` and parse the answer; failures come back as ``Answer.failure``.

        :param sample: Index of an independent sample of the same request (e.g. the 2nd query of a passage);
            part of the cache key so that samples are cached separately.
        :raises Deferred: in ``collect`` mode when the answer is not cached yet.
        """
        structured = self.settings.structured_output
        messages = template.render(variables, structured=structured)
        base = self.request_kwargs(template, generation_kwargs)
        if structured:
            base["response_format"] = template.json_schema()
        failure = "empty"
        text: str | None = None
        attempts = 0
        for attempt in range(self.settings.parse_retries + 1):
            kwargs = dict(base)
            extra: dict[str, Any] = {"prompt": template.label}
            if sample:
                # independent samples must be distinct requests: a per-sample seed (offset from any user seed)
                kwargs["seed"] = int(kwargs.get("seed", 0)) + sample
            if attempt:
                extra["parse_retry"] = attempt
                kwargs["temperature"] = max(float(kwargs.get("temperature", 0.0)), 0.5)
            attempts += 1
            try:
                completion = await self.complete(
                    messages, step=template.name, generation_kwargs=kwargs, key_extra=extra
                )
            except LLMCallError as error:
                return Answer(None, None, error.cause, template.label, self.model, attempts, cached=False)
            text = completion.text
            try:
                value = parse_answer(template, completion.text, finish_reason=completion.finish_reason)
            except ParseFailure as error:
                failure = error.reason
                if attempt < self.settings.parse_retries:
                    self.accounting.retry(f"parse:{failure}")
                continue
            return Answer(value, text, None, template.label, self.model, attempts, cached=completion.cached)
        self.accounting.fail(failure)
        return Answer(None, text, failure, template.label, self.model, attempts, cached=False)


async def gather_answers(*calls: Awaitable[Answer]) -> list[Answer]:
    """Await every call; if any was deferred (Batch collect mode) re-raise after all have queued theirs."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    deferred = next((r for r in results if isinstance(r, Deferred)), None)
    if deferred is not None:
        raise deferred
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, Answer)]
