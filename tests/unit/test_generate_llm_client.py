"""LLMClient with the real Haystack OpenAIChatGenerator against the scripted OpenAI-compatible server.

Cache, retries (429 + Retry-After, 5xx, timeouts, dropped connections), non-retryable errors, parse retries,
structured output, concurrency, Batch collect mode and per-sample seeds — asserted on counts and behaviour.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.utils import Secret

from syntriever_haystack.generate.cache import ResponseCache
from syntriever_haystack.generate.llm import (
    Answer,
    Deferred,
    LLMClient,
    LLMSettings,
    classify_error,
    parse_retry_after,
)
from syntriever_haystack.generate.prompts import load_prompts
from tests.support.fake_openai import FakeOpenAIServer, Fault
from tests.support.scripted_llm import syntriever_responder

pytestmark = pytest.mark.loopback

PROMPTS = load_prompts()
T = TypeVar("T")

QUERY = "what causes iron deficiency anemia"
RELEVANT = "Iron deficiency anemia causes: blood loss, low iron diet, poor absorption."
VERIFY_VARS = {"query": QUERY, "passage": RELEVANT}


class TimedServer(FakeOpenAIServer):
    """The fake server, also recording when each chat request arrived (monotonic clock)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[float] = []

    def _chat(self, h: Any, body: bytes) -> None:
        self.arrivals.append(time.monotonic())
        super()._chat(h, body)


@pytest.fixture
def server() -> Iterator[TimedServer]:
    fake = TimedServer(syntriever_responder)
    with fake:  # (__enter__ is typed as returning the base class)
        yield fake


def make_client(server: FakeOpenAIServer, *, cache: ResponseCache | None = None, **settings: Any) -> LLMClient:
    generator = OpenAIChatGenerator(
        api_key=Secret.from_token("test"),
        api_base_url=server.url,
        model="fake-model",
        max_retries=0,
        timeout=10.0,
    )
    options: dict[str, Any] = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_retries": 3}
    options.update(settings)
    cache = cache if cache is not None else ResponseCache(":memory:")  # (an empty cache is falsy: len 0)
    return LLMClient(generator, cache=cache, settings=LLMSettings(**options))


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


# ------------------------------------------------------------------------------------------- happy path


def test_answers_are_parsed_and_the_second_ask_is_a_cache_hit(server: TimedServer, tmp_path: Path) -> None:
    client = make_client(server, cache=ResponseCache(tmp_path / "cache.sqlite"))

    async def main() -> list[Answer]:
        first = await client.ask(PROMPTS["verify"], VERIFY_VARS)
        passage = await client.ask(PROMPTS["positive_passage"], {"query": QUERY})
        choice = await client.ask(
            PROMPTS["preference"], {"query": QUERY, "passage_1": "Unrelated text about music.", "passage_2": RELEVANT}
        )
        requests_before = len(server.requests)
        again = await client.ask(PROMPTS["verify"], VERIFY_VARS)
        assert len(server.requests) == requests_before  # zero new requests
        return [first, passage, choice, again]

    first, passage, choice, again = run(main())
    assert first.ok
    assert first.value is True
    assert first.text == "yes"
    assert first.prompt == PROMPTS["verify"].label
    assert first.model == "fake-model"
    assert (first.attempts, first.cached) == (1, False)
    assert isinstance(passage.value, str)
    assert "iron" in passage.value
    assert choice.value == 2
    assert again.value is True
    assert again.cached is True
    assert again.attempts == 1
    assert len(server.requests) == 3
    acc = client.accounting
    assert acc.calls == 3
    assert acc.cache_hits == 1
    assert acc.steps["verify"].calls == 1
    assert acc.steps["verify"].cache_hits == 1
    assert acc.summary()["prompt_tokens"] > 0
    assert not acc.failures
    assert not acc.retries
    # what went over the wire: the rendered prompt and the prompt's generation parameters
    body = server.requests[0]
    assert body["model"] == "fake-model"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 8
    assert "response_format" not in body
    # the cache persists: a new client on the same file answers without the server
    client.cache.close()  # type: ignore[union-attr]
    fresh = make_client(server, cache=ResponseCache(tmp_path / "cache.sqlite"))
    answer = run(fresh.ask(PROMPTS["verify"], VERIFY_VARS))
    assert answer.value is True
    assert answer.cached
    assert len(server.requests) == 3
    assert fresh.accounting.calls == 0
    assert fresh.accounting.cache_hits == 1


