"""From generated records (:mod:`syntriever_haystack.generate.records`) to training and evaluation files.

* :func:`to_sentence_transformers`: JSONL with ``anchor`` / ``positive`` (/ ``negative``) columns, loadable with
  ``datasets.load_dataset("json", data_files=...)`` for sentence-transformers' losses.
* :func:`to_flagembedding`: FlagEmbedding's fine-tuning JSONL (``{"query", "pos": [...], "neg": [...]}``).
* :func:`to_beir`: a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``) that
  :func:`syntriever_haystack.data.load_beir` reads.

Records are plain dicts (as :meth:`JsonlStore.records` yields them) of the three kinds ``"retriever"``,
``"preference"`` and ``"reranker"``; the kinds can be mixed in one stream. Judged passages whose verdict
contradicts their role are left out everywhere: a positive with ``label`` false / 0, a negative with ``label``
true / ≥ 1. Every function writes atomically (a temporary file renamed into place: a crash never leaves half a
file) and returns the number of lines / judgments written.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from syntriever_haystack.data.beir import Passage
from syntriever_haystack.generate.records import RECORD_KINDS, RecordsError, stable_id

__all__ = ["to_beir", "to_flagembedding", "to_sentence_transformers"]


class _Text(NamedTuple):
    text: str
    doc_id: str | None
    grade: int  # qrels grade: ≥ 1 for a positive (1 unless graded), 0 for a negative
    source: str


def _field(record: Mapping[str, Any], name: str, expected: type | tuple[type, ...], where: str = "") -> Any:
    value = record.get(name)
    if not isinstance(value, expected):
        record_id = record.get("id", "?")
        kind = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise RecordsError(
            f"record {record_id!r}{where}: field {name!r} must be {kind}, got {type(value).__name__}; records must "
            "have the shapes documented in syntriever_haystack.generate.records."
        )
    return value


def _verdict(label: Any, record: Mapping[str, Any], where: str) -> bool | None:
    """``True`` (relevant), ``False`` (not relevant) or ``None`` (not judged) from a boolean or graded label."""
    if label is None or isinstance(label, bool):
        return label
    if isinstance(label, int):
        return label >= 1
    raise RecordsError(
        f"record {record.get('id', '?')!r}{where}: label must be true/false, an integer grade or null, got "
        f"{label!r}; put a judge's probability or logit in the score field."
    )


def _grade(label: Any) -> int:
    """Qrels grade of a positive: a graded (integer, non-boolean) label is kept, anything else is 1."""
    if isinstance(label, int) and not isinstance(label, bool) and label >= 1:
        return label
    return 1


def _check_id(value: str, what: str, record: Mapping[str, Any], where: str) -> str:
    if not value or value != value.strip() or any(c in value for c in "\t\r\n"):
        raise RecordsError(
            f"record {record.get('id', '?')!r}{where}: {what} {value!r} is empty, has surrounding whitespace or "
            "contains a tab / newline; it would corrupt the qrels TSV. Use ids without such characters."
        )
    return value


def _doc_id(entry: Mapping[str, Any], record: Mapping[str, Any], where: str) -> str | None:
    doc_id = entry.get("doc_id")
    if doc_id is None:
        return None
    if not isinstance(doc_id, str):
        raise RecordsError(f"record {record.get('id', '?')!r}{where}: doc_id must be a string or null.")
    return _check_id(doc_id, "doc_id", record, where)


def _passage(entry: Any, record: Mapping[str, Any], where: str, grade: int, source: str) -> _Text:
    if not isinstance(entry, Mapping):
        raise RecordsError(f"record {record.get('id', '?')!r}{where}: expected an object, got {type(entry).__name__}.")
    return _Text(_field(entry, "text", str, where), _doc_id(entry, record, where), grade, source)


def _texts(record: Mapping[str, Any]) -> tuple[str, list[_Text], list[_Text]]:
    """``(kind, positives, negatives)`` of any record, with contradicting judgments dropped."""
    kind = record.get("kind")
    if kind not in RECORD_KINDS:
        raise RecordsError(
            f"record {record.get('id', '?')!r}: unknown kind {kind!r}; expected one of {', '.join(RECORD_KINDS)}."
        )
    positives: list[_Text] = []
    negatives: list[_Text] = []
    if kind == "retriever":
        for i, entry in enumerate(_field(record, "positives", list)):
            where = f" positives[{i}]"
            label = entry.get("label") if isinstance(entry, Mapping) else None
            if _verdict(label, record, where) is not False:
                positives.append(_passage(entry, record, where, _grade(label), str(entry.get("source"))))
        for i, entry in enumerate(_field(record, "negatives", list)):
            where = f" negatives[{i}]"
            label = entry.get("label") if isinstance(entry, Mapping) else None
            if _verdict(label, record, where) is not True:
                negatives.append(_passage(entry, record, where, 0, str(entry.get("source"))))
    elif kind == "reranker":
        entry = _field(record, "positive", dict)
        label = entry.get("label")
        if _verdict(label, record, " positive") is not False:
            positives.append(_passage(entry, record, " positive", _grade(label), "gold"))
        for i, entry in enumerate(_field(record, "negatives", list)):
            where = f" negatives[{i}]"
            label = entry.get("label") if isinstance(entry, Mapping) else None
            if _verdict(label, record, where) is not True:
                negatives.append(_passage(entry, record, where, 0, "hard_negative"))
    else:  # preference: relative, so "positive" / "negative" only within the pair
        positives.append(_passage(record.get("preferred"), record, " preferred", 1, "preferred"))
        negatives.append(_passage(record.get("rejected"), record, " rejected", 0, "rejected"))
    return kind, positives, negatives


def _atomic_write(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` (each gets a newline) to ``path`` through a temporary file in the same folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                for line in lines:
                    handle.write(line)
                    handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    except OSError as exc:
        raise RecordsError(f"could not write {path}: {exc.strerror or exc}.") from None


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def to_sentence_transformers(
    records: Iterable[Mapping[str, Any]],
    path: str | Path,
    *,
    format: Literal["triplet", "pairs"] = "triplet",
) -> int:
    """Write sentence-transformers training rows as JSONL.

    ``format="triplet"`` writes ``{"anchor", "positive", "negative"}`` rows. A record with ``P`` positives and
    ``N`` negatives gives ``max(P, N)`` rows: row ``i`` pairs positive ``i mod P`` with negative ``i mod N``, so
    every positive and every negative is used at least once (a retriever example with gold, ``p+`` and
    ``q_cot`` against ``p-`` gives 3 rows; a reranker group with 7 negatives gives 7). Records without a
    positive or without a negative give no row. A preference gives one row: ``positive`` = preferred,
    ``negative`` = rejected.

    ``format="pairs"`` writes ``{"anchor", "positive"}``, one row per positive (for a preference: the preferred
    passage). Use it with MultipleNegativesRankingLoss (in-batch negatives).

    :returns: The number of rows written.
    """
    if format not in ("triplet", "pairs"):
        raise ValueError(f'format must be "triplet" or "pairs", got {format!r}.')
    rows: list[str] = []
    for record in records:
        _, positives, negatives = _texts(record)
        query = _field(record, "query", str)
        if format == "pairs":
            rows.extend(_json({"anchor": query, "positive": p.text}) for p in positives)
        elif positives and negatives:
            for i in range(max(len(positives), len(negatives))):
                row = {
                    "anchor": query,
                    "positive": positives[i % len(positives)].text,
                    "negative": negatives[i % len(negatives)].text,
                }
                rows.append(_json(row))
    _atomic_write(Path(path), rows)
    return len(rows)


def to_flagembedding(records: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write FlagEmbedding fine-tuning JSONL: ``{"query": str, "pos": [str, ...], "neg": [str, ...]}`` per record.

    Retriever examples: all positives / negatives. Reranker groups: ``pos = [positive]``, ``neg = negatives``.
    Preferences: ``pos = [preferred]``, ``neg = [rejected]``. Records without a positive or without a negative
    are skipped (FlagEmbedding samples ``train_group_size - 1`` negatives per query and cannot use an empty list).

    :returns: The number of lines written.
    """
    rows: list[str] = []
    for record in records:
        _, positives, negatives = _texts(record)
        query = _field(record, "query", str)
        if positives and negatives:
            rows.append(_json({"query": query, "pos": [p.text for p in positives], "neg": [n.text for n in negatives]}))
    _atomic_write(Path(path), rows)
    return len(rows)


