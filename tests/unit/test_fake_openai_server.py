"""The scripted OpenAI-compatible server (tests/support/fake_openai.py) against the real clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.dataclasses import ChatMessage
from haystack.utils import Secret
from pydantic import BaseModel

from tests.support.fake_openai import BatchLineError, FakeOpenAIServer, Fault, last_user_message

pytestmark = pytest.mark.loopback

FAKE_SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "fake_openai.py"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0) as oai:
        yield oai


def _ask(client: openai.OpenAI, text: str = "what causes anaemia", **kwargs: Any) -> Any:
    return client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": text}], **kwargs)


# ----------------------------------------------------------------------------------------- chat: happy


def test_openai_client_gets_a_completion(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    completion = _ask(
        client,
        "what causes iron deficiency",
        response_format={"type": "json_object"},
        extra_body={"seed": 1},
    )
    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert completion.model == "fake-model"
    assert choice.finish_reason == "stop"
    assert json.loads(choice.message.content)["echo"] == "what causes iron deficiency"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert len(server.requests) == 1
    assert server.requests[0]["response_format"] == {"type": "json_object"}  # recorded, not enforced
    assert [m.id for m in client.models.list()] == ["fake-model"]


def test_custom_responder_dict_and_failure() -> None:
    def responder(request: dict[str, Any]) -> str | dict[str, Any]:
        text = last_user_message(request)
        if text == "boom":
            raise RuntimeError("scripted failure")
        return {"content": text.upper(), "finish_reason": "stop", "usage": {"prompt_tokens": 7, "completion_tokens": 2}}

    with FakeOpenAIServer(responder) as fake, openai.OpenAI(base_url=fake.url, api_key="t", max_retries=0) as oai:
        completion = _ask(oai, "hello there")
        assert completion.choices[0].message.content == "HELLO THERE"
        assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (7, 9)
        with pytest.raises(openai.InternalServerError, match="scripted failure"):
            _ask(oai, "boom")


def test_streaming_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stream"):
        _ask(client, stream=True)


# ---------------------------------------------------------------------------------------- chat: faults


def test_429_with_retry_after_surfaces_as_rate_limit_error(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.inject(Fault("status", status=429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as caught:
        _ask(client)
    headers = caught.value.response.headers
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "2000"  # the openai client reads this one first
    assert caught.value.code == "rate_limit_exceeded"
    assert _ask(client).choices[0].finish_reason == "stop"  # one fault, one request
    assert len(server.requests) == 2  # the faulted request is recorded too


def test_client_retries_honour_retry_after(server: FakeOpenAIServer) -> None:
    server.inject(Fault("status", status=429, retry_after=0.3), Fault("status", status=503, retry_after=0.05))
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=2) as oai:
        start = time.perf_counter()
        completion = _ask(oai, "hello")
        elapsed = time.perf_counter() - start
    assert completion.choices[0].message.content == "echo: hello"
    assert len(server.requests) == 3
    assert elapsed >= 0.3  # waited the server-directed delay before the first retry


def test_500_is_internal_server_error(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.inject(Fault("status", status=500), Fault("status", status=502, body="<html>bad gateway</html>"))
    with pytest.raises(openai.InternalServerError) as caught:
        _ask(client)
    assert caught.value.body["type"] == "server_error"
    with pytest.raises(openai.InternalServerError) as caught:
        _ask(client)
    assert caught.value.status_code == 502
    assert caught.value.response.text == "<html>bad gateway</html>"


def test_timeout_fault_is_an_api_timeout(server: FakeOpenAIServer) -> None:
    server.inject(Fault("timeout", delay_s=2.0))
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0, timeout=0.5) as oai:
        start = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            _ask(oai)
        assert time.perf_counter() - start < 1.5
        assert _ask(oai).choices[0].message.content == "echo: what causes anaemia"


def test_dropped_connection_is_a_connection_error(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.inject(Fault("drop"))
    with pytest.raises(openai.APIConnectionError) as caught:
        _ask(client)
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert _ask(client).choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("fault", "expected_content", "expected_finish"),
    [
        (Fault("malformed"), "{not json", "stop"),
        (Fault("malformed", body="Sure! Here are your queries:"), "Sure! Here are your queries:", "stop"),
        (Fault("empty"), "", "stop"),
        (Fault("truncated"), "echo: one tw", "length"),  # the first half of "echo: one two three four"
    ],
)
def test_content_faults(
    server: FakeOpenAIServer, client: openai.OpenAI, fault: Fault, expected_content: str, expected_finish: str
) -> None:
    server.inject(fault)
    choice = _ask(client, "one two three four").choices[0]
    assert (choice.message.content, choice.finish_reason) == (expected_content, expected_finish)


def test_faults_apply_in_arrival_order(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.inject(Fault("empty"), Fault("status", status=400), Fault("truncated"))
    assert server.pending_faults == 3
    assert _ask(client, "a b c d").choices[0].message.content == ""
    with pytest.raises(openai.BadRequestError):
        _ask(client, "a b c d")
    assert _ask(client, "a b c d").choices[0].finish_reason == "length"
    assert _ask(client, "a b c d").choices[0].message.content == "echo: a b c d"
    assert server.pending_faults == 0
    assert len(server.requests) == 4


# -------------------------------------------------------------------------------------------- haystack


class _Queries(BaseModel):
    queries: list[str]
    relevant: bool


def _generator(server: FakeOpenAIServer) -> OpenAIChatGenerator:
    return OpenAIChatGenerator(
        api_key=Secret.from_token("test"), api_base_url=server.url, model="fake-model", max_retries=0
    )


def test_haystack_openai_chat_generator(server: FakeOpenAIServer) -> None:
    generator = _generator(server)
    reply = generator.run(messages=[ChatMessage.from_user("hi")])["replies"][0]
    assert reply.text == "echo: hi"
    assert reply.meta["finish_reason"] == "stop"
    assert reply.meta["model"] == "fake-model"
    assert reply.meta["usage"]["prompt_tokens"] == 1
    assert reply.meta["usage"]["completion_tokens"] == 2

    # Structured output: Haystack switches to `chat.completions.parse`, the default responder follows the schema.
    reply = generator.run(
        messages=[ChatMessage.from_user("iron deficiency")], generation_kwargs={"response_format": _Queries}
    )["replies"][0]
    assert _Queries.model_validate_json(reply.text) == _Queries(queries=["iron deficiency"], relevant=True)
    assert server.requests[-1]["response_format"]["type"] == "json_schema"

    # Truncation: a warning and meta finish_reason "length" on `create`, but an exception on `parse`.
    server.inject(Fault("truncated"), Fault("truncated"))
    reply = generator.run(messages=[ChatMessage.from_user("one two three four")])["replies"][0]
    assert reply.meta["finish_reason"] == "length"
    with pytest.raises(openai.LengthFinishReasonError):
        generator.run(messages=[ChatMessage.from_user("x")], generation_kwargs={"response_format": _Queries})

    # HTTP errors are not wrapped: the openai exception propagates.
    server.inject(Fault("status", status=429, retry_after=1))
    with pytest.raises(openai.RateLimitError):
        generator.run(messages=[ChatMessage.from_user("hi")])

    async def run_async() -> dict[str, Any]:
        try:
            return await generator.run_async(messages=[ChatMessage.from_user("async hi")])
        finally:
            await generator.close_async()  # on this loop, or its socket outlives the loop

    assert asyncio.run(run_async())["replies"][0].text == "echo: async hi"
    generator.close()


# ----------------------------------------------------------------------------------------------- batch


def _batch_file(texts: dict[str, str]) -> bytes:
    lines = [
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "fake-model", "messages": [{"role": "user", "content": text}]},
        }
        for custom_id, text in texts.items()
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _jsonl(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_batch_flow_with_openai_client() -> None:
    def responder(request: dict[str, Any]) -> str:
        text = last_user_message(request)
        if text == "fail http":
            raise RuntimeError("scripted line failure")
        if text == "fail expired":
            raise BatchLineError("not executed in time", code="batch_expired")
        return f"answer to {text}"

    texts = {"q-1": "first question", "q-2": "second question", "q-3": "fail http", "q-4": "fail expired"}
    with (
        FakeOpenAIServer(responder) as fake,
        openai.OpenAI(base_url=fake.url, api_key="test", max_retries=0) as oai,
    ):
        uploaded = oai.files.create(file=("requests.jsonl", _batch_file(texts)), purpose="batch")
        assert (uploaded.purpose, uploaded.filename, uploaded.bytes) == (
            "batch",
            "requests.jsonl",
            len(_batch_file(texts)),
        )
        assert oai.files.retrieve(uploaded.id).id == uploaded.id
        assert fake.file_contents[uploaded.id] == _batch_file(texts)

        batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        statuses = [batch.status]
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            batch = oai.batches.retrieve(batch.id)
            statuses.append(batch.status)
        assert statuses == ["validating", "in_progress", "completed"]
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (4, 2, 2)
        assert fake.batch_requests_answered == 4
        assert fake.batches[batch.id]["status"] == "completed"
        assert fake.requests == []  # batch lines are not chat requests

        outputs = _jsonl(oai, batch.output_file_id)
        assert sorted(o["custom_id"] for o in outputs) == ["q-1", "q-2"]
        for output in outputs:
            assert output["error"] is None
            assert output["response"]["status_code"] == 200
            body = openai.types.chat.ChatCompletion.model_validate(output["response"]["body"])
            assert body.choices[0].message.content == f"answer to {texts[output['custom_id']]}"

        errors = {e["custom_id"]: e for e in _jsonl(oai, batch.error_file_id)}
        assert set(errors) == {"q-3", "q-4"}
        assert errors["q-3"]["response"]["status_code"] == 500
        assert "scripted line failure" in errors["q-3"]["response"]["body"]["error"]["message"]
        assert errors["q-4"]["response"] is None
        assert errors["q-4"]["error"]["code"] == "batch_expired"


def test_batch_cancel_and_validation_failure(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    good = client.files.create(file=("a.jsonl", _batch_file({"x": "hello"})), purpose="batch")
    batch = client.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled"
    assert cancelled.output_file_id is None
    assert server.batch_requests_answered == 0

    duplicated = _batch_file({"x": "hello"}) * 2
    bad = client.files.create(file=("b.jsonl", duplicated), purpose="batch")
    batch = client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h")
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.errors is not None
    assert failed.errors.data[0].code == "duplicate_custom_id"
    assert failed.errors.data[0].line == 2

    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")


# ------------------------------------------------------------------------------------------ concurrency


def test_concurrent_requests_overlap() -> None:
    with (
        FakeOpenAIServer(latency_s=0.1) as fake,
        openai.OpenAI(base_url=fake.url, api_key="test", max_retries=0) as oai,
    ):
        results: list[str] = []
        barrier = threading.Barrier(16)

        def worker(i: int) -> None:
            barrier.wait()
            results.append(_ask(oai, f"question {i}").choices[0].message.content)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert sorted(results) == sorted(f"echo: question {i}" for i in range(16))
        assert fake.max_concurrency_seen >= 8
        assert len(fake.requests) == 16


# ------------------------------------------------------------------------------------------- standalone


def test_standalone_process(subprocess_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, str(FAKE_SERVER_SCRIPT), "--port", "0", "--latency-ms", "10", "--responder", "echo-json"],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("PORT="), line
        base_url = f"http://127.0.0.1:{int(line.removeprefix('PORT='))}/v1"
        with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0) as oai:
            content = _ask(oai, "hello standalone").choices[0].message.content
            assert json.loads(content)["echo"] == "hello standalone"

            inject = urllib.request.Request(
                f"{base_url}/_fake/inject",
                data=json.dumps([{"kind": "status", "status": 503}]).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(inject, timeout=5) as response:
                assert json.load(response)["queued"] == 1
            with pytest.raises(openai.InternalServerError):
                _ask(oai)
            with urllib.request.urlopen(f"{base_url}/_fake/stats", timeout=5) as response:
                assert json.load(response)["chat_requests"] == 2
    finally:
        process.terminate()
        returncode = process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
    assert returncode == 0  # SIGTERM is a clean shutdown
