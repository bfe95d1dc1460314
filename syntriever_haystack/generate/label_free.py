"""Label-free training data: synthetic queries for corpus passages → stage-1 examples, LCE groups and a held-out
check set. Nothing here reads a training query or a judgment.

- :func:`held_out_passages` picks, by a seeded hash of the document id, the passages whose synthetic queries are
  never trained on: the ship gate ranks them over the full corpus (:func:`gate_dataset`).
- :func:`sentence_queries`: extractive pseudo-queries (Inverse Cloze Task, Lee et al. 2019): one sentence of a
  passage is the query, the passage without it the positive. Free (no LLM) and plentiful; they teach the corpus's
  vocabulary and style, while the LLM's queries teach the query side.
- :func:`stage1_records`: one ``retriever`` record per query: the source passage as positive, first-stage
  candidates as hard negatives behind a false-negative guard (the top ``skip_top`` candidates, any candidate whose
  first-stage score is within ``guard`` of the source's, and any the judge accepted are left out), optional
  teacher scores for margin-MSE distillation.
- :func:`reranker_records`: the same queries and negatives as LCE groups (``reranker`` records).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syntriever_haystack.data.beir import BeirDataset, Passage

__all__ = [
    "SyntheticQuery",
    "gate_dataset",
    "held_out_passages",
    "read_synthetic_queries",
    "reranker_records",
    "sentence_queries",
    "stage1_records",
    "write_jsonl",
]

Candidates = Mapping[str, Sequence[tuple[str, float]]]  # query id → [(doc id, first-stage score)], best first

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass(frozen=True)
class SyntheticQuery:
    """A query written for (or cut from) one passage: its only presumed-relevant document is ``source_doc_id``.

    :param positive_text: The positive's text when it is not the whole passage (a sentence query's passage
        without that sentence); ``None``: the passage itself.
    """

    query_id: str
    query: str
    source_doc_id: str
    query_type: str
    positive_text: str | None = None


def _unit(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_passages(doc_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The documents whose synthetic queries are held out (never trained on), about ``fraction`` of them.

    Decided per document by a seeded hash, so a document's side does not change when others are added or when the
    sample grows: a resumed or enlarged run never trains on an earlier run's check queries.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    return {d for d in doc_ids if _unit(f"held-out:{d}", seed) < fraction}


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (a light rule: end punctuation followed by a capital, a digit or a bracket)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def sentence_queries(
    corpus: Mapping[str, Passage],
    doc_ids: Sequence[str],
    *,
    seed: int,
    min_words: int = 6,
    max_words: int = 40,
    keep_sentence: float = 0.1,
    include_title: bool = True,
) -> list[SyntheticQuery]:
    """One extractive pseudo-query per passage (Inverse Cloze Task): a random sentence of ``min_words`` to
    ``max_words`` words is the query; the positive is the passage without it (with it, with probability
    ``keep_sentence``, so the model still learns that word overlap matters). Passages with fewer than two sentences
    are skipped."""
    rng = random.Random(seed)
    out: list[SyntheticQuery] = []
    for doc_id in doc_ids:
        passage = corpus[doc_id]
        sentences = split_sentences(passage.text)
        if len(sentences) < 2:
            continue
        usable = [i for i, s in enumerate(sentences) if min_words <= len(s.split()) <= max_words]
        if not usable:
            continue
        pick = rng.choice(usable)
        rest = sentences if rng.random() < keep_sentence else sentences[:pick] + sentences[pick + 1 :]
        body = " ".join(rest)
        positive = Passage(passage.title, body, passage.metadata).model_text(include_title)
        query_id = "ict-" + hashlib.sha256(f"{doc_id}:{pick}".encode()).hexdigest()[:12]
        out.append(SyntheticQuery(query_id, sentences[pick], doc_id, "sentence", positive))
    return out


def read_synthetic_queries(path: Path) -> list[SyntheticQuery]:
    """The accepted queries of a ``queries.jsonl`` written by the query generation (rejected ones are skipped)."""
    queries = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("rejected"):
                continue
            queries.append(
                SyntheticQuery(
                    str(record["id"]), str(record["query"]), str(record["source_doc_id"]), str(record["query_type"])
                )
            )
    return queries


def _negatives(
    query: SyntheticQuery,
    candidates: Sequence[tuple[str, float]],
    *,
    count: int,
    skip_top: int,
    guard: float,
    accepted: Iterable[str] = (),
) -> list[tuple[str, int, float]]:
    """Hard negatives ``(doc id, rank, score)`` in rank order, behind the false-negative guard."""
    source_score = next((s for d, s in candidates if d == query.source_doc_id), None)
    blocked = {query.source_doc_id, *accepted}
    out = []
    for rank, (doc_id, score) in enumerate(candidates, start=1):
        if rank <= skip_top or doc_id in blocked:
            continue
        if source_score is not None and guard > 0 and score >= source_score * (1.0 - guard):
            continue  # scores (nearly) as high as the source's: too likely another relevant passage
        out.append((doc_id, rank, score))
        if len(out) >= count:
            break
    return out


def stage1_records(
    queries: Sequence[SyntheticQuery],
    candidates: Candidates,
    corpus: Mapping[str, Passage],
    *,
    negatives: int = 3,
    skip_top: int = 0,
    guard: float = 0.0,
    include_title: bool = True,
    teacher: Mapping[str, Mapping[str, float]] | None = None,
    accepted: Mapping[str, Iterable[str]] | None = None,
) -> list[dict[str, Any]]:
    """Stage-1 ``retriever`` records: the source passage as positive, up to ``negatives`` guarded hard negatives.

    :param candidates: First-stage candidates per query id (their scores feed the guard).
    :param skip_top: Never take the first this-many candidates as negatives.
    :param guard: Drop candidates scoring at least ``(1 - guard)`` times the source's score (0: off).
    :param teacher: Query id → {doc id → teacher score}; written as ``teacher_score`` on the entries it covers
        (margin-MSE distillation).
    :param accepted: Query id → documents a judge called relevant: never negatives.
    """
    records = []
    for query in queries:
        hits = candidates.get(query.query_id, ())
        chosen = _negatives(
            query,
            hits,
            count=negatives,
            skip_top=skip_top,
            guard=guard,
            accepted=(accepted or {}).get(query.query_id, ()),
        )
        scores = (teacher or {}).get(query.query_id, {})
        positive: dict[str, Any] = {
            "doc_id": query.source_doc_id,
            "text": query.positive_text or corpus[query.source_doc_id].model_text(include_title),
            "source": "synthetic_source",
        }
        if query.source_doc_id in scores:
            positive["teacher_score"] = round(float(scores[query.source_doc_id]), 6)
        negative_entries = []
        for doc_id, rank, score in chosen:
            entry: dict[str, Any] = {
                "doc_id": doc_id,
                "text": corpus[doc_id].model_text(include_title),
                "source": "mined",
                "rank": rank,
                "retrieval_score": round(float(score), 6),
            }
            if doc_id in scores:
                entry["teacher_score"] = round(float(scores[doc_id]), 6)
            negative_entries.append(entry)
        records.append(
            {
                "id": query.query_id,
                "kind": "retriever",
                "query_id": query.query_id,
                "query": query.query,
                "query_type": query.query_type,
                "source_doc_id": query.source_doc_id,
                "positives": [positive],
                "negatives": negative_entries,
            }
        )
    return records


def reranker_records(
    queries: Sequence[SyntheticQuery],
    candidates: Candidates,
    corpus: Mapping[str, Passage],
    *,
    negatives: int = 15,
    skip_top: int = 0,
    guard: float = 0.0,
    include_title: bool = True,
) -> list[dict[str, Any]]:
    """LCE ``reranker`` records: the source passage as positive, guarded hard negatives in rank order."""
    records = []
    for query in queries:
        chosen = _negatives(query, candidates.get(query.query_id, ()), count=negatives, skip_top=skip_top, guard=guard)
        if not chosen:
            continue
        records.append(
            {
                "id": query.query_id,
                "kind": "reranker",
                "query_id": query.query_id,
                "query": query.query,
                "query_type": query.query_type,
                "source_doc_id": query.source_doc_id,
                "positive": {
                    "doc_id": query.source_doc_id,
                    "text": corpus[query.source_doc_id].model_text(include_title),
                    "label": True,
                },
                "negatives": [
                    {"doc_id": d, "text": corpus[d].model_text(include_title), "label": False, "rank": r}
                    for d, r, _ in chosen
                ],
            }
        )
    return records


def gate_dataset(queries: Sequence[SyntheticQuery], corpus: Mapping[str, Passage], *, name: str) -> BeirDataset:
    """Held-out synthetic queries as an evaluation split over ``corpus``: each query's source passage is its only
    relevant document (grade 1). ``name`` is the corpus's dataset name (it is part of the corpus-embedding cache key,
    so the gate and the evaluation share the embeddings of the same corpus)."""
    kept = [q for q in queries if q.source_doc_id in corpus]
    return BeirDataset(
        name=name,
        path=None,
        split="synthetic-held-out",
        corpus=dict(corpus),
        queries={q.query_id: q.query for q in kept},
        qrels={q.query_id: {q.source_doc_id: 1} for q in kept},
    )


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write ``records`` atomically (a temporary file renamed into place); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count