def test_generation_kwargs_and_max_tokens_param(server: TimedServer) -> None:
    client = make_client(server, max_tokens_param="max_completion_tokens", generation_kwargs={"top_p": 0.9})
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS, generation_kwargs={"temperature": 0.2}))
    assert answer.ok
    body = server.requests[-1]
    assert body["max_completion_tokens"] == 8
    assert "max_tokens" not in body
    assert body["top_p"] == 0.9
    assert body["temperature"] == 0.2


# --------------------------------------------------------------------------------------------- retries


def test_429_with_retry_after_is_retried_after_waiting(server: TimedServer) -> None:
    client = make_client(server)
    server.inject(Fault("status", status=429, retry_after=0.2))
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert answer.ok
    assert answer.value is True
    assert answer.attempts == 1  # a transport retry is not a new parse attempt
    assert len(server.requests) == 2
    assert client.accounting.retries == {"rate_limited": 1}
    assert not client.accounting.failures
    assert client.accounting.calls == 2  # the 429 reached the server: it counts as a call
    # the backoff is 0.01 s: only Retry-After explains the pause between the two arrivals
    assert server.arrivals[1] - server.arrivals[0] >= 0.15


def test_retry_after_also_pauses_requests_waiting_for_a_slot(server: TimedServer) -> None:
    """Requests queued behind the one that got the 429 must not be sent before its Retry-After has expired."""
    client = make_client(server, concurrency=1)
    server.inject(Fault("status", status=429, retry_after=0.4))

    async def main() -> list[Answer]:
        asks = (client.ask(PROMPTS["cot"], {"query": f"question {i} here"}) for i in range(3))
        return list(await asyncio.gather(*asks))

    answers = run(main())
    assert all(a.ok for a in answers)
    assert len(server.requests) == 4  # the 429, its retry and the two queued requests
    assert client.accounting.retries == {"rate_limited": 1}
    # the two requests that were waiting for the (single) slot when the 429 came in waited for Retry-After too
    assert all(t - server.arrivals[0] >= 0.35 for t in server.arrivals[1:]), server.arrivals


def test_5xx_then_success_is_retried(server: TimedServer) -> None:
    client = make_client(server)
    server.inject(Fault("status", status=500), Fault("status", status=503))
    answer = run(client.ask(PROMPTS["positive_passage"], {"query": QUERY}))
    assert answer.ok
    assert len(server.requests) == 3
    assert client.accounting.retries == {"http_500": 1, "http_503": 1}
    assert not client.accounting.failures


def test_timeout_is_retried(server: TimedServer) -> None:
    client = make_client(server, request_timeout_s=0.3)
    server.inject(Fault("timeout", delay_s=1.5))
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert answer.ok
    assert answer.value is True
    assert len(server.requests) == 2
    assert client.accounting.retries == {"timeout": 1}


def test_dropped_connection_is_retried(server: TimedServer) -> None:
    client = make_client(server)
    server.inject(Fault("drop"))
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert answer.ok
    assert len(server.requests) == 2
    assert client.accounting.retries == {"connection": 1}


def test_400_is_not_retried(server: TimedServer) -> None:
    client = make_client(server)
    server.inject(Fault("status", status=400))
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert not answer.ok
    assert (answer.value, answer.failure) == (None, "http_400")
    assert len(server.requests) == 1
    assert client.accounting.failures == {"http_400": 1}
    assert not client.accounting.retries
    assert client.cache is not None
    assert len(client.cache) == 0
    # nothing was cached, so asking again (a rerun: a new client on the same cache) reaches the server
    rerun = make_client(server, cache=client.cache)
    assert run(rerun.ask(PROMPTS["verify"], VERIFY_VARS)).value is True
    assert len(server.requests) == 2


def test_retries_exhausted_is_a_counted_failure(server: TimedServer) -> None:
    client = make_client(server, max_retries=2)
    server.inject(*[Fault("status", status=503, retry_after=0)] * 3)
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert (answer.value, answer.failure) == (None, "http_503")
    assert len(server.requests) == 3  # 1 + max_retries
    assert client.accounting.retries == {"http_503": 2}
    assert client.accounting.failures == {"http_503": 1}
    assert client.accounting.steps["verify"].calls == 3
    assert server.pending_faults == 0


# --------------------------------------------------------------------------------------- parse retries