def to_beir(
    records: Iterable[Mapping[str, Any]],
    directory: str | Path,
    *,
    corpus: Mapping[str, Passage] | None = None,
    split: str = "train",
    include_negatives: bool = False,
) -> int:
    """Write a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

    * Corpus: every passage of ``corpus`` (so the ids of real documents resolve and they serve as distractors),
      then every text of the records not already there: a text with a ``doc_id`` keeps it (the corpus entry
      wins when both exist), a generated text gets ``"gen-" + stable_id(text)`` (equal texts share one id) and
      ``metadata = {"generated": true, "source": ...}``. Negatives go in the corpus too (as distractors).
    * Queries: ``query_id`` → ``query`` of every record that has a judgment.
    * Qrels (header ``query-id<TAB>corpus-id<TAB>score``): each positive with score 1, or its label when the
      label is a graded integer; with ``include_negatives``, each negative with score 0 (judged not relevant).
      A repeated (query, document) keeps the highest score.
    * A reranker group's optional ``other_positives`` (retrieved candidates the judge labelled relevant, as
      :mod:`~syntriever_haystack.generate.reranker_data` records them) are judged like its positive, so a
      retriever that finds them is not penalised. (The training exporters use only ``positive``.)
    * Preference triples are *relative* judgments (the rejected passage may be relevant too): they give no
      qrels row, but their passages are added to the corpus.

    :param records: Generated records of any kind.
    :param directory: The output folder (created if needed).
    :param corpus: The source corpus (e.g. ``load_beir(...).corpus``).
    :param split: Name of the qrels split.
    :param include_negatives: Also write negatives as 0-graded judgments.
    :returns: The number of qrels rows written.
    :raises RecordsError: A record is malformed, one query id has two different texts, or there is nothing to
        judge (BEIR needs at least one qrels row).
    """
    directory = Path(directory)
    docs: dict[str, dict[str, Any]] = {}
    for doc_id, passage in (corpus or {}).items():
        docs[doc_id] = {"_id": doc_id, "title": passage.title, "text": passage.text, "metadata": passage.metadata}
    generated_ids: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}

    def corpus_id(item: _Text) -> str:
        if item.doc_id is not None:
            docs.setdefault(item.doc_id, {"_id": item.doc_id, "title": "", "text": item.text, "metadata": {}})
            return item.doc_id
        gen_id = generated_ids.get(item.text)
        if gen_id is None:
            gen_id = generated_ids[item.text] = "gen-" + stable_id(item.text)
            meta = {"generated": True, "source": item.source}
            docs.setdefault(gen_id, {"_id": gen_id, "title": "", "text": item.text, "metadata": meta})
        return gen_id

    for record in records:
        kind, positives, negatives = _texts(record)
        query_id = _check_id(_field(record, "query_id", str), "query_id", record, "")
        query = _field(record, "query", str)
        judged: list[tuple[str, int]] = []
        for item in positives:
            judged.append((corpus_id(item), item.grade))
        if kind == "reranker":  # optional: other retrieved candidates the judge found relevant
            for i, entry in enumerate(record.get("other_positives") or []):
                where = f" other_positives[{i}]"
                label = entry.get("label") if isinstance(entry, Mapping) else None
                if _verdict(label, record, where) is not False:
                    judged.append(
                        (corpus_id(_passage(entry, record, where, _grade(label), "other_positive")), _grade(label))
                    )
        for item in negatives:
            judged.append((corpus_id(item), 0))
        if kind == "preference":
            continue
        if not include_negatives:
            judged = [(d, s) for d, s in judged if s >= 1]
        if not judged:
            continue
        if queries.setdefault(query_id, query) != query:
            raise RecordsError(
                f"record {record.get('id', '?')!r}: query id {query_id!r} has two different texts "
                f"({queries[query_id]!r} and {query!r}); query ids must identify one query."
            )
        rows = qrels.setdefault(query_id, {})
        for doc_id, score in judged:
            rows[doc_id] = max(score, rows.get(doc_id, score))
    n_rows = sum(len(rows) for rows in qrels.values())
    if not n_rows:
        raise RecordsError(
            f"nothing to write to {directory}: no record has a positive (preference triples give no absolute "
            "judgments); a BEIR folder needs at least one relevance judgment."
        )
    _atomic_write(directory / "corpus.jsonl", (_json(doc) for doc in docs.values()))
    _atomic_write(directory / "queries.jsonl", (_json({"_id": q, "text": t}) for q, t in queries.items()))
    qrels_lines = ["query-id\tcorpus-id\tscore"]
    qrels_lines += [f"{q}\t{d}\t{s}" for q, rows in qrels.items() for d, s in rows.items()]
    _atomic_write(directory / "qrels" / f"{split}.tsv", qrels_lines)
    return n_rows
