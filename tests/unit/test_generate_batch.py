"""Batch API mode: collect → submit → poll → ingest rounds against the fake server's Batch API.

The chat endpoint must see no request at all; answers land in the cache flagged ``batch``, are billed at the
batch discount, an interrupted run resumes the batch it already submitted, and error lines are counted.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.utils import Secret

from syntriever_haystack.generate.accounting import BATCH_DISCOUNT, Accounting, PriceTable
from syntriever_haystack.generate.batch import BatchRunner
from syntriever_haystack.generate.cache import ResponseCache
from syntriever_haystack.generate.judges import LLMRelevanceJudge
from syntriever_haystack.generate.llm import LLMClient, LLMSettings
from syntriever_haystack.generate.prompts import load_prompts
from syntriever_haystack.generate.retriever_data import QueryItem, RetrieverDataGenerator
from tests.support.fake_openai import BatchLineError, FakeOpenAIServer
from tests.support.scripted_llm import syntriever_responder

pytestmark = pytest.mark.loopback

PROMPTS = load_prompts()
PRICE = (1.0, 2.0)  # USD per 1M input / output tokens of "fake-model"

ITEMS = [
    QueryItem("q1", "what causes iron deficiency anemia", (("d1", "Iron deficiency anemia is caused by blood loss."),)),
    QueryItem("q2", "how do green plants make glucose and oxygen from sunlight", ()),
    QueryItem("q3", "who built the eiffel tower in paris for the world fair", ()),
]


class Setup:
    """One run's objects: generator, cache, accounting, collect-mode client, task, batch runner."""

    def __init__(self, server: FakeOpenAIServer, folder: Path, *, sleep: Any = None) -> None:
        self.folder = folder
        self.generator = OpenAIChatGenerator(
            api_key=Secret.from_token("test"), api_base_url=server.url, model="fake-model", max_retries=0
        )
        self.cache = ResponseCache(folder / "llm-cache.sqlite")
        self.accounting = Accounting(PriceTable({"fake-model": PRICE}))
        self.client = LLMClient(self.generator, cache=self.cache, settings=LLMSettings(), accounting=self.accounting)
        self.task = RetrieverDataGenerator(
            client=self.client, prompts=PROMPTS, judge=LLMRelevanceJudge(self.client, PROMPTS["verify"]), progress=False
        )
        self.log: list[str] = []
        self.openai = openai.OpenAI(base_url=server.url, api_key="test")
        self.runner = BatchRunner(
            self.openai,
            self.cache,
            folder / "batches",
            accounting=self.accounting,
            poll_interval_s=0.0,
            sleep=sleep or (lambda seconds: None),
            log=self.log.append,
        )
        self.rounds: list[int] = []  # requests submitted per round
        self.outcomes: list[Any] = []

    def collect(self) -> Any:
        """One collect pass of the task (the CLI's ``execute`` loop body)."""
        self.client.mode = "collect"
        self.client.pending.clear()
        self.client.reset_loop_state()
        return asyncio.run(self.task.generate(ITEMS, self.folder / "retriever.jsonl"))

    def loop(self, max_rounds: int = 6) -> Any:
        for _ in range(max_rounds):
            stats = self.collect()
            if not self.client.pending:
                return stats
            self.rounds.append(len(self.client.pending))
            self.outcomes.append(self.runner.run(dict(self.client.pending)))
        raise AssertionError(f"still pending after {max_rounds} rounds")


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(syntriever_responder, batch_polls_to_complete=2) as fake:
        yield fake


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_batch_rounds_complete_the_task_without_the_chat_endpoint(server: FakeOpenAIServer, tmp_path: Path) -> None:
    run = Setup(server, tmp_path)
    stats = run.loop()
    # round 1: p+, p-, q_cot of every query; round 2: the verifications that depend on them
    assert run.rounds == [9, 6]
    assert [o.submitted for o in run.outcomes] == [9, 6]
    assert [o.ingested for o in run.outcomes] == [9, 6]
    assert all(not o.failed for o in run.outcomes)
    assert len(server.requests) == 0  # the chat endpoint was never called
    assert len(server.batches) == 2
    assert server.batch_requests_answered == 15
    assert stats.done == 3
    assert stats.records == 3
    records = read_jsonl(tmp_path / "retriever.jsonl")
    assert sorted(r["query_id"] for r in records) == ["q1", "q2", "q3"]
    assert all(r["provenance"]["cached"] for r in records)  # every answer came through the cache
    assert all(any(p["source"] == "llm_positive" for p in r["positives"]) for r in records)

    # every answer is in the cache, flagged as a batch answer
    assert len(run.cache) == 15
    rows = run.cache._db.execute("SELECT key FROM responses").fetchall()
    assert all(run.cache.get(key).batch for (key,) in rows)  # type: ignore[union-attr]

    # the request files carry the cache keys as custom_id and OpenAI request bodies
    lines = read_jsonl(tmp_path / "batches" / "requests-0000.jsonl")
    assert len(lines) == 9
    assert {line["custom_id"] for line in lines} <= {key for (key,) in rows}
    assert all(line["url"] == "/v1/chat/completions" and line["method"] == "POST" for line in lines)
    assert all(line["body"]["model"] == "fake-model" and line["body"]["messages"] for line in lines)
    state = json.loads((tmp_path / "batches" / "batches.json").read_text())
    assert [b["requests"] for b in state["batches"]] == [9, 6]
    assert all(b["ingested"] and b["status"] == "completed" for b in state["batches"])

    # billed once, at the batch discount; later cache hits of batch answers save nothing more
    batch_step = run.accounting.steps["batch"]
    assert batch_step.calls == 15
    assert run.accounting.calls == 15  # the only "calls" are the batch lines
    expected = (batch_step.prompt_tokens * PRICE[0] + batch_step.completion_tokens * PRICE[1]) / 1e6 * BATCH_DISCOUNT
    assert batch_step.prompt_tokens > 0
    assert run.accounting.cost_usd == pytest.approx(expected)
    assert run.accounting.saved_usd == 0.0
    assert not run.accounting.failures

    # a later live run of the same task makes no request at all
    live = Setup(server, tmp_path)
    (tmp_path / "retriever.done.jsonl").unlink()
    stats = asyncio.run(live.task.generate(ITEMS, tmp_path / "retriever.jsonl"))
    assert stats.duplicates_skipped == 3
    assert len(server.requests) == 0
    assert live.accounting.calls == 0