def test_unparseable_answer_is_asked_again_then_succeeds(server: TimedServer) -> None:
    client = make_client(server)
    server.inject(Fault("malformed", body="Hmm, hard to say."))
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert answer.ok
    assert answer.value is True
    assert answer.attempts == 2
    assert len(server.requests) == 2
    assert client.accounting.retries == {"parse:not_yes_no": 1}
    assert not client.accounting.failures
    # the new request is a different one (temperature ≥ 0.5), so it is not answered from the cache
    assert server.requests[0]["temperature"] == 0.0
    assert server.requests[1]["temperature"] == 0.5


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault("empty"), "empty"),
        (Fault("truncated"), "truncated"),
        (Fault("malformed"), "malformed_json"),
    ],
)
def test_empty_truncated_malformed_passages_are_asked_again(server: TimedServer, fault: Fault, reason: str) -> None:
    client = make_client(server)
    server.inject(fault)
    answer = run(client.ask(PROMPTS["positive_passage"], {"query": QUERY}))
    assert answer.ok
    assert "iron" in answer.value
    assert len(server.requests) == 2
    assert client.accounting.retries == {f"parse:{reason}": 1}


def test_parse_retries_exhausted_is_a_counted_failure_never_a_guess(server: TimedServer) -> None:
    client = make_client(server, parse_retries=1)
    server.inject(Fault("malformed", body="maybe"), Fault("malformed", body="perhaps"))
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert not answer.ok
    assert answer.value is None  # never guessed
    assert answer.failure == "not_yes_no"
    assert answer.text == "perhaps"  # the last raw answer, for the failure report
    assert answer.attempts == 2
    assert len(server.requests) == 2
    assert client.accounting.failures == {"not_yes_no": 1}
    assert client.accounting.retries == {"parse:not_yes_no": 1}


def test_structured_output_sends_a_json_schema_and_parses_json(server: TimedServer) -> None:
    client = make_client(server, structured_output=True)

    async def main() -> list[Answer]:
        return list(
            await asyncio.gather(
                client.ask(PROMPTS["verify"], VERIFY_VARS),
                client.ask(
                    PROMPTS["preference"],
                    {"query": QUERY, "passage_1": RELEVANT, "passage_2": "Unrelated text about music."},
                ),
                client.ask(PROMPTS["queries"], {"passage": RELEVANT, "query_type": "keywords"}),
            )
        )

    verify, preference, query = run(main())
    assert verify.value is True
    assert json.loads(verify.text or "") == {"answer": "yes"}
    assert preference.value == 1
    assert json.loads(preference.text or "") == {"answer": 1}
    assert isinstance(query.value, str)
    assert json.loads(query.text or "") == {"query": query.value}
    assert len(server.requests) == 3
    for body in server.requests:
        response_format = body["response_format"]
        assert response_format["type"] == "json_schema"
        schema = response_format["json_schema"]
        assert schema["strict"] is True
        assert schema["schema"]["type"] == "object"
        assert "JSON" in body["messages"][0]["content"]
    names = sorted(body["response_format"]["json_schema"]["name"] for body in server.requests)
    assert names == ["preference", "queries", "verify"]


# --------------------------------------------------------------------------------------------- concurrency


def test_concurrency_is_used_and_capped() -> None:
    with FakeOpenAIServer(syntriever_responder, latency_s=0.1) as slow:
        client = make_client(slow, concurrency=8)

        async def main() -> list[Answer]:
            return list(
                await asyncio.gather(
                    *(client.ask(PROMPTS["positive_passage"], {"query": f"topic number {i} facts"}) for i in range(16))
                )
            )

        answers = run(main())
        assert all(a.ok for a in answers)
        assert len(slow.requests) == 16
        assert 4 <= slow.max_concurrency_seen <= 8


def test_rate_limit_settings_admit_within_budget(server: TimedServer) -> None:
    client = make_client(server, requests_per_minute=100, tokens_per_minute=1_000_000)

    async def main() -> list[Answer]:
        return list(
            await asyncio.gather(*(client.ask(PROMPTS["cot"], {"query": f"question {i} here"}) for i in range(5)))
        )

    assert all(a.ok for a in run(main()))
    assert len(server.requests) == 5


