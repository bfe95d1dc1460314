"""The resumable loop every generation task shares: items in, JSONL records out, progress and failures.

An *item* (a query, a passage) yields zero or more records with stable ids. Records are appended to the output
JSONL as soon as an item finishes (fsync'd), and the item is marked done in ``<output>.done.jsonl`` only when
none of its LLM answers failed. A rerun skips done items; items that failed or were interrupted are redone,
their already-answered requests come from the response cache (no new calls) and their already-written
records are skipped by id, so a run killed at any point finishes with no duplicates and nothing lost.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

from syntriever_haystack.generate.accounting import Accounting
from syntriever_haystack.generate.llm import Deferred, LLMClient, gather_answers
from syntriever_haystack.generate.prompts import PromptTemplate
from syntriever_haystack.generate.records import JsonlStore, utc_now

T = TypeVar("T")

__all__ = ["ItemResult", "LoopStats", "gather_answers", "process_items", "provenance"]


@dataclass
class ItemResult:
    """What a worker produced for one item: records to write, and failures (cause per failed step)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoopStats(Generic[T]):
    done: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    records: int = 0
    duplicates_skipped: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


def provenance(
    client: LLMClient | None, prompts: Iterable[PromptTemplate], *, judge: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Provenance block written into every record.

    ``created`` is when the block was made (the start of a run or phase); the generators overwrite it with the
    time each record is made. ``parameters`` are the generation parameters each prompt is sent with (its
    defaults with the run's overrides), ``generation_kwargs`` the run's overrides alone.
    """
    prompts = list(prompts)
    data: dict[str, Any] = {"created": utc_now(), "prompts": [p.label for p in prompts]}
    if client is not None:
        data["model"] = client.model
        data["generator"] = type(client.generator).__name__
        data["generation_kwargs"] = client.settings.generation_kwargs or {}
        data["parameters"] = {p.name: client.request_kwargs(p) for p in prompts}
        data["structured_output"] = client.settings.structured_output
    if judge is not None:
        data["judge"] = judge
    data.update(extra)
    return data


async def process_items(
    items: Sequence[T],
    worker: Callable[[T], Awaitable[ItemResult]],
    *,
    item_id: Callable[[T], str],
    output: Path,
    accounting: Accounting,
    parallel: int = 16,
    desc: str = "generate",
    progress: bool = True,
) -> LoopStats[T]:
    """Run ``worker`` over ``items`` with up to ``parallel`` items in flight, appending records to ``output``."""
    stats: LoopStats[T] = LoopStats()
    output.parent.mkdir(parents=True, exist_ok=True)
    done_path = output.with_name(output.name.removesuffix(".jsonl") + ".done.jsonl")
    with JsonlStore(output) as store, JsonlStore(done_path) as done:
        todo = [item for item in items if item_id(item) not in done.ids]
        stats.skipped = len(items) - len(todo)
        accounting.count_item("skipped_done", stats.skipped)
        semaphore = asyncio.Semaphore(max(1, parallel))
        bar = tqdm(total=len(todo), desc=desc, unit="item", disable=not progress, dynamic_ncols=True)

        async def one(item: T) -> None:
            key = item_id(item)
            async with semaphore:
                try:
                    result = await worker(item)
                except Deferred:
                    stats.deferred += 1
                    accounting.count_item("deferred")
                    bar.update(1)
                    return
            before = store.duplicates_skipped
            for record in result.records:
                store.append(record)
            stats.duplicates_skipped += store.duplicates_skipped - before
            stats.records += len(result.records) - (store.duplicates_skipped - before)
            if result.failures:
                stats.failed += 1
                accounting.count_item("failed")
                stats.failures.extend({"item": key, **f} for f in result.failures)
            else:
                done.append({"id": key, "records": len(result.records), "finished": utc_now()})
                stats.done += 1
                accounting.count_item("done")
            bar.update(1)
            bar.set_postfix(accounting.postfix(), refresh=False)

        await asyncio.gather(*(one(item) for item in todo))
        bar.close()
    failures_path = output.with_name(output.name.removesuffix(".jsonl") + ".failures.jsonl")
    tmp = failures_path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for failure in stats.failures:
            handle.write(json.dumps(failure, ensure_ascii=False) + "\n")
    os.replace(tmp, failures_path)
    return stats
