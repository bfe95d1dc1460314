"""What a generation run cost: calls, cache hits, retries, failures by cause, tokens and money."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syntriever_haystack.errors import SyntrieverError

# USD per 1M tokens (input, output), standard (synchronous) tier, from OpenAI's public price list as of
# 2026-01. Prices change: pass your own table with `--prices FILE` (JSON/YAML `{model: {input, output}}`).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
}
BATCH_DISCOUNT = 0.5  # the Batch API bills half the synchronous price


@dataclass
class PriceTable:
    """USD per 1M input/output tokens by model; unknown models cost nothing (local or self-hosted)."""

    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def lookup(self, model: str) -> tuple[float, float] | None:
        if model in self.prices:
            return self.prices[model]
        # dated snapshots, e.g. gpt-4o-mini-2024-07-18 → gpt-4o-mini (longest matching prefix)
        matches = [
            name
            for name in self.prices
            if model.startswith(name + "-") and re.fullmatch(r"\d{4}(-\d{2}-\d{2})?", model[len(name) + 1 :])
        ]
        return self.prices[max(matches, key=len)] if matches else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        price = self.lookup(model)
        if price is None:
            return 0.0
        usd = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
        return usd * (BATCH_DISCOUNT if batch else 1.0)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """Read ``{model: {"input": usd_per_1M, "output": usd_per_1M}}`` (JSON or YAML) over the defaults."""
        import yaml

        file = Path(path)
        if not file.is_file():
            raise SyntrieverError(f"Price file {file} does not exist.")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise SyntrieverError(
                f"Price file {file} is not UTF-8 text (byte {error.start}): save it as UTF-8 JSON or YAML."
            ) from None
        except yaml.YAMLError as error:
            problem = str(getattr(error, "problem", None) or error).splitlines()[0]
            raise SyntrieverError(
                f"Price file {file} is not valid JSON/YAML ({problem}): fix it, e.g. "
                '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}.'
            ) from None
        except OSError as error:
            raise SyntrieverError(f"Cannot read price file {file} ({error.strerror or error}).") from None
        if not isinstance(data, Mapping):
            raise SyntrieverError(f"Price file {file} must map model names to {{input: ..., output: ...}}.")
        table = cls()
        for model, entry in data.items():
            try:
                table.prices[str(model)] = (float(entry["input"]), float(entry["output"]))
            except (TypeError, KeyError, ValueError) as error:
                raise SyntrieverError(
                    f"Price file {file}: entry {model!r} must be {{input: <usd per 1M>, output: <usd per 1M>}}."
                ) from error
        return table


@dataclass
class StepCounts:
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0  # calls that got no answer (an HTTP error, a timeout, a dropped connection)


class Accounting:
    """Thread-safe counters for one run; ``summary()`` is what lands in ``summary.json``.

    ``calls`` are requests that reached the LLM (retries included), ``cache_hits`` answers served from the
    cache, ``failures`` requests or answers given up on, by cause (``rate_limited``, ``timeout``,
    ``http_500``, ``malformed_json``, ``not_yes_no``, ...), ``retries`` re-sent requests by cause.
    ``stopped`` is set when a failure no retry can fix (401/403/404, an unreachable server) stopped the run; the
    requests given up on without being sent are counted in ``not_sent`` (and in ``failures``, by that cause).
    """

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices or PriceTable()
        self.steps: dict[str, StepCounts] = {}
        self.failures: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.filtered: Counter[str] = Counter()
        self.saved_usd = 0.0
        self.not_sent = 0
        self.stopped: dict[str, str] | None = None
        self.started = time.time()
        self._lock = threading.Lock()

    def _step(self, step: str) -> StepCounts:
        if step not in self.steps:
            self.steps[step] = StepCounts()
        return self.steps[step]

    def record(self, step: str, model: str, usage: Mapping[str, Any], *, cached: bool, batch: bool = False) -> None:
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        cost = self.prices.cost(model, prompt_tokens, completion_tokens, batch=batch)
        with self._lock:
            counts = self._step(step)
            if cached:
                counts.cache_hits += 1
                if not batch:  # a batch answer was already paid for when it was ingested
                    self.saved_usd += cost
            else:
                counts.calls += 1
                counts.prompt_tokens += prompt_tokens
                counts.completion_tokens += completion_tokens
                counts.cost_usd += cost

    def record_attempt_failure(self, step: str) -> None:
        """A request that reached the server but failed (counted as a call, no tokens)."""
        with self._lock:
            counts = self._step(step)
            counts.calls += 1
            counts.errors += 1

    def stop(self, cause: str, message: str) -> None:
        """Record the failure that stopped the run (the first one wins)."""
        with self._lock:
            if self.stopped is None:
                self.stopped = {"cause": cause, "message": message}

    def skip(self, step: str, cause: str) -> None:
        """A request given up on without sending it, because the run was stopped by ``cause``."""
        with self._lock:
            self._step(step)
            self.not_sent += 1
            self.failures[cause] += 1

    def fail(self, cause: str) -> None:
        with self._lock:
            self.failures[cause] += 1

    def retry(self, cause: str) -> None:
        with self._lock:
            self.retries[cause] += 1

    def count_item(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.items[outcome] += n

    def count_filtered(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.filtered[reason] += n

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.steps.values())

    @property
    def cache_hits(self) -> int:
        return sum(s.cache_hits for s in self.steps.values())

    @property
    def answers(self) -> int:
        """Requests that got an answer: from the LLM (calls minus errors) or from the cache."""
        return sum(s.calls - s.errors + s.cache_hits for s in self.steps.values())

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.steps.values())

    def postfix(self) -> dict[str, Any]:
        """Short live figures for a progress bar."""
        tokens = sum(s.prompt_tokens + s.completion_tokens for s in self.steps.values())
        return {
            "calls": self.calls,
            "cached": self.cache_hits,
            "fail": sum(self.failures.values()),
            "tok": tokens,
            "$": f"{self.cost_usd:.4f}",
        }

    def summary(self) -> dict[str, Any]:
        elapsed = time.time() - self.started
        steps = {
            name: {
                "calls": s.calls,
                "errors": s.errors,
                "cache_hits": s.cache_hits,
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "cost_usd": round(s.cost_usd, 6),
            }
            for name, s in sorted(self.steps.items())
        }
        return {
            "calls": self.calls,
            "errors": sum(s.errors for s in self.steps.values()),
            "cache_hits": self.cache_hits,
            "prompt_tokens": sum(s.prompt_tokens for s in self.steps.values()),
            "completion_tokens": sum(s.completion_tokens for s in self.steps.values()),
            "cost_usd": round(self.cost_usd, 6),
            "cost_saved_by_cache_usd": round(self.saved_usd, 6),
            "retries": dict(self.retries),
            "failures": dict(self.failures),
            "items": dict(self.items),
            "filtered": dict(self.filtered),
            "not_sent": self.not_sent,
            "stopped": dict(self.stopped) if self.stopped else None,
            "steps": steps,
            "elapsed_s": round(elapsed, 3),
            "calls_per_s": round(self.calls / elapsed, 3) if elapsed > 0 else None,
        }

    def to_markdown(self, title: str = "Generation summary") -> str:
        summary = self.summary()
        lines = [f"## {title}", "", "| step | calls | cache hits | tokens in | tokens out | cost (USD) |"]
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, s in summary["steps"].items():
            lines.append(
                f"| {name} | {s['calls']} | {s['cache_hits']} | {s['prompt_tokens']} | {s['completion_tokens']} "
                f"| {s['cost_usd']:.4f} |"
            )
        lines.append(
            f"| **total** | **{summary['calls']}** | **{summary['cache_hits']}** | **{summary['prompt_tokens']}** "
            f"| **{summary['completion_tokens']}** | **{summary['cost_usd']:.4f}** |"
        )
        lines += [
            "",
            f"Elapsed: {summary['elapsed_s']:.1f} s; "
            f"cost saved by the cache: ${summary['cost_saved_by_cache_usd']:.4f}.",
        ]
        for heading, counter in (
            ("Items", summary["items"]),
            ("Filtered out", summary["filtered"]),
            ("Retries by cause", summary["retries"]),
            ("Failures by cause", summary["failures"]),
        ):
            if counter:
                lines += ["", f"**{heading}:** " + ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))]
        if self.stopped:
            lines += [
                "",
                f"**Stopped early:** {self.stopped['cause']} ({self.not_sent} requests not sent): "
                f"{self.stopped['message']}",
            ]
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path, *, extra: Mapping[str, Any] | None = None) -> None:
        """``summary.json`` and ``summary.md`` in ``directory``.

        The top-level counters are this run's; a rerun into the same folder keeps the earlier runs' accounting:
        ``runs`` lists every run's counters (oldest first) and ``total`` adds them up (calls, tokens, cost,
        failures, ... of all runs of the folder).
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "summary.json"
        run = self.summary()
        entry = {
            "started": _iso(self.started),
            "finished": _iso(time.time()),
            **{k: run[k] for k in _RUN_KEYS if k in run},
        }
        runs = [*_previous_runs(path), entry]
        data = {**(extra or {}), **run, "runs": runs, "total": _total(runs)}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        markdown = self.to_markdown()
        if len(runs) > 1:
            total = data["total"]
            markdown += (
                f"\nAll {len(runs)} runs of this folder: {total['calls']} calls, {total['cache_hits']} cache hits, "
                f"{total['prompt_tokens']} tokens in, {total['completion_tokens']} tokens out, "
                f"${total['cost_usd']:.4f}"
                + (
                    "; failures: " + ", ".join(f"{k} {v}" for k, v in sorted(total["failures"].items()))
                    if total["failures"]
                    else ""
                )
                + ".\n"
            )
        (folder / "summary.md").write_text(markdown, encoding="utf-8")


