"""Persistent SQLite cache of LLM responses, keyed by model + messages + generation parameters.

A rerun of the same job makes zero LLM calls; a job killed at any moment (SIGKILL included) keeps every
response already received, because each one is committed as it arrives (SQLite WAL journal).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.generate.records import utc_now

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CachedResponse:
    """One stored completion."""

    text: str | None
    finish_reason: str | None
    usage: dict[str, int]
    model: str | None
    created: str
    batch: bool = False


def cache_key(model: str, messages: Iterable[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    """Stable key: sha256 of the model id, the messages (role + text) and the sorted generation parameters."""
    payload = json.dumps(
        {"v": SCHEMA_VERSION, "model": model, "messages": list(messages), "params": dict(params)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_CACHE_FIX = "pass another file with --cache, or move this one away (a new cache is created)."
_SQLITE_HEADER = b"SQLite format 3\x00"


class CacheError(SyntrieverError):
    """The response cache file cannot be used (a folder, not a SQLite database, unreadable)."""


def check_cache_file(path: str | Path) -> None:
    """Fail, creating nothing, when ``path`` cannot be a response cache: a folder, or an existing non-empty file
    that is not a SQLite database. A missing file is fine (it is created on first use).

    :raises CacheError: Naming the file and the fix.
    """
    file = Path(path)
    if file.is_dir():
        raise CacheError(f"The response cache {file} is a folder, not a file: {_CACHE_FIX}")
    if file.parent.exists() and not file.parent.is_dir():
        raise CacheError(f"The response cache {file} is inside {file.parent}, which is a file: {_CACHE_FIX}")
    if not file.exists():
        return
    try:
        with file.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as error:
        raise CacheError(f"Cannot read the response cache {file} ({error.strerror or error}): {_CACHE_FIX}") from None
    if header and header != _SQLITE_HEADER:
        raise CacheError(f"The response cache {file} is not a SQLite database: {_CACHE_FIX}")


class ResponseCache:
    """Thread-safe SQLite response store.

    :param path: Database file (created with its parent folder); ``":memory:"`` for a throw-away cache.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            check_cache_file(self.path)
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as error:
            raise CacheError(f"Cannot open the response cache {self.path} ({error}): {_CACHE_FIX}") from None
        try:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model TEXT NOT NULL, prompt TEXT, created TEXT NOT NULL,"
                " request TEXT NOT NULL, response TEXT NOT NULL)"
            )
        except sqlite3.Error as error:
            self._db.close()
            raise CacheError(
                f"The response cache {self.path} is not a usable SQLite database ({error}): {_CACHE_FIX}"
            ) from None

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        return CachedResponse(
            text=data.get("text"),
            finish_reason=data.get("finish_reason"),
            usage=data.get("usage") or {},
            model=data.get("model"),
            created=data.get("created", ""),
            batch=bool(data.get("batch", False)),
        )

    def put(
        self,
        key: str,
        *,
        model: str,
        prompt: str | None,
        request: Mapping[str, Any],
        text: str | None,
        finish_reason: str | None,
        usage: Mapping[str, int] | None,
        response_model: str | None = None,
        batch: bool = False,
    ) -> None:
        """Store a response (the first one stored for a key wins; later puts are ignored)."""
        response = {
            "text": text,
            "finish_reason": finish_reason,
            "usage": dict(usage or {}),
            "model": response_model,
            "created": utc_now(),
            "batch": batch,
        }
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO responses (key, model, prompt, created, request, response) VALUES (?,?,?,?,?,?)",
                (
                    key,
                    model,
                    prompt,
                    response["created"],
                    json.dumps(request, ensure_ascii=False, default=str),
                    json.dumps(response, ensure_ascii=False),
                ),
            )

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def __bool__(self) -> bool:  # an empty cache is still a cache (``cache or default`` must not drop it)
        return True

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
