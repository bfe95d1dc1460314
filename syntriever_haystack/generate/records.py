"""Generated records: their shapes, and an append-only, crash-safe JSONL store to keep them in.

Generation is slow (an LLM call per passage, query and judgment) and gets interrupted: a laptop sleeps, a job is
killed, the LLM server goes away. :class:`JsonlStore` makes every finished record durable the moment it is
appended (one JSON line, flushed and ``fsync``-ed), survives a ``SIGKILL`` in the middle of a write (the torn
final line is removed on the next :meth:`JsonlStore.open`), and knows the ids it already holds, so a resumed run
skips finished work and never writes a record twice.

The record shapes (:class:`RetrieverExample`, :class:`PreferenceTriple`, :class:`RerankerGroup`) are what the
generators write and what :mod:`syntriever_haystack.generate.exporters` turns into training / evaluation files.
Every record has a unique string ``"id"`` (use :func:`stable_id` over its inputs, so a rerun produces the same
id) and a ``"kind"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict

from syntriever_haystack.errors import SyntrieverError

try:  # POSIX: an advisory lock keeps two processes from appending to one store.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RECORD_KINDS",
    "JsonlStore",
    "JsonlStoreError",
    "NegativePassage",
    "PositivePassage",
    "PreferenceTriple",
    "RankedPassage",
    "RecordsError",
    "RerankerGroup",
    "RerankerNegative",
    "RerankerPositive",
    "RetrieverExample",
    "read_records",
    "stable_id",
    "utc_now",
]


class RecordsError(SyntrieverError, ValueError):
    """A generated record is malformed (missing field, wrong kind, ...); the message names the record and field."""


class JsonlStoreError(SyntrieverError, ValueError):
    """A JSONL store cannot be opened or written (corrupted line, locked by another process, bad record)."""


# --------------------------------------------------------------------------------------------------- record shapes

PositiveSource = Literal["gold", "llm_positive", "cot"]
NegativeSource = Literal["llm_negative", "rejected_positive", "hard_negative"]
QueryType = Literal["question", "keywords", "claim"]
RecordKind = Literal["retriever", "preference", "reranker"]
RECORD_KINDS: tuple[str, ...] = ("retriever", "preference", "reranker")


class PositivePassage(TypedDict):
    """A positive text of a :class:`RetrieverExample`.

    :ivar text: The passage text (for ``"cot"``: the LLM's whole reasoning about the query).
    :ivar source: ``"gold"`` (the dataset's passage, or the passage a synthetic query was written from),
        ``"llm_positive"`` (the LLM's ``p+``, kept because it was verified) or ``"cot"`` (``q_cot``).
    :ivar doc_id: The corpus id for a ``"gold"`` passage; ``None`` for generated text.
    :ivar judge: What verified it (e.g. ``"llm:gpt-4o-mini"``, ``"cross-encoder:<name>@0.5"``); ``None`` if not
        judged.
    :ivar label: The judge's verdict (``True`` = relevant); ``None`` if not judged.
    """

    text: str
    source: PositiveSource
    doc_id: str | None
    judge: str | None
    label: bool | None


class NegativePassage(TypedDict):
    """A negative text of a :class:`RetrieverExample`.

    :ivar text: The passage text.
    :ivar source: ``"llm_negative"`` (the LLM's ``p-``), ``"rejected_positive"`` (a ``p+`` the judge rejected)
        or ``"hard_negative"`` (a retrieved corpus passage judged not relevant).
    :ivar doc_id: The corpus id of a retrieved passage; ``None`` for generated text.
    :ivar judge: What judged it; ``None`` if not judged.
    :ivar label: The judge's verdict (``False`` = not relevant); ``None`` if not judged.
    """

    text: str
    source: NegativeSource
    doc_id: str | None
    judge: str | None
    label: bool | None


class RetrieverExample(TypedDict):
    """Stage-1 training example ``(q, P(q), N(q))`` (METHOD.md §1).

    :ivar id: Unique record id (e.g. ``stable_id("retriever", query_id)``).
    :ivar kind: Always ``"retriever"``.
    :ivar query_id: Id of the query (the dataset's, or the synthetic query's).
    :ivar query: The query text.
    :ivar positives: ``P(q)``: gold passage, verified ``p+``, ``q_cot``.
    :ivar negatives: ``N(q)``: ``p-`` (unless judged relevant), rejected ``p+``, hard negatives.
    :ivar provenance: How it was made: e.g. ``{"llm": ..., "temperature": ..., "prompts": {...}, "created":
        utc_now(), "judge": ...}``; free-form, JSON-serialisable.
    """

    id: str
    kind: Literal["retriever"]
    query_id: str
    query: str
    positives: list[PositivePassage]
    negatives: list[NegativePassage]
    provenance: dict[str, Any]


class RankedPassage(TypedDict):
    """One side of a :class:`PreferenceTriple`.

    :ivar doc_id: Corpus id of the retrieved passage.
    :ivar text: Its text.
    :ivar rank: Its 1-based rank in the stage-1 retriever's results.
    """

    doc_id: str
    text: str
    rank: int


class PreferenceTriple(TypedDict):
    """Stage-2 preference ``(q, c+, c-)`` from a pairwise LLM comparison (METHOD.md §2).

    :ivar id: Unique record id (e.g. ``stable_id("preference", query_id, preferred_id, rejected_id)``).
    :ivar kind: Always ``"preference"``.
    :ivar query_id: Id of the query.
    :ivar query: The query text.
    :ivar preferred: ``c+``, the passage judged to answer the query better.
    :ivar rejected: ``c-``, the other passage (often still relevant: this is a *relative* judgment).
    :ivar votes: The verdicts behind it, e.g. ``{"ab": "a", "ba": "a", "consistent": true}`` when both
        presentation orders were asked.
    :ivar judge: What compared them (e.g. ``"llm:gpt-4o"`` or ``"cross-encoder:<name>"``).
    :ivar provenance: How it was made (free-form, JSON-serialisable).
    """

    id: str
    kind: Literal["preference"]
    query_id: str
    query: str
    preferred: RankedPassage
    rejected: RankedPassage
    votes: dict[str, Any]
    judge: str
    provenance: dict[str, Any]


class RerankerPositive(TypedDict):
    """The positive of a :class:`RerankerGroup`: the source passage, verified.

    :ivar doc_id: Corpus id of the source passage.
    :ivar text: Its text.
    :ivar label: The judge's verdict: ``True`` / ``False``, or a graded relevance (``int``, ≥ 1 = relevant);
        ``None`` if not judged.
    :ivar score: The judge's score (probability, logit, LLM log-probability, ...), if it gives one.
    :ivar judge: What judged it; ``None`` if not judged.
    """

    doc_id: str
    text: str
    label: bool | int | None
    score: float | None
    judge: str | None


class RerankerNegative(TypedDict):
    """A localised hard negative of a :class:`RerankerGroup`: a retrieved candidate judged not relevant.

    :ivar doc_id: Corpus id of the candidate.
    :ivar text: Its text.
    :ivar label: The judge's verdict (``False`` or grade ``0``); ``None`` if not judged.
    :ivar score: The judge's score, if any.
    :ivar judge: What judged it.
    :ivar rank: Its 1-based rank in the first-stage retriever's results.
    """

    doc_id: str
    text: str
    label: bool | int | None
    score: float | None
    judge: str | None
    rank: int


class RerankerGroup(TypedDict):
    """An LCE training group ``{d+} ∪ {d1-, ...}`` for a synthetic query (METHOD.md §3).

    :ivar id: Unique record id (e.g. ``stable_id("reranker", query_id)``).
    :ivar kind: Always ``"reranker"``.
    :ivar query_id: Id of the synthetic query.
    :ivar query: The query text.
    :ivar query_type: The kind of query the LLM was asked for.
    :ivar source_doc_id: Corpus id of the passage the query was written from.
    :ivar positive: The source passage with its verification.
    :ivar negatives: Retrieved candidates judged not relevant, best-ranked first.
    :ivar provenance: How it was made (free-form, JSON-serialisable).
    """

    id: str
    kind: Literal["reranker"]
    query_id: str
    query: str
    query_type: QueryType
    source_doc_id: str
    positive: RerankerPositive
    negatives: list[RerankerNegative]
    provenance: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------- helpers


def stable_id(*parts: str) -> str:
    """A deterministic 16-hex-digit id: SHA-1 of the parts joined by ``"\\x1f"`` (unit separator)."""
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def utc_now() -> str:
    """The current UTC time in ISO-8601 with a ``Z`` suffix, to the millisecond (``2025-01-31T12:00:00.123Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fsync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------------- the store


class JsonlStore:
    """An append-only JSONL file of records with unique string ``"id"`` fields; crash-safe and resumable.

    * :meth:`open` reads the existing file. A torn final line (the process was killed while writing it) is
      removed by truncating the file after its last complete line (``repaired_bytes`` says how much was cut;
      a final line that is a complete JSON object only missing its newline is kept and completed). Any other
      unreadable line is an error naming ``file:line``: it was not left by an interrupted append.
    * :meth:`append` writes one line (``ensure_ascii=False``, keys in the record's order) and flushes and
      ``fsync``-s it before returning: once it returns, the record survives a crash. A record whose id is
      already stored is skipped and counted in ``duplicates_skipped``.
    * Thread-safe (one lock); on POSIX an advisory ``flock`` stops a second process from appending to the
      same file at the same time.

    Use it as a context manager::

        with JsonlStore("out/retriever.jsonl") as store:
            for query_id, query in todo:
                if stable_id("retriever", query_id) in store.ids:
                    continue  # finished in an earlier run
                store.append(make_example(query_id, query))

    :param path: The JSONL file (created with its parent folders if missing: the store is for *writing*; read an
        input file with :func:`read_records`, which never creates anything).
    :param fsync: ``fsync`` after every append (the default; turn off only for throw-away data).
    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.ids: set[str] = set()
        self.duplicates_skipped = 0
        self.repaired_bytes = 0
        self._lock = threading.RLock()
        self._fd: int | None = None

    # -- lifecycle

    def open(self) -> JsonlStore:
        """Open (creating if needed), repair a torn final line, and load the stored ids. Returns ``self``."""
        with self._lock:
            if self._fd is not None:
                return self
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                created = not self.path.exists()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise JsonlStoreError(f"cannot open {self.path} for appending: {exc.strerror or exc}.") from None
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise JsonlStoreError(
                            f"{self.path} is already open for appending (another process or another JsonlStore on "
                            "the same file); two writers would interleave records. Stop the other run, close the "
                            "other store, or write to a different file."
                        ) from None
                self.ids = self._scan(fd)
            except BaseException:
                os.close(fd)
                raise
            if created:
                _fsync_directory(self.path.parent)
            self._fd = fd
        return self

    def close(self) -> None:
        """Release the file (appended records are already on disk). Safe to call twice."""
        with self._lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)  # also releases the flock

    @property
    def closed(self) -> bool:
        """Whether the store is closed (not opened yet, or closed)."""
        return self._fd is None

    def __enter__(self) -> JsonlStore:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self.ids

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.ids)} records"
        return f"JsonlStore({str(self.path)!r}, {state})"

    # -- reading

    def _scan(self, write_fd: int) -> set[str]:
        """Read every line: collect ids, repair a torn tail (truncating through ``write_fd``), fail on corruption."""
        ids: dict[str, int] = {}
        offset = 0
        with self.path.open("rb") as reader:
            for line_no, raw in enumerate(reader, start=1):
                if not raw.endswith(b"\n"):  # the final line, without its newline
                    record = self._parse_tail(raw)
                    if record is None:
                        os.ftruncate(write_fd, offset)
                        os.fsync(write_fd)
                        self.repaired_bytes = len(raw)
                        break
                    os.write(write_fd, b"\n")  # a complete record that only lacked its newline: keep it
                    os.fsync(write_fd)
                    raw += b"\n"
                else:
                    record = self._parse_line(raw, line_no)
                offset += len(raw)
                if record is None:  # blank line
                    continue
                record_id = self._record_id(record, line_no)
                if record_id in ids:
                    raise JsonlStoreError(
                        f"{self.path}:{line_no}: duplicate record id {record_id!r} (first on line {ids[record_id]}); "
                        "a JsonlStore never writes an id twice, so the file was merged or edited by hand. Delete one "
                        "of the two lines."
                    )
                ids[record_id] = line_no
        return set(ids)

    @staticmethod
    def _parse_tail(raw: bytes) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
            return None
        return record

    def _parse_line(self, raw: bytes, line_no: int) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise JsonlStoreError(
                f"{self.path}:{line_no}: not valid UTF-8 (byte {exc.start}); only the last line can be torn by an "
                "interrupted write, so this file was corrupted or edited. Fix or delete that line."
            ) from None
        except json.JSONDecodeError as exc:
            raise JsonlStoreError(
                f"{self.path}:{line_no}: invalid JSON ({exc.msg} at column {exc.colno}); only the last line can be "
                "torn by an interrupted write, so this file was corrupted or edited. Fix or delete that line."
            ) from None
        if not isinstance(record, dict):
            raise JsonlStoreError(f"{self.path}:{line_no}: expected a JSON object, got {type(record).__name__}.")
        return record

    def _record_id(self, record: dict[str, Any], line_no: int) -> str:
        record_id = record.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise JsonlStoreError(
                f'{self.path}:{line_no}: record has no string "id" field; every record of a JsonlStore needs a '
                "unique id."
            )
        return record_id

    def records(self) -> Iterator[dict[str, Any]]:
        """Iterate over the stored records in file order (the file as it was when iteration started)."""
        with self._lock:
            fd = self._require_open()
            size = os.fstat(fd).st_size
        with self.path.open("rb") as reader:
            remaining = size
            for line_no, raw in enumerate(reader, start=1):
                if remaining <= 0:
                    break
                remaining -= len(raw)
                record = self._parse_line(raw, line_no)
                if record is not None:
                    yield record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.records()

    # -- writing

    def _require_open(self) -> int:
        if self._fd is None:
            raise JsonlStoreError(
                f"JsonlStore({str(self.path)!r}) is not open: call store.open() or use "
                "`with JsonlStore(...) as store:`."
            )
        return self._fd

    def append(self, record: dict[str, Any]) -> bool:
        """Write ``record`` as one line, durably (flush + fsync), unless its id is already stored.

        :returns: ``True`` if written, ``False`` if skipped as a duplicate id (counted in ``duplicates_skipped``).
        :raises JsonlStoreError: The store is not open, the record has no string ``"id"``, it is not
            JSON-serialisable (NaN / infinity included: the file must stay standard JSON), or the write failed
            (the file is then rolled back to its previous end).
        """
        if not isinstance(record, dict):
            raise JsonlStoreError(f"a record must be a dict, got {type(record).__name__}.")
        record_id = record.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise JsonlStoreError(f'a record needs a non-empty string "id" field (got {record_id!r}); see stable_id().')
        try:
            line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise JsonlStoreError(
                f"record {record_id!r} cannot be written as JSON: {exc}. Convert numpy values / sets to plain "
                "Python types and replace NaN or infinity with null."
            ) from None
        data = (line + "\n").encode("utf-8")
        with self._lock:
            fd = self._require_open()
            if record_id in self.ids:
                self.duplicates_skipped += 1
                return False
            end = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):  # leave no partial line for the next append to continue
                    os.ftruncate(fd, end)
                raise JsonlStoreError(
                    f"could not append to {self.path}: {exc.strerror or exc} (the file was rolled back)."
                ) from None
            self.ids.add(record_id)
            return True


def read_records(path: str | Path, *, what: str = "input file") -> list[dict[str, Any]]:
    """The records of an existing JSONL file, read only: nothing is created, locked, repaired or truncated.

    A torn final line (a run killed while appending) is left out; any other unreadable line is an error naming
    ``file:line``, as in :class:`JsonlStore`.

    :param what: How the error names the file (e.g. ``"--queries-file"``).
    :raises JsonlStoreError: ``path`` does not exist, is not a file, or holds an invalid line.
    """
    file = Path(path)
    if not file.is_file():
        problem = "is a folder, not a JSONL file" if file.is_dir() else "does not exist"
        raise JsonlStoreError(f"{what} {file} {problem}: check the path.")
    reader = JsonlStore(file)  # only for its line parsing; never opened
    records: list[dict[str, Any]] = []
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise JsonlStoreError(f"cannot read {what} {file}: {exc.strerror or exc}.") from None
    lines = data.splitlines(keepends=True)
    for line_no, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n") and line_no == len(lines):
            record = reader._parse_tail(raw)  # a torn final line is skipped, a complete one kept
        else:
            record = reader._parse_line(raw, line_no)
        if record is not None:
            records.append(record)
    return records
