"""Training inputs: generated JSONL records (or gold BEIR pairs) → typed examples, dev splits, no-duplicate batches.

- :func:`load_stage1_examples` reads ``syntriever generate retriever`` output (``retriever.jsonl``);
- :func:`gold_pair_examples` builds the gold-only baseline (one example per query × gold passage, like
  ``MultipleNegativesRankingLoss`` training data);
- :func:`load_preferences` reads ``syntriever generate preferences`` output (``preferences.jsonl``);
- :func:`load_reranker_groups` reads ``syntriever generate reranker`` output (``reranker.jsonl``);
- :func:`gold_reranker_examples` builds LCE groups from gold judgments + first-stage hard negatives;
- :func:`no_duplicate_batches` packs examples into batches in which no text appears twice, so that an in-batch
  "negative" is never secretly the same passage as a positive.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from syntriever_haystack.data.beir import BeirDataset
from syntriever_haystack.errors import SyntrieverError

__all__ = [
    "PositiveMode",
    "PreferenceExample",
    "RerankerExample",
    "RetrieverExample",
    "TrainingDataError",
    "gold_pair_examples",
    "gold_reranker_examples",
    "load_preferences",
    "load_reranker_groups",
    "load_stage1_examples",
    "no_duplicate_batches",
    "split_by_query",
]

T = TypeVar("T")
PositiveMode = Literal["all", "gold"]


class TrainingDataError(SyntrieverError, ValueError):
    """A training file is missing, empty or of the wrong kind; the message names the file and the fix."""


@dataclass(frozen=True)
class RetrieverExample:
    """One stage-1 example ``(q, P(q), N(q))``.

    :param query_id: Query id (dev splits and provenance are per query).
    :param query: Query text.
    :param positives: Positive texts (gold passage, verified ``p+``, ``q_cot``), at least one.
    :param negatives: Negative texts (``p-``, a rejected ``p+``), possibly none.
    :param positive_sources: Where each positive came from (``gold``, ``llm_positive``, ``cot``).
    :param judges: The judges behind the example's verified labels (provenance for the model card).
    :param positive_scores: Teacher scores ``s_T(q, p)`` aligned with ``positives`` (``None`` where an entry has
        none), or ``()`` when no entry of the example has one. Used by the margin-MSE term (GPL).
    :param negative_scores: The same for ``negatives``.
    """

    query_id: str
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    positive_sources: tuple[str, ...] = ()
    judges: tuple[str, ...] = ()
    positive_scores: tuple[float | None, ...] = ()
    negative_scores: tuple[float | None, ...] = ()

    def __post_init__(self) -> None:
        for name, texts, scores in (
            ("positive_scores", self.positives, self.positive_scores),
            ("negative_scores", self.negatives, self.negative_scores),
        ):
            if scores and len(scores) != len(texts):
                raise ValueError(f"{name} has {len(scores)} entries for {len(texts)} texts; give one per text or ()")

    def texts(self) -> list[str]:
        """Every text of the example, query first."""
        return [self.query, *self.positives, *self.negatives]

    def teacher_pairs(self) -> list[tuple[int, int, float]]:
        """``(positive index, negative index, teacher margin t+ - t-)`` for every scored positive x scored negative."""
        return [
            (i, j, p - n)
            for i, p in enumerate(self.positive_scores)
            if p is not None
            for j, n in enumerate(self.negative_scores)
            if n is not None
        ]


@dataclass(frozen=True)
class PreferenceExample:
    """One stage-2 triple ``(q, c+, c-)``: the judge preferred ``preferred`` over ``rejected`` for ``query``."""

    query_id: str
    query: str
    preferred: str
    rejected: str
    judge: str | None = None

    def texts(self) -> list[str]:
        return [self.query, self.preferred, self.rejected]


@dataclass(frozen=True)
class RerankerExample:
    """One LCE group source: a positive and the localised hard negatives (in first-stage rank order)."""

    query_id: str
    query: str
    positive: str
    negatives: tuple[str, ...]
    query_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def texts(self) -> list[str]:
        return [self.query, self.positive, *self.negatives]


def _read_records(path: str | Path, kind: str, command: str) -> list[dict[str, Any]]:
    file = Path(path)
    if file.is_dir():
        file = file / f"{kind}.jsonl"
    if not file.is_file():
        raise TrainingDataError(f"{file}: no such training file. Create it with `{command}` (or pass its path).")
    records: list[dict[str, Any]] = []
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise TrainingDataError(f"{file}: cannot read the training file ({exc.strerror or exc}).") from None
    for line_no, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TrainingDataError(
                f"{file}:{line_no}: not UTF-8 text (byte {exc.start}); is this a JSONL file written by `{command}`? "
                "Pass that file (or save this one as UTF-8)."
            ) from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise TrainingDataError(
                f"{file}:{line_no}: not valid JSON ({why}). Is this a JSONL file written by `{command}`?"
            ) from None
        if not isinstance(record, dict):
            raise TrainingDataError(f"{file}:{line_no}: expected a JSON object, got {type(record).__name__}.")
        if record.get("kind") != kind:
            raise TrainingDataError(
                f"{file}:{line_no}: a {record.get('kind')!r} record where {kind!r} records were expected. "
                f"Pass the file written by `{command}`."
            )
        if isinstance(record.get("rejected"), str):  # a filtered query (its reason), not a passage
            continue
        records.append(record)
    if not records:
        raise TrainingDataError(f"{file}: no {kind} records. Run `{command}` first (or check its summary.md).")
    return records


def _teacher_score(entry: dict[str, Any], where: str) -> float | None:
    """An entry's optional ``teacher_score``: a finite JSON number, or ``None`` when absent."""
    value = entry.get("teacher_score")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TrainingDataError(
            f"{where}: teacher_score must be a finite number, got {value!r}. "
            "Write the teacher's score as a JSON number (or leave the field out)."
        )
    return float(value)