def test_interrupted_poll_resumes_the_submitted_batch(server: FakeOpenAIServer, tmp_path: Path) -> None:
    polls = 0

    def interrupt_first_poll(seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 1:
            raise KeyboardInterrupt

    first = Setup(server, tmp_path, sleep=interrupt_first_poll)
    first.collect()
    pending = dict(first.client.pending)
    assert len(pending) == 9
    with pytest.raises(KeyboardInterrupt):
        first.runner.run(pending)
    assert len(server.batches) == 1
    state = json.loads((tmp_path / "batches" / "batches.json").read_text())
    assert len(state["batches"]) == 1
    assert state["batches"][0]["ingested"] is False
    assert len(first.cache) == 0
    first.cache.close()

    # a new process: same state folder and cache; it polls and ingests the batch instead of submitting again
    second = Setup(server, tmp_path)
    second.collect()
    assert dict(second.client.pending) == pending
    outcome = second.runner.run(dict(second.client.pending))
    assert outcome.submitted == 0
    assert outcome.ingested == 9
    assert len(server.batches) == 1
    assert len(second.cache) == 9
    # and the run finishes with one more (verification) batch
    stats = second.loop()
    assert second.rounds == [6]
    assert len(server.batches) == 2
    assert stats.done == 3
    assert len(server.requests) == 0
    assert len(read_jsonl(tmp_path / "retriever.jsonl")) == 3


def test_error_lines_are_counted_and_retried_in_the_next_round(server: FakeOpenAIServer, tmp_path: Path) -> None:
    failed_once: set[str] = set()
    lock = threading.Lock()

    def flaky(request: dict[str, Any]) -> Any:
        system = str(request["messages"][0]["content"])
        if "step by step" in system:
            user = str(request["messages"][-1]["content"])
            with lock:
                first_time = user not in failed_once
                failed_once.add(user)
            if first_time:
                if "iron" in user:
                    raise BatchLineError("expired in the queue", code="batch_expired")
                raise RuntimeError("model crashed")  # an HTTP-style (500) line failure
        return syntriever_responder(request)

    server.responder = flaky
    run = Setup(server, tmp_path)
    stats = run.loop()
    first = run.outcomes[0]
    assert first.submitted == 9
    assert first.ingested == 6
    assert first.failed == {"batch_error:batch_expired": 1, "batch_error:http_500": 2}
    assert run.accounting.failures == {"batch_error:batch_expired": 1, "batch_error:http_500": 2}
    # the failed q_cot lines were not cached: asked again next round, then the verifications that wait for them
    assert run.rounds == [9, 3, 6]
    assert stats.done == 3
    assert len(read_jsonl(tmp_path / "retriever.jsonl")) == 3
    assert len(server.requests) == 0


def test_runner_from_generator_uses_the_generator_endpoint(server: FakeOpenAIServer, tmp_path: Path) -> None:
    generator = OpenAIChatGenerator(
        api_key=Secret.from_token("sk-test"), api_base_url=server.url, model="fake-model", max_retries=0
    )
    runner = BatchRunner.from_generator(
        generator,
        ResponseCache(tmp_path / "c.sqlite"),
        tmp_path / "b",
        poll_interval_s=0.0,
        sleep=lambda s: None,
        log=lambda message: None,
    )
    assert str(runner.client.base_url).rstrip("/") == server.url
    assert runner.client.api_key == "sk-test"
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    outcome = runner.run({"key-1": body})
    assert (outcome.submitted, outcome.ingested) == (1, 1)
    cached = runner.cache.get("key-1")
    assert cached is not None
    assert cached.batch
    assert cached.text
    # already cached: nothing to submit
    assert runner.run({"key-1": body}).submitted == 0
    assert len(server.batches) == 1
