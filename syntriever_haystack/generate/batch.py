"""OpenAI Batch API mode: half the price for large jobs, resumable across interruptions.

A generation task runs in *collect* mode: every request not in the cache is queued (``LLMClient.pending``)
instead of being sent. :class:`BatchRunner` writes the queued requests as a JSONL request file (``custom_id`` =
the cache key), uploads it, creates the batch, polls it, and writes each result into the response cache. The task
then runs again: answers come from the cache, and requests that depend on them (e.g. verification of a
generated passage) are queued for the next round. Batch ids are saved in ``batches.json`` before polling, so an
interrupted run polls and ingests the batches it already submitted instead of paying for them twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.generate.accounting import Accounting
from syntriever_haystack.generate.cache import ResponseCache
from syntriever_haystack.generate.records import utc_now

TERMINAL = {"completed", "failed", "expired", "cancelled"}


class BatchError(SyntrieverError):
    """A batch job could not be submitted or failed as a whole."""


@dataclass
class BatchOutcome:
    submitted: int = 0
    ingested: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)


def _openai_client_from_generator(generator: Any) -> Any:
    """An ``openai.OpenAI`` client with the generator's key, base URL and organisation."""
    import openai

    api_key = getattr(generator, "api_key", None)
    key = api_key.resolve_value() if api_key is not None and hasattr(api_key, "resolve_value") else None
    return openai.OpenAI(
        api_key=key or "unused",
        base_url=getattr(generator, "api_base_url", None),
        organization=getattr(generator, "organization", None),
        max_retries=5,
    )


class BatchRunner:
    """Submit queued requests as OpenAI batches and ingest the results into the cache.

    :param client: An ``openai.OpenAI`` client (see :meth:`from_generator`).
    :param cache: The run's response cache; results are written there under their ``custom_id``.
    :param state_dir: Where request files and ``batches.json`` (submitted batch ids) live.
    :param poll_interval_s: Seconds between status polls.
    :param completion_window: The Batch API completion window.
    :param max_requests_per_batch: Requests per batch file (the API allows 50,000).
    """

    def __init__(
        self,
        client: Any,
        cache: ResponseCache,
        state_dir: str | Path,
        *,
        accounting: Accounting | None = None,
        poll_interval_s: float = 30.0,
        completion_window: str = "24h",
        max_requests_per_batch: int = 50_000,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = print,
    ) -> None:
        self.client = client
        self.cache = cache
        self.state_dir = Path(state_dir)
        self.accounting = accounting or Accounting()
        self.poll_interval_s = poll_interval_s
        self.completion_window = completion_window
        self.max_requests_per_batch = max_requests_per_batch
        self._sleep = sleep
        self._log = log

    @classmethod
    def from_generator(cls, generator: Any, cache: ResponseCache, state_dir: str | Path, **kwargs: Any) -> BatchRunner:
        return cls(_openai_client_from_generator(generator), cache, state_dir, **kwargs)

    # ----------------------------------------------------------------------------------------------- state
    @property
    def state_path(self) -> Path:
        return self.state_dir / "batches.json"

    def _load_state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            return dict(json.loads(self.state_path.read_text(encoding="utf-8")))
        return {"batches": []}

    def _save_state(self, state: Mapping[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        os.replace(tmp, self.state_path)

    # ---------------------------------------------------------------------------------------------- public
    def run(self, pending: Mapping[str, Mapping[str, Any]]) -> BatchOutcome:
        """Finish batches left by an interrupted run, then submit ``pending`` (minus cached keys) and ingest."""
        outcome = BatchOutcome()
        state = self._load_state()
        for entry in state["batches"]:
            if not entry.get("ingested"):
                self._finish(entry, state, outcome)
        todo = {k: v for k, v in pending.items() if k not in self.cache}
        keys = list(todo)
        for start in range(0, len(keys), self.max_requests_per_batch):
            chunk = keys[start : start + self.max_requests_per_batch]
            entry = self._submit({k: todo[k] for k in chunk}, state)
            outcome.submitted += len(chunk)
            self._finish(entry, state, outcome)
        return outcome

    def _submit(self, requests: Mapping[str, Mapping[str, Any]], state: dict[str, Any]) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        index = len(state["batches"])
        path = self.state_dir / f"requests-{index:04d}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for key, body in requests.items():
                line = {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": dict(body)}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        with path.open("rb") as handle:
            uploaded = self.client.files.create(file=handle, purpose="batch")
        batch = self.client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window=self.completion_window
        )
        entry = {
            "id": batch.id,
            "input_file_id": uploaded.id,
            "requests": len(requests),
            "request_file": path.name,
            "submitted": utc_now(),
            "ingested": False,
        }
        state["batches"].append(entry)
        self._save_state(state)  # saved before polling: an interrupted run resumes this batch
        self._log(f"[batch] submitted {batch.id} with {len(requests)} requests")
        return entry

    def _finish(self, entry: dict[str, Any], state: dict[str, Any], outcome: BatchOutcome) -> None:
        batch = self.client.batches.retrieve(entry["id"])
        while batch.status not in TERMINAL:
            counts = getattr(batch, "request_counts", None)
            done = f" {counts.completed}/{counts.total}" if counts is not None else ""
            self._log(f"[batch] {batch.id}: {batch.status}{done}; next check in {self.poll_interval_s:g} s")
            self._sleep(self.poll_interval_s)
            batch = self.client.batches.retrieve(entry["id"])
        outcome.batches.append(batch.id)
        if batch.status != "completed" and not batch.output_file_id:
            entry.update(ingested=True, status=batch.status)
            self._save_state(state)
            outcome.failed[f"batch_{batch.status}"] = outcome.failed.get(f"batch_{batch.status}", 0) + entry["requests"]
            self.accounting.fail(f"batch_{batch.status}")
            return
        if batch.output_file_id:
            content = self.client.files.content(batch.output_file_id).text
            for line in filter(None, (raw.strip() for raw in content.splitlines())):
                self._ingest(json.loads(line), outcome)
        if getattr(batch, "error_file_id", None):
            errors = self.client.files.content(batch.error_file_id).text
            for line in filter(None, (raw.strip() for raw in errors.splitlines())):
                record = json.loads(line)
                status = ((record.get("response") or {}).get("status_code")) or 0
                # a line-level error has a code; a failed request has its HTTP status (as in _ingest)
                code = ((record.get("error") or {}).get("code")) or (f"http_{status}" if status else "error")
                cause = f"batch_error:{code}"
                outcome.failed[cause] = outcome.failed.get(cause, 0) + 1
                self.accounting.fail(cause)
        entry.update(ingested=True, status=batch.status)
        self._save_state(state)

    def _ingest(self, record: Mapping[str, Any], outcome: BatchOutcome) -> None:
        key = str(record["custom_id"])
        response = record.get("response") or {}
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        if record.get("error") or status != 200 or not body.get("choices"):
            code = (record.get("error") or {}).get("code") if record.get("error") else f"http_{status}"
            cause = f"batch_error:{code}"
            outcome.failed[cause] = outcome.failed.get(cause, 0) + 1
            self.accounting.fail(cause)
            return
        choice = body["choices"][0]
        usage = {k: int(v) for k, v in (body.get("usage") or {}).items() if isinstance(v, int)}
        model = str(body.get("model") or "")
        self.cache.put(
            key,
            model=model,
            prompt="batch",
            request={"custom_id": key},
            text=(choice.get("message") or {}).get("content"),
            finish_reason=choice.get("finish_reason"),
            usage=usage,
            response_model=model,
            batch=True,
        )
        self.accounting.record("batch", model, usage, cached=False, batch=True)
        outcome.ingested += 1
