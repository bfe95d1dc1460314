"""Strict reader for BEIR-layout folders: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

Every problem that would make an evaluation wrong is an error naming the file and line (bad JSON, a record
without ``_id``, a duplicate id, a qrels row that is not ``query-id<TAB>corpus-id<TAB>score``, a missing
split, an empty corpus). Problems that are safe to skip (a qrels row pointing at a document or query that
does not exist, a blank line) are skipped and *counted* in :attr:`BeirDataset.warnings`, so a caller can
show them instead of losing them silently.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from syntriever_haystack.errors import SyntrieverError


class DatasetError(SyntrieverError, ValueError):
    """A dataset folder or file is missing or malformed; the message names the file (and line) and the fix."""


class Passage(NamedTuple):
    """One corpus entry."""

    title: str
    text: str
    metadata: dict[str, Any]

    def model_text(self, include_title: bool = True, separator: str = " ") -> str:
        """The text a model sees: ``title + separator + text`` (BEIR convention), or the text alone."""
        if include_title and self.title:
            return (self.title + separator + self.text).strip()
        return self.text


@dataclass
class BeirDataset:
    """A corpus, the queries of one split and their relevance judgments.

    :param name: Dataset name (the folder name).
    :param path: The folder it was read from (``None`` when built in memory).
    :param split: The qrels split (``test``, ``dev``, ``train``, ...).
    :param corpus: Document id → :class:`Passage`, in file order.
    :param queries: Query id → text, only the queries judged in ``qrels`` (in file order).
    :param qrels: Query id → {document id → graded relevance}. Judgments of 0 are kept (they count for
        ``Judged@k`` and graded nDCG).
    :param warnings: Counted, human-readable notes about skipped records.
    """

    name: str
    path: Path | None
    split: str
    corpus: dict[str, Passage]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus order."""
        return list(self.corpus)

    def doc_texts(self, *, include_title: bool = True, separator: str = " ") -> list[str]:
        """The text of every document in corpus order; ``title + separator + text`` like BEIR by default."""
        return [p.model_text(include_title, separator) for p in self.corpus.values()]

    def fingerprint(self) -> str:
        """A SHA-256 over ids, titles and texts: two datasets with equal fingerprints have the same corpus."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for doc_id, passage in self.corpus.items():
                for part in (doc_id, passage.title, passage.text):
                    encoded = part.encode("utf-8")
                    digest.update(len(encoded).to_bytes(8, "little"))
                    digest.update(encoded)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def documents(self, *, include_title_in_content: bool = False) -> list[Any]:
        """The corpus as Haystack Documents (``id`` = BEIR ``_id``; ``meta`` = title + metadata)."""
        from haystack import Document

        docs = []
        for doc_id, p in self.corpus.items():
            content = (p.title + " " + p.text).strip() if include_title_in_content and p.title else p.text
            docs.append(Document(id=doc_id, content=content, meta={"title": p.title, **p.metadata}))
        return docs

    def relevant(self, query_id: str, *, min_relevance: int = 1) -> set[str]:
        """Document ids judged at least ``min_relevance`` for ``query_id``."""
        return {d for d, s in self.qrels.get(query_id, {}).items() if s >= min_relevance}

    def sample_queries(self, n: int, *, seed: int = 0) -> BeirDataset:
        """A copy restricted to a random sample of ``n`` judged queries (all of them if ``n`` is larger)."""
        import random

        if n <= 0:
            raise DatasetError(f"--max-queries must be positive, got {n}")
        ids = sorted(self.qrels)
        if n < len(ids):
            ids = sorted(random.Random(seed).sample(ids, n))
        keep = set(ids)
        return BeirDataset(
            name=self.name,
            path=self.path,
            split=self.split,
            corpus=self.corpus,
            queries={q: t for q, t in self.queries.items() if q in keep},
            qrels={q: j for q, j in self.qrels.items() if q in keep},
            warnings=[
                *self.warnings,
                f"evaluated a random sample of {len(keep)} of {len(self.qrels)} queries (seed {seed})",
            ],
            _fingerprint=self._fingerprint,
        )

    def summary(self) -> str:
        """One line: name, split, counts."""
        judgments = sum(len(v) for v in self.qrels.values())
        return (
            f"{self.name} [{self.split}]: {len(self.corpus):,} documents, {len(self.queries):,} queries, "
            f"{judgments:,} judgments"
        )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file; a file that is not UTF-8 (or not readable) is a
    :class:`DatasetError` naming the file and the fix, not a ``UnicodeDecodeError`` traceback."""
    line_no = 0
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line_no, line in enumerate(handle, start=1):
                yield line_no, line
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not UTF-8 text ({exc.reason} after line {line_no}); BEIR files are UTF-8: convert it, "
            f"e.g. iconv -f latin1 -t utf-8 {path} > converted, and replace the file."
        ) from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder; a BEIR folder has this as a file.") from None
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions.") from None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}:{line_no}: invalid JSON ({exc.msg} at column {exc.colno}); every line of a BEIR "
                "JSONL file must be one JSON object. Fix or delete that line."
            ) from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}.")
        yield line_no, record