def test_tokens_per_minute_budget_spaces_the_requests(server: TimedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client feeds its token estimates to the limiter: a budget smaller than one request admits one per window.

    Measured where the limiter admits a request (not when the server sees it), so a loaded machine's slow connection
    set-up cannot shorten the span."""
    from syntriever_haystack.generate import llm

    window = 0.3
    admitted: list[float] = []

    class RecordingLimiter(llm.RateLimiter):  # type: ignore[misc,valid-type]
        async def acquire(self, *args: Any, **kwargs: Any) -> Any:
            handle = await super().acquire(*args, **kwargs)
            admitted.append(time.monotonic())
            return handle

    monkeypatch.setattr(llm, "RateLimiter", functools.partial(RecordingLimiter, window_s=window))
    client = make_client(server, tokens_per_minute=1, concurrency=8)

    async def main() -> list[Answer]:
        return list(
            await asyncio.gather(*(client.ask(PROMPTS["cot"], {"query": f"question {i} here"}) for i in range(3)))
        )

    assert all(a.ok for a in run(main()))
    assert len(server.requests) == 3
    # admitted at 0, window and 2 x window (without a budget all three are admitted within milliseconds)
    assert len(admitted) == 3
    gaps = [b - a for a, b in zip(sorted(admitted), sorted(admitted)[1:], strict=False)]
    assert all(gap >= 0.9 * window for gap in gaps), gaps


# ---------------------------------------------------------------------------------------------- collect


def test_collect_mode_queues_the_request_and_raises_deferred(server: TimedServer) -> None:
    client = make_client(server)
    client.mode = "collect"
    with pytest.raises(Deferred) as caught:
        run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    key = caught.value.key
    assert list(client.pending) == [key]
    body = client.pending[key]
    assert body["model"] == "fake-model"
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][-1] == {"role": "user", "content": PROMPTS["verify"].render(VERIFY_VARS)[-1].text}
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 8
    json.dumps(body)  # a valid request body for a batch file
    assert len(server.requests) == 0
    assert client.accounting.calls == 0
    # a batch answer lands in the cache under the same key: the same ask now completes without the server
    assert client.cache is not None
    client.cache.put(
        key,
        model="fake-model",
        prompt="batch",
        request={"custom_id": key},
        text="yes",
        finish_reason="stop",
        usage={"prompt_tokens": 10, "completion_tokens": 1},
        batch=True,
    )
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert answer.value is True
    assert answer.cached
    assert len(server.requests) == 0


def test_samples_are_distinct_requests(server: TimedServer) -> None:
    client = make_client(server)
    variables = {"passage": RELEVANT, "query_type": "question"}

    async def main() -> list[Answer]:
        answers = [await client.ask(PROMPTS["queries"], variables, sample=s) for s in (0, 1, 2)]
        answers.append(await client.ask(PROMPTS["queries"], variables, sample=1))  # cached
        return answers

    answers = run(main())
    assert all(a.ok for a in answers)
    assert len(server.requests) == 3
    assert "seed" not in server.requests[0]
    assert [r.get("seed") for r in server.requests[1:]] == [1, 2]
    assert answers[3].cached
    assert answers[3].value == answers[1].value
    assert len({a.value for a in answers[:3]}) >= 2  # the scripted LLM varies with the seed


# ------------------------------------------------------------------------------------------------ helpers


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "-3"}) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after({"Retry-After": past}) == 0.0


def test_classify_error() -> None:
    class StatusError(Exception):
        def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
            super().__init__(f"HTTP {status}")
            self.status_code = status
            self.response = type("R", (), {"headers": headers or {}})()

    class APIConnectionError(Exception):
        pass

    class ReadTimeout(Exception):  # noqa: N818 - named like httpx.ReadTimeout
        pass

    assert classify_error(asyncio.TimeoutError()) == (True, "timeout", None)
    assert classify_error(StatusError(429, {"retry-after": "3"})) == (True, "rate_limited", 3.0)
    assert classify_error(StatusError(500)) == (True, "http_500", None)
    assert classify_error(StatusError(408)) == (True, "http_408", None)
    assert classify_error(StatusError(409)) == (True, "http_409", None)
    assert classify_error(StatusError(401)) == (False, "http_401", None)
    assert classify_error(APIConnectionError()) == (True, "connection", None)
    assert classify_error(ReadTimeout()) == (True, "timeout", None)
    assert classify_error(ValueError("bug")) == (False, "error:ValueError", None)


def test_one_client_serves_several_event_loops(server: TimedServer) -> None:
    """A second asyncio.run must not reuse the async HTTP client bound to the first (closed) loop."""
    client = make_client(server, cache=None)
    first = asyncio.run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    second = asyncio.run(client.ask(PROMPTS["queries"], {"passage": QUERY, "query_type": "question"}))
    assert first.ok, first.failure
    assert second.ok, second.failure
    assert client.sync_calls  # switched to the generator's synchronous run after the loop changed
    assert len(server.requests) == 2


# ------------------------------------------------------------------------------ hardening (issue 18)


@pytest.mark.parametrize("fault", [Fault("non_json"), Fault("status", status=200, body="<html>proxy error</html>")])
def test_a_200_whose_body_is_not_json_is_retried(server: TimedServer, fault: Fault) -> None:
    client = make_client(server)
    server.inject(fault)
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert answer.ok, answer.failure
    assert answer.value is True
    assert len(server.requests) == 2
    assert client.accounting.retries == {"bad_response": 1}
    assert not client.accounting.failures


def test_a_non_json_body_every_time_is_a_counted_failure_after_the_retries(server: TimedServer) -> None:
    client = make_client(server, max_retries=2)
    server.inject(*[Fault("non_json")] * 3)
    answer = run(client.ask(PROMPTS["verify"], VERIFY_VARS))
    assert answer.failure == "bad_response"
    assert len(server.requests) == 3
    assert client.accounting.retries == {"bad_response": 2}


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_non_retryable_auth_or_not_found_error_stops_the_remaining_requests(server: TimedServer, status: int) -> None:
    client = make_client(server, concurrency=1)
    server.inject(*[Fault("status", status=status)] * 20)
    passages = [f"passage number {i} about iron" for i in range(10)]

    async def main() -> list[Answer]:
        return list(
            await asyncio.gather(*(client.ask(PROMPTS["verify"], {"query": QUERY, "passage": p}) for p in passages))
        )

    answers = run(main())
    assert [a.failure for a in answers] == [f"http_{status}"] * 10
    assert len(server.requests) == 1  # the first failure stopped the run: no budget spent on the other nine
    assert client.stopped is not None
    assert client.stopped.cause == f"http_{status}"
    acc = client.accounting
    assert acc.failures == {f"http_{status}": 10}
    assert acc.not_sent == 9
    assert acc.calls == 1
    assert acc.answers == 0
    assert acc.summary()["stopped"]["cause"] == f"http_{status}"
    assert "**Stopped early:** http_" in acc.to_markdown()


def test_a_400_does_not_stop_the_other_requests(server: TimedServer) -> None:
    client = make_client(server, concurrency=1)
    server.inject(Fault("status", status=400))

    async def main() -> list[Answer]:
        calls = [client.ask(PROMPTS["verify"], {"query": QUERY, "passage": f"text {i}"}) for i in range(3)]
        return list(await asyncio.gather(*calls))

    answers = run(main())
    assert [a.failure for a in answers].count("http_400") == 1
    assert sum(a.ok for a in answers) == 2
    assert client.stopped is None


def test_an_unreachable_server_stops_after_the_first_request_exhausts_its_retries() -> None:
    with FakeOpenAIServer() as fake:
        url = fake.url  # a port that was just free: nothing listens there once the server stopped
    generator = OpenAIChatGenerator(
        api_key=Secret.from_token("test"), api_base_url=url, model="fake-model", max_retries=0, timeout=5.0
    )
    settings = LLMSettings(concurrency=1, max_retries=1, backoff_initial_s=0.01, backoff_max_s=0.02)
    client = LLMClient(generator, cache=None, settings=settings)

    async def main() -> list[Answer]:
        return list(
            await asyncio.gather(
                *(client.ask(PROMPTS["verify"], {"query": QUERY, "passage": f"p{i}"}) for i in range(5))
            )
        )

    answers = run(main())
    assert {a.failure for a in answers} == {"connection"}
    # without the stop every request would be sent 1 + max_retries = 2 times (10 calls); the others' first attempts
    # may go out while the first request backs off, their retries do not
    assert client.accounting.calls < 10
    assert client.accounting.not_sent >= 1
    assert client.stopped is not None
    assert client.stopped.cause == "connection"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"requests_per_minute": 0}, "requests_per_minute must be a number > 0"),
        ({"requests_per_minute": -5}, "requests_per_minute must be a number > 0"),
        ({"tokens_per_minute": 0}, "tokens_per_minute must be a number > 0"),
        ({"request_timeout_s": 0}, "request_timeout_s must be a number > 0"),
        ({"parse_retries": -1}, "parse_retries must be an integer >= 0"),
        ({"concurrency": 0}, "concurrency must be an integer >= 1"),
        ({"backoff_initial_s": -1}, "backoff_initial_s must be a number >= 0"),
    ],
)
def test_llm_settings_reject_values_out_of_range(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LLMSettings(**settings)


def test_llm_settings_accept_the_edges() -> None:
    settings = LLMSettings(
        concurrency=1, requests_per_minute=None, max_retries=0, parse_retries=0, request_timeout_s=None
    )
    assert settings.max_retries == 0
    assert LLMSettings(requests_per_minute=0.5, request_timeout_s=0.1).requests_per_minute == 0.5