# the counters of one run kept in summary.json's "runs"; numbers are added up in "total", counters merged
_RUN_KEYS = (
    "calls",
    "errors",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cost_saved_by_cache_usd",
    "not_sent",
    "elapsed_s",
    "retries",
    "failures",
    "items",
    "filtered",
    "stopped",
    "steps",
)
_COUNTERS = ("retries", "failures", "items", "filtered")


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _previous_runs(path: Path) -> list[dict[str, Any]]:
    """The runs recorded in an existing ``summary.json`` (one entry for a summary written before ``runs``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        # unreadable: keep it next to the new one rather than silently dropping its accounting
        path.replace(path.with_name(path.stem + f".unreadable-{int(time.time())}.json"))
        return []
    if not isinstance(data, dict):
        return []
    runs = data.get("runs")
    if isinstance(runs, list):
        return [r for r in runs if isinstance(r, dict)]
    if "calls" in data:  # written by a version without per-run entries: its top level is that one run
        return [{k: data[k] for k in _RUN_KEYS if k in data}]
    return []


def _add(total: dict[str, Any], entry: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def _total(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers added up and counters merged over ``runs``."""
    numbers = tuple(k for k in _RUN_KEYS if k not in (*_COUNTERS, "stopped", "steps"))
    total: dict[str, Any] = {"runs": len(runs), **dict.fromkeys(numbers, 0)}
    counters: dict[str, Counter[str]] = {k: Counter() for k in _COUNTERS}
    steps: dict[str, dict[str, Any]] = {}
    for run in runs:
        _add(total, run, numbers)
        for key in _COUNTERS:
            if isinstance(run.get(key), dict):
                counters[key].update({k: v for k, v in run[key].items() if isinstance(v, int)})
        for name, counts in (run.get("steps") or {}).items():
            if isinstance(counts, dict):
                _add(steps.setdefault(name, {}), counts, tuple(counts))
    for key in ("cost_usd", "cost_saved_by_cache_usd", "elapsed_s"):
        total[key] = round(total[key], 6)
    for counts in steps.values():
        if "cost_usd" in counts:
            counts["cost_usd"] = round(counts["cost_usd"], 6)
    return {**total, **{k: dict(v) for k, v in counters.items()}, "steps": dict(sorted(steps.items()))}