def _record_id(path: Path, line_no: int, record: dict[str, Any]) -> str:
    raw = record.get("_id", record.get("id"))
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise DatasetError(f'{path}:{line_no}: record has no "_id"; BEIR records look like {{"_id": "...", ...}}.')
    return str(raw)


def read_corpus(path: str | Path) -> dict[str, Passage]:
    """Read ``corpus.jsonl``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} not found: a BEIR folder needs corpus.jsonl (one document per line).")
    corpus: dict[str, Passage] = {}
    first_line: dict[str, int] = {}
    for line_no, record in _iter_jsonl(path):
        doc_id = _record_id(path, line_no, record)
        if doc_id in corpus:
            raise DatasetError(
                f"{path}:{line_no}: duplicate document id {doc_id!r} (first seen on line {first_line[doc_id]}); "
                "ids must be unique."
            )
        text = record.get("text")
        if not isinstance(text, str):
            raise DatasetError(f'{path}:{line_no}: document {doc_id!r} has no string "text" field.')
        title = record.get("title") or ""
        metadata = record.get("metadata") or {}
        corpus[doc_id] = Passage(str(title), text, metadata if isinstance(metadata, dict) else {})
        first_line[doc_id] = line_no
    if not corpus:
        raise DatasetError(f"{path} is empty: the corpus needs at least one document.")
    return corpus


def read_queries(path: str | Path, *, duplicates: set[str] | None = None) -> dict[str, str]:
    """Read ``queries.jsonl``; errors name the file and line.

    :param duplicates: If given, ids that occur more than once with *different* texts are collected here
        instead of raising (the caller decides what to do with such ambiguous queries).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} not found: a BEIR folder needs queries.jsonl (one query per line).")
    queries: dict[str, str] = {}
    for line_no, record in _iter_jsonl(path):
        query_id = _record_id(path, line_no, record)
        text = record.get("text")
        if not isinstance(text, str):
            raise DatasetError(f'{path}:{line_no}: query {query_id!r} has no string "text" field.')
        if query_id in queries and queries[query_id] != text:
            if duplicates is None:
                raise DatasetError(f"{path}:{line_no}: duplicate query id {query_id!r} with a different text.")
            duplicates.add(query_id)
        queries.setdefault(query_id, text)
    return queries


def read_qrels(path: str | Path, *, stats: Counter[str] | None = None) -> dict[str, dict[str, int]]:
    """Read a ``qrels/<split>.tsv`` file (``query-id<TAB>corpus-id<TAB>score``, optional header line).

    Also accepts the four-column TREC format (``qid 0 docid rel``, whitespace separated). A repeated
    (query, document) row keeps the highest grade; ``stats`` (if given) counts ``duplicate_rows`` and
    ``conflicting_grades``.
    """
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 1:
            parts = line.split()
        if line_no == 1 and parts[-1].strip().lower() in {"score", "relevance", "rel", "label"}:
            continue  # header
        if len(parts) == 4:  # TREC: qid iteration docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DatasetError(
                f"{path}:{line_no}: expected 3 tab-separated columns (query-id, corpus-id, score), got "
                f"{len(parts)}: {line.strip()[:80]!r}"
            )
        query_id, doc_id, raw_score = (p.strip() for p in parts)
        try:
            score = int(float(raw_score))
        except ValueError:
            raise DatasetError(
                f"{path}:{line_no}: relevance {raw_score!r} is not a number; the third column is the graded "
                "relevance (0 = not relevant, 1+ = relevant)."
            ) from None
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged:
            if stats is not None:
                stats["duplicate_rows"] += 1
                stats["conflicting_grades"] += int(judged[doc_id] != score)
            score = max(score, judged[doc_id])
        judged[doc_id] = score
    if not qrels:
        raise DatasetError(f"{path} has no judgments: a qrels file needs at least one query-id/corpus-id/score row.")
    return qrels


def available_splits(folder: str | Path) -> list[str]:
    """The qrels splits present in a BEIR folder."""
    qrels_dir = Path(folder) / "qrels"
    return sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []


def load_beir(folder: str | Path, split: str = "test", *, name: str | None = None) -> BeirDataset:
    """Load a BEIR-layout folder for one split.

    Only the queries judged in ``qrels/<split>.tsv`` are kept. Judgments for a document missing from the
    corpus or a query missing from ``queries.jsonl`` are dropped and counted in ``warnings``.

    :param folder: Folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
    :param split: The qrels split to load.
    :param name: Name to report; defaults to the folder name.
    :raises DatasetError: The folder, a file or the split is missing or malformed (the message says which).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(
            f"dataset folder {folder} does not exist; pass --dataset PATH to a BEIR-layout folder "
            "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."
        )
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = available_splits(folder)
        found = f"available splits: {', '.join(splits)}" if splits else "the folder has no qrels/*.tsv at all"
        raise DatasetError(f"{qrels_path} not found: split {split!r} does not exist ({found}). Use --split NAME.")
    corpus = read_corpus(folder / "corpus.jsonl")
    ambiguous: set[str] = set()
    all_queries = read_queries(folder / "queries.jsonl", duplicates=ambiguous)
    qrels_stats: Counter[str] = Counter()
    raw_qrels = read_qrels(qrels_path, stats=qrels_stats)

    warnings: list[str] = []
    if qrels_stats["duplicate_rows"]:
        warnings.append(
            f"{qrels_path}: {qrels_stats['duplicate_rows']} repeated query/document row(s) merged "
            f"({qrels_stats['conflicting_grades']} with a different grade; the highest grade is kept)"
        )
    dropped = sum(1 for q in raw_qrels if q in ambiguous)
    if dropped:
        # The judgments of an id shared by different questions cannot be attributed: leave those queries out.
        raw_qrels = {q: j for q, j in raw_qrels.items() if q not in ambiguous}
        warnings.append(
            f"{folder / 'queries.jsonl'}: {len(ambiguous)} query id(s) occur several times with different texts "
            f"(e.g. {sorted(ambiguous)[0]!r}); {dropped} such judged queries are left out because their "
            "judgments cannot be attributed"
        )
    missing_docs: Counter[str] = Counter()
    missing_queries = 0
    qrels: dict[str, dict[str, int]] = {}
    for query_id, judged in raw_qrels.items():
        if query_id not in all_queries:
            missing_queries += 1
            continue
        kept = {}
        for doc_id, score in judged.items():
            if doc_id in corpus:
                kept[doc_id] = score
            else:
                missing_docs[doc_id] += 1
        if kept:
            qrels[query_id] = kept
    if missing_queries:
        warnings.append(
            f"{qrels_path}: skipped the judgments of {missing_queries} query id(s) not found in queries.jsonl"
        )
    if missing_docs:
        example = next(iter(missing_docs))
        warnings.append(
            f"{qrels_path}: skipped {sum(missing_docs.values())} judgment(s) of {len(missing_docs)} document id(s) "
            f"not found in corpus.jsonl (e.g. {example!r})"
        )
    if not qrels:
        raise DatasetError(
            f"{qrels_path}: none of its judgments match a query in queries.jsonl and a document in corpus.jsonl; "
            "check that the ids in the three files agree."
        )
    queries = {qid: all_queries[qid] for qid in all_queries if qid in qrels}
    return BeirDataset(
        name=name or folder.resolve().name,
        path=folder,
        split=split,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        warnings=warnings,
    )


def sample_corpus(dataset: BeirDataset, size: int, *, seed: int) -> BeirDataset:
    """The split over a *sampled* corpus: every judged-relevant document of its queries, plus random other
    documents (seeded) up to ``size`` documents in all (never fewer than the relevant ones).

    Every system is scored on the same sample, so they compare fairly; absolute scores are higher than on the full
    corpus (fewer distractors). ``dataset.warnings`` says so, and the name gets a ``[sampled N]`` suffix (which
    also keeps cached corpus embeddings of the two corpora apart).
    """
    import random

    if size >= len(dataset.corpus):
        return dataset
    relevant = {d for judged in dataset.qrels.values() for d, grade in judged.items() if grade > 0}
    others = [d for d in dataset.corpus if d not in relevant]
    extra = max(0, size - len(relevant))
    keep = relevant | set(random.Random(seed).sample(others, min(extra, len(others))))
    corpus = {d: p for d, p in dataset.corpus.items() if d in keep}  # corpus order kept
    note = (
        f"sampled corpus: {len(corpus):,} of {len(dataset.corpus):,} documents (all {len(relevant):,} judged-relevant "
        f"documents of the evaluated queries + {len(corpus) - len(relevant):,} random others, seed {seed}); scores "
        "are higher than on the full corpus, the comparison between systems is what counts"
    )
    return BeirDataset(
        name=f"{dataset.name} [sampled {len(corpus)}]",
        path=dataset.path,
        split=dataset.split,
        corpus=corpus,
        queries=dict(dataset.queries),
        qrels={q: dict(j) for q, j in dataset.qrels.items()},
        warnings=[*dataset.warnings, note],
    )
