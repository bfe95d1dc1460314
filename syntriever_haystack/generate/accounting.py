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
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
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


class Accounting:
    """Thread-safe counters for one run; ``summary()`` is what lands in ``summary.json``.

    ``calls`` are requests that reached the LLM (retries included), ``cache_hits`` answers served from the
    cache, ``failures`` requests or answers given up on, by cause (``rate_limited``, ``timeout``,
    ``http_500``, ``malformed_json``, ``not_yes_no``, ...), ``retries`` re-sent requests by cause.
    """

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices or PriceTable()
        self.steps: dict[str, StepCounts] = {}
        self.failures: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.filtered: Counter[str] = Counter()
        self.saved_usd = 0.0
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
            self._step(step).calls += 1

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
                "cache_hits": s.cache_hits,
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "cost_usd": round(s.cost_usd, 6),
            }
            for name, s in sorted(self.steps.items())
        }
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "prompt_tokens": sum(s.prompt_tokens for s in self.steps.values()),
            "completion_tokens": sum(s.completion_tokens for s in self.steps.values()),
            "cost_usd": round(self.cost_usd, 6),
            "cost_saved_by_cache_usd": round(self.saved_usd, 6),
            "retries": dict(self.retries),
            "failures": dict(self.failures),
            "items": dict(self.items),
            "filtered": dict(self.filtered),
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
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path, *, extra: Mapping[str, Any] | None = None) -> None:
        """``summary.json`` and ``summary.md`` in ``directory``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        data = {**(extra or {}), **self.summary()}
        (folder / "summary.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (folder / "summary.md").write_text(self.to_markdown(), encoding="utf-8")