def load_stage1_examples(path: str | Path, *, positive_mode: PositiveMode = "all") -> list[RetrieverExample]:
    """Read stage-1 examples.

    :param path: ``retriever.jsonl`` (or the folder holding it).
    :param positive_mode: ``all`` (default, METHOD.md §1): gold, verified ``p+`` and ``q_cot`` are positives.
        ``gold``: the released code's variant, only the gold passages are positives and ``p+``/``q_cot`` become
        negatives (for comparison); their teacher scores move with them.

    Positive and negative entries may carry an optional numeric ``teacher_score`` (e.g. a cross-encoder's score,
    for the margin-MSE term): it is kept in :attr:`RetrieverExample.positive_scores` / ``negative_scores``.
    """
    examples = []
    for record in _read_records(path, "retriever", "syntriever generate retriever"):
        where = f"{path} (query {record.get('query_id')!r})"
        positives: list[str] = []
        positive_scores: list[float | None] = []
        sources: list[str] = []
        negatives: list[str] = []
        negative_scores: list[float | None] = []
        for n in record.get("negatives", []):
            if n.get("text"):
                negatives.append(str(n["text"]))
                negative_scores.append(_teacher_score(n, where))
        for entry in record.get("positives", []):
            text, source = entry.get("text"), str(entry.get("source", "gold"))
            if not text:
                continue
            score = _teacher_score(entry, where)
            if positive_mode == "gold" and source != "gold":
                negatives.append(str(text))
                negative_scores.append(score)
            else:
                positives.append(str(text))
                positive_scores.append(score)
                sources.append(source)
        if not positives:
            continue
        scored = any(s is not None for s in (*positive_scores, *negative_scores))
        entries = [*record.get("positives", []), *record.get("negatives", [])]
        examples.append(
            RetrieverExample(
                query_id=str(record["query_id"]),
                query=str(record["query"]),
                positives=tuple(positives),
                negatives=tuple(negatives),
                positive_sources=tuple(sources),
                judges=tuple(sorted({str(e["judge"]) for e in entries if e.get("judge")})),
                positive_scores=tuple(positive_scores) if scored else (),
                negative_scores=tuple(negative_scores) if scored else (),
            )
        )
    return examples


def gold_pair_examples(dataset: BeirDataset, *, include_title: bool = True) -> list[RetrieverExample]:
    """The gold-only baseline: one ``(query, gold passage)`` example per relevant judgment, no negatives."""
    texts = dict(zip(dataset.doc_ids, dataset.doc_texts(include_title=include_title), strict=True))
    examples = []
    for query_id, query in dataset.queries.items():
        for doc_id, grade in dataset.qrels.get(query_id, {}).items():
            if grade > 0 and doc_id in texts:
                examples.append(RetrieverExample(query_id, query, (texts[doc_id],), (), ("gold",)))
    if not examples:
        raise TrainingDataError(f"{dataset.name}/{dataset.split}: no relevant judgments to train on.")
    return examples


