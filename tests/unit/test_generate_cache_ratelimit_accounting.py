"""Response cache, sliding-window rate limiter (fake clock) and cost accounting (no network)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.generate import ratelimit
from syntriever_haystack.generate.accounting import BATCH_DISCOUNT, Accounting, PriceTable
from syntriever_haystack.generate.cache import ResponseCache, cache_key
from syntriever_haystack.generate.ratelimit import RateLimiter

MESSAGES = [{"role": "system", "content": "You judge."}, {"role": "user", "content": "Query: q\nPassage: p"}]
PARAMS = {"temperature": 0.0, "max_tokens": 8, "prompt": "verify@1#abc"}


# ---------------------------------------------------------------------------------------------------- cache


def test_cache_key_is_stable_and_sensitive() -> None:
    key = cache_key("gpt-4o-mini", MESSAGES, PARAMS)
    assert len(key) == 64
    assert key == cache_key("gpt-4o-mini", [dict(m) for m in MESSAGES], dict(reversed(list(PARAMS.items()))))
    assert key == cache_key("gpt-4o-mini", iter(MESSAGES), PARAMS)  # any iterable of messages
    others = {
        cache_key("gpt-4o", MESSAGES, PARAMS),
        cache_key("gpt-4o-mini", [*MESSAGES[:1], {"role": "user", "content": "Query: q\nPassage: p2"}], PARAMS),
        cache_key("gpt-4o-mini", [{"role": "user", "content": m["content"]} for m in MESSAGES], PARAMS),
        cache_key("gpt-4o-mini", MESSAGES[1:], PARAMS),
        cache_key("gpt-4o-mini", MESSAGES, {**PARAMS, "temperature": 0.5}),
        cache_key("gpt-4o-mini", MESSAGES, {**PARAMS, "seed": 1}),
        cache_key("gpt-4o-mini", MESSAGES, {**PARAMS, "parse_retry": 1}),
        cache_key("gpt-4o-mini", MESSAGES, {k: v for k, v in PARAMS.items() if k != "max_tokens"}),
    }
    assert key not in others
    assert len(others) == 8


def _put(cache: ResponseCache, key: str, text: str | None, **kwargs: object) -> None:
    cache.put(
        key,
        model="m",
        prompt="verify",
        request={"messages": MESSAGES},
        text=text,
        finish_reason=kwargs.pop("finish_reason", "stop"),  # type: ignore[arg-type]
        usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        **kwargs,  # type: ignore[arg-type]
    )


def test_response_cache_put_get_first_write_wins_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "llm-cache.sqlite"
    with ResponseCache(path) as cache:
        assert cache.get("k1") is None
        assert "k1" not in cache
        assert len(cache) == 0
        _put(cache, "k1", "yes", response_model="fake-model-2024")
        _put(cache, "k1", "no")  # ignored: the first answer stored for a key wins
        _put(cache, "k2", None, finish_reason="length", batch=True)
        hit = cache.get("k1")
        assert hit is not None
        assert (hit.text, hit.finish_reason, hit.model, hit.batch) == ("yes", "stop", "fake-model-2024", False)
        assert hit.usage == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        assert hit.created.endswith("Z")
        assert "k1" in cache
        assert len(cache) == 2
    assert path.is_file()
    with ResponseCache(path) as reopened:
        assert len(reopened) == 2
        hit = reopened.get("k1")
        assert hit is not None
        assert hit.text == "yes"
        other = reopened.get("k2")
        assert other is not None
        assert (other.text, other.finish_reason, other.batch) == (None, "length", True)


def test_response_cache_in_memory_and_threads() -> None:
    cache = ResponseCache(":memory:")

    def writer(start: int) -> None:
        for i in range(start, start + 25):
            _put(cache, f"k{i % 60}", f"answer {i}")

    threads = [threading.Thread(target=writer, args=(n * 25,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 60  # 100 puts over 60 keys; duplicates ignored, no error
    cache.close()


# ---------------------------------------------------------------------------------------------- rate limits


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: object = None) -> object:
        fake.sleeps.append(delay)
        fake.now += delay
        await real_sleep(0)
        return result

    monkeypatch.setattr(ratelimit.asyncio, "sleep", fake_sleep)
    return fake


def _starts(limiter: RateLimiter, clock: FakeClock, tokens: list[float]) -> list[float]:
    async def main() -> list[float]:
        handles = []
        for t in tokens:
            handles.append(await limiter.acquire(t))
        return [h[0] for h in handles]

    return asyncio.run(main())


def test_rate_limiter_disabled_never_waits(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    assert not limiter.enabled
    assert _starts(limiter, clock, [1e9] * 50) == [0.0] * 50
    assert clock.sleeps == []


def test_rate_limiter_requests_per_minute(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=2, clock=clock)
    assert limiter.enabled
    starts = _starts(limiter, clock, [0, 0, 0, 0, 0])
    # two per window: the 3rd waits for the window of the 1st to pass, the 5th for the 3rd's
    assert starts[:2] == [0.0, 0.0]
    assert 60.0 <= starts[2] == starts[3] < 60.1
    assert 120.0 <= starts[4] < 120.1
    assert len(clock.sleeps) == 2


def test_rate_limiter_requests_per_minute_with_concurrent_callers(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=3, window_s=10.0, clock=clock)

    async def main() -> list[float]:
        handles = await asyncio.gather(*(limiter.acquire() for _ in range(7)))
        return sorted(h[0] for h in handles)

    starts = asyncio.run(main())
    windows = [int(s // 10) for s in starts]
    assert windows == [0, 0, 0, 1, 1, 1, 2]
    # never more than 3 starts in any 10 s window
    for i, start in enumerate(starts):
        assert sum(1 for s in starts if start <= s < start + 10.0) <= 3, (i, starts)


def test_rate_limiter_tokens_per_minute(clock: FakeClock) -> None:
    limiter = RateLimiter(tokens_per_minute=100, clock=clock)
    starts = _starts(limiter, clock, [60, 30, 60, 10])
    # 60 + 30 fit; the next 60 would exceed 100 → wait for the first event to leave the window
    assert starts[:2] == [0.0, 0.0]
    assert 60.0 <= starts[2] < 60.1
    assert starts[3] == starts[2]  # 30 + 60 + 10 = 100 ≤ budget


def test_rate_limiter_settle_replaces_estimates(clock: FakeClock) -> None:
    limiter = RateLimiter(tokens_per_minute=100, clock=clock)

    async def main() -> list[float]:
        first = await limiter.acquire(90)  # estimated 90 ...
        limiter.settle(first, 10)  # ... but the server said 10
        second = await limiter.acquire(80)
        return [first[0], second[0]]

    assert asyncio.run(main()) == [0.0, 0.0]
    assert clock.sleeps == []


def test_rate_limiter_admits_an_oversized_request_alone(clock: FakeClock) -> None:
    limiter = RateLimiter(tokens_per_minute=100, clock=clock)
    starts = _starts(limiter, clock, [500, 10])
    assert starts[0] == 0.0  # larger than the whole budget: admitted alone rather than never
    assert 60.0 <= starts[1] < 60.1


def test_rate_limiter_both_budgets(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=10, tokens_per_minute=50, window_s=1.0, clock=clock)
    starts = _starts(limiter, clock, [20, 20, 20, 20])
    assert starts[:2] == [0.0, 0.0]
    assert 1.0 <= starts[2] == starts[3] < 1.1


# -------------------------------------------------------------------------------------------------- prices


def test_price_table_lookup_and_cost() -> None:
    table = PriceTable()
    assert table.lookup("gpt-4o-mini") == (0.15, 0.60)
    # a dated snapshot resolves to the longest matching prefix (gpt-4o-mini, not gpt-4o)
    assert table.lookup("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert table.lookup("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert table.lookup("gpt-4.1-nano-2025-04-14") == (0.10, 0.40)
    assert table.lookup("fake-model") is None
    assert table.lookup("gpt-4") is None  # a prefix of a known name is not that model
    assert table.lookup("gpt-4o-mini2") is None  # nor is a name that merely starts like one
    assert table.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000, batch=True) == pytest.approx(0.75 * BATCH_DISCOUNT)
    assert BATCH_DISCOUNT == 0.5
    assert table.cost("fake-model", 10**9, 10**9) == 0.0


def test_price_table_load(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("my-model:\n  input: 1.0\n  output: 3\ngpt-4o-mini: {input: 0.2, output: 0.8}\n")
    table = PriceTable.load(path)
    assert table.lookup("my-model") == (1.0, 3.0)
    assert table.lookup("my-model-2025-01-31") == (1.0, 3.0)  # dated snapshots inherit the price
    assert table.lookup("my-model-v2") is None  # another model is not priced by a shared prefix
    assert table.lookup("gpt-4o-mini") == (0.2, 0.8)  # overrides a default
    assert table.lookup("gpt-4o") == (2.50, 10.00)  # defaults kept
    json_path = tmp_path / "prices.json"
    json_path.write_text(json.dumps({"x": {"input": 2, "output": 4}}))
    assert PriceTable.load(json_path).cost("x", 500_000, 250_000) == pytest.approx(2.0)


def test_price_table_load_errors(tmp_path: Path) -> None:
    with pytest.raises(SyntrieverError, match="does not exist"):
        PriceTable.load(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- gpt-4o\n")
    with pytest.raises(SyntrieverError, match="must map model names"):
        PriceTable.load(listed)
    for text in ("m: {input: 1}\n", "m: 3\n", "m: {input: cheap, output: 1}\n"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(SyntrieverError, match=r"entry 'm' must be \{input"):
            PriceTable.load(bad)


# ---------------------------------------------------------------------------------------------- accounting


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def test_accounting_counts_calls_hits_costs_and_causes() -> None:
    acc = Accounting()
    acc.record("verify", "gpt-4o-mini", _usage(1_000_000, 0), cached=False)
    acc.record("verify", "gpt-4o-mini", _usage(1_000_000, 0), cached=True)  # saved 0.15
    acc.record("queries", "gpt-4o-mini", _usage(0, 1_000_000), cached=False)
    acc.record("batch", "gpt-4o-mini", _usage(1_000_000, 0), cached=False, batch=True)  # 0.075
    acc.record("queries", "gpt-4o-mini", _usage(1_000_000, 0), cached=True, batch=True)  # paid already
    acc.record_attempt_failure("queries")
    acc.retry("rate_limited")
    acc.retry("rate_limited")
    acc.fail("http_500")
    acc.count_item("done", 3)
    acc.count_filtered("copies_passage")
    assert acc.calls == 4
    assert acc.cache_hits == 2
    assert acc.cost_usd == pytest.approx(0.15 + 0.60 + 0.075)
    summary = acc.summary()
    assert set(summary) >= {
        "calls",
        "cache_hits",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "cost_saved_by_cache_usd",
        "retries",
        "failures",
        "items",
        "filtered",
        "steps",
        "elapsed_s",
        "calls_per_s",
    }
    assert summary["calls"] == 4
    assert summary["cache_hits"] == 2
    assert summary["prompt_tokens"] == 2_000_000
    assert summary["completion_tokens"] == 1_000_000
    assert summary["cost_usd"] == pytest.approx(0.825)
    assert summary["cost_saved_by_cache_usd"] == pytest.approx(0.15)
    assert summary["retries"] == {"rate_limited": 2}
    assert summary["failures"] == {"http_500": 1}
    assert summary["items"] == {"done": 3}
    assert summary["filtered"] == {"copies_passage": 1}
    assert list(summary["steps"]) == ["batch", "queries", "verify"]
    assert summary["steps"]["queries"] == {
        "calls": 2,
        "errors": 1,  # the attempt that failed: a call without an answer
        "cache_hits": 1,
        "prompt_tokens": 0,
        "completion_tokens": 1_000_000,
        "cost_usd": pytest.approx(0.60),
    }
    assert summary["steps"]["batch"]["cost_usd"] == pytest.approx(0.075)
    json.dumps(summary)  # serialisable as is
    postfix = acc.postfix()
    assert postfix["calls"] == 4
    assert postfix["cached"] == 2
    assert postfix["fail"] == 1
    assert postfix["tok"] == 3_000_000
    assert postfix["$"] == "0.8250"


def test_accounting_markdown_and_write(tmp_path: Path) -> None:
    acc = Accounting()
    acc.record("verify", "gpt-4o-mini", _usage(100, 2), cached=False)
    acc.record("verify", "gpt-4o-mini", _usage(100, 2), cached=True)
    acc.retry("timeout")
    acc.fail("not_yes_no")
    md = acc.to_markdown("My run")
    lines = md.splitlines()
    assert lines[0] == "## My run"
    assert lines[2] == "| step | calls | cache hits | tokens in | tokens out | cost (USD) |"
    assert lines[3] == "|---|---:|---:|---:|---:|---:|"
    assert lines[4].startswith("| verify | 1 | 1 | 100 | 2 |")
    assert lines[5].startswith("| **total** | **1** | **1** | **100** | **2** |")
    assert "**Retries by cause:** timeout 1" in md
    assert "**Failures by cause:** not_yes_no 1" in md
    assert "Items" not in md  # empty counters are left out
    assert md.endswith("\n")
    acc.write(tmp_path / "out", extra={"task": "retriever", "calls": -1})
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["task"] == "retriever"
    assert data["calls"] == 1  # the counters win over extra keys
    assert (tmp_path / "out" / "summary.md").read_text().startswith("## Generation summary")


def test_accounting_is_thread_safe() -> None:
    acc = Accounting()

    def work() -> None:
        for _ in range(500):
            acc.record("s", "gpt-4o-mini", _usage(1, 1), cached=False)
            acc.retry("x")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert acc.calls == 2000
    assert acc.retries["x"] == 2000


def test_a_rerun_keeps_the_earlier_runs_accounting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # a summary written before per-run entries existed: its top level is that one run
    out.mkdir()
    legacy = {"task": "retriever", "calls": 7, "cache_hits": 0, "cost_usd": 0.5, "failures": {"timeout": 2}}
    (out / "summary.json").write_text(json.dumps(legacy))

    first = Accounting()
    first.record("verify", "gpt-4o-mini", _usage(100, 2), cached=False)
    first.record_attempt_failure("verify")
    first.fail("http_500")
    first.write(out, extra={"task": "retriever"})
    second = Accounting()
    second.record("verify", "gpt-4o-mini", _usage(100, 2), cached=True)
    second.write(out, extra={"task": "retriever"})

    data = json.loads((out / "summary.json").read_text())
    assert (data["calls"], data["cache_hits"], data["failures"]) == (0, 1, {})  # the top level is the latest run
    assert [r["calls"] for r in data["runs"]] == [7, 2, 0]
    total = data["total"]
    assert total["runs"] == 3
    assert total["calls"] == 9
    assert total["cache_hits"] == 1
    assert total["errors"] == 1
    assert total["failures"] == {"timeout": 2, "http_500": 1}
    assert total["steps"]["verify"]["calls"] == 2
    assert total["cost_usd"] == pytest.approx(0.5 + first.cost_usd)
    assert "All 3 runs of this folder: 9 calls" in (out / "summary.md").read_text()


def test_an_unreadable_previous_summary_is_kept_aside(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{torn")
    Accounting().write(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["total"]["runs"] == 1
    assert [p.read_text() for p in tmp_path.glob("summary.unreadable-*.json")] == ["{torn"]