def gold_reranker_examples(
    dataset: BeirDataset,
    candidates: dict[str, list[tuple[str, float]]],
    *,
    include_title: bool = True,
) -> list[RerankerExample]:
    """LCE groups from gold judgments: one group per ``(query, relevant passage)``, negatives = the first stage's
    ranked candidates that are not judged relevant (in rank order), so they are *localised* hard negatives.

    :param dataset: BEIR split with queries and qrels.
    :param candidates: Query id → ``[(doc id, score)]`` best first (e.g. BM25's top 30).
    :param include_title: Passage text as ``title + text`` (BEIR convention).
    """
    texts = dict(zip(dataset.doc_ids, dataset.doc_texts(include_title=include_title), strict=True))
    examples = []
    for query_id, query in dataset.queries.items():
        relevant = {d for d, grade in dataset.qrels.get(query_id, {}).items() if grade > 0 and d in texts}
        negatives = tuple(texts[d] for d, _ in candidates.get(query_id, []) if d not in relevant and d in texts)
        if not negatives:
            continue
        for doc_id in sorted(relevant):
            examples.append(
                RerankerExample(query_id, query, texts[doc_id], negatives, "gold", {"source_doc_id": doc_id})
            )
    if not examples:
        raise TrainingDataError(
            f"{dataset.name}/{dataset.split}: no query has both a relevant judgment and a non-relevant candidate."
        )
    return examples


def load_preferences(path: str | Path) -> list[PreferenceExample]:
    """Read stage-2 triples (``preferences.jsonl`` or its folder)."""
    return [
        PreferenceExample(
            query_id=str(r["query_id"]),
            query=str(r["query"]),
            preferred=str(r["preferred"]["text"]),
            rejected=str(r["rejected"]["text"]),
            judge=r.get("judge"),
        )
        for r in _read_records(path, "preference", "syntriever generate preferences")
    ]


def load_reranker_groups(path: str | Path) -> list[RerankerExample]:
    """Read LCE groups (``reranker.jsonl`` or its folder). Negatives keep their first-stage rank order."""
    examples = []
    for r in _read_records(path, "reranker", "syntriever generate reranker"):
        negatives = sorted(r.get("negatives", []), key=lambda n: n.get("rank", 0))
        texts = tuple(str(n["text"]) for n in negatives if n.get("text"))
        if not texts:
            continue
        examples.append(
            RerankerExample(
                query_id=str(r["query_id"]),
                query=str(r["query"]),
                positive=str(r["positive"]["text"]),
                negatives=texts,
                query_type=r.get("query_type"),
                extra={"source_doc_id": r.get("source_doc_id")},
            )
        )
    return examples


def split_by_query(
    examples: Sequence[T], query_id: Callable[[T], str], *, dev_fraction: float, seed: int
) -> tuple[list[T], list[T]]:
    """Hold out a fraction of the *queries* (never part of a query's examples) as a dev split."""
    if not 0.0 <= dev_fraction < 1.0:
        raise TrainingDataError(f"dev fraction must be in [0, 1), got {dev_fraction}.")
    ids = sorted({query_id(e) for e in examples})
    random.Random(seed).shuffle(ids)
    dev_ids = set(ids[: round(len(ids) * dev_fraction)])
    train = [e for e in examples if query_id(e) not in dev_ids]
    dev = [e for e in examples if query_id(e) in dev_ids]
    return train, dev


def no_duplicate_batches(
    examples: Sequence[T],
    batch_size: int,
    *,
    texts: Callable[[T], Iterable[str]],
    seed: int,
    drop_last: bool = False,
) -> list[list[int]]:
    """Shuffle and pack example indices into batches in which no text (query or passage) appears twice.

    Like sentence-transformers' ``NoDuplicatesBatchSampler``: an example whose texts clash with the batch being
    filled waits for the next batch. Deterministic for a given ``seed`` (use ``seed + epoch`` per epoch), so a
    resumed run sees exactly the batches it would have seen.

    :returns: Batches of indices into ``examples``; every index appears exactly once (unless ``drop_last``).
    """
    if batch_size < 1:
        raise TrainingDataError(f"batch size must be >= 1, got {batch_size}.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    text_sets = [set(texts(examples[i])) for i in range(len(examples))]
    batches: list[list[int]] = []
    remaining = order
    while remaining:
        batch: list[int] = []
        seen: set[str] = set()
        waiting: list[int] = []
        for index in remaining:
            own = text_sets[index]
            if len(batch) < batch_size and not (own & seen):
                batch.append(index)
                seen |= own
            else:
                waiting.append(index)
        batches.append(batch)
        remaining = waiting
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
