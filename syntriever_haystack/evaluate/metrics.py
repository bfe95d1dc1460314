"""IR metrics over every judged query, computed by ``ir_measures`` (pytrec_eval underneath).

A *run* maps query id → {document id → score}; higher scores rank first, and ties are broken the way
trec_eval does (by document id, descending) for *every* metric: ``score_run`` hands ``ir_measures`` rank
positions, not raw scores, because its providers do not all break ties the same way. Two rules keep
averages honest:

- every evaluated query gets a value for every metric; a query the system returned nothing for scores 0
  instead of silently dropping out of the mean;
- the evaluated queries are those of the qrels with at least one relevant judgment. A query whose
  judgments are all non-relevant has no ideal ranking (nDCG and recall are undefined for it); such queries
  are excluded and counted, never averaged in as a silent 0 for every system.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from syntriever_haystack.errors import SyntrieverError

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "R@100", "RR@10", "Judged@10")

# Names people type → ir_measures names.
_ALIASES = {"mrr": "RR", "recall": "R", "ndcg": "nDCG", "judged": "Judged", "map": "AP", "precision": "P", "p": "P"}


class MetricError(SyntrieverError, ValueError):
    """A metric name could not be parsed."""


def canonical_metric(name: str) -> str:
    """Normalise a metric name: ``MRR@10`` → ``RR@10``, ``Recall@100`` → ``R@100``, ``ndcg@10`` → ``nDCG@10``."""
    import ir_measures

    text = name.strip()
    head, sep, tail = text.partition("@")
    base, paren, params = head.partition("(")
    base = _ALIASES.get(base.lower(), base)
    candidate = f"{base}{paren}{params}{sep}{tail}"
    try:
        return str(ir_measures.parse_measure(candidate))
    except (ValueError, NameError, SyntaxError, AttributeError, TypeError) as exc:
        raise MetricError(
            f"unknown metric {name!r} ({exc}); use ir_measures names such as nDCG@10, R@100, RR@10 (MRR@10), "
            "Judged@10, P@5, AP@100, or a relevance level like R(rel=2)@100."
        ) from None


def parse_metrics(names: Iterable[str] | None) -> list[str]:
    """Canonical, de-duplicated metric names (default: nDCG@10, R@100, RR@10, Judged@10)."""
    out: list[str] = []
    for name in names or DEFAULT_METRICS:
        canonical = canonical_metric(name)
        if canonical not in out:
            out.append(canonical)
    return out


def rank_documents(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(doc_id, score)`` best first, ties broken like trec_eval (document id descending)."""
    return sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)


def evaluable_queries(qrels: Qrels, *, min_relevance: int = 1) -> tuple[list[str], list[str]]:
    """Split the qrels' queries into (evaluated, excluded-because-no-relevant-judgment), in qrels order."""
    kept: list[str] = []
    dropped: list[str] = []
    for query_id, judged in qrels.items():
        (kept if any(score >= min_relevance for score in judged.values()) else dropped).append(query_id)
    return kept, dropped


@dataclass
class RunScores:
    """Per-query metric values of one run.

    :param query_ids: The evaluated queries; row ``i`` of every array belongs to ``query_ids[i]``.
    :param per_query: Metric name → values aligned with ``query_ids``.
    :param missing: Queries the run returned no documents for (they score 0).
    """

    query_ids: list[str]
    per_query: dict[str, np.ndarray]
    missing: list[str]

    @property
    def means(self) -> dict[str, float]:
        """Mean of each metric over all evaluated queries."""
        return {name: float(values.mean()) if len(values) else 0.0 for name, values in self.per_query.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: means and per-query values."""
        return {
            "means": self.means,
            "per_query": {
                name: {q: float(v) for q, v in zip(self.query_ids, values, strict=True)}
                for name, values in self.per_query.items()
            },
            "queries_without_results": len(self.missing),
        }


def score_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Qrels,
    metrics: Sequence[str] | None = None,
    *,
    query_ids: Sequence[str] | None = None,
) -> RunScores:
    """Score a run against qrels with ``ir_measures``, giving every evaluated query a value for every metric.

    :param run: Query id → {document id → score}.
    :param qrels: Query id → {document id → graded relevance}.
    :param metrics: Metric names (see :func:`parse_metrics`).
    :param query_ids: Queries to evaluate; default: every qrels query with at least one relevant judgment.
    :returns: Per-query values; queries absent from ``run`` (or with an empty result) score 0.
    """
    import ir_measures

    names = parse_metrics(metrics)
    measures = [ir_measures.parse_measure(n) for n in names]
    if query_ids is None:
        query_ids, _ = evaluable_queries(qrels)
    query_ids = list(query_ids)
    index = {q: i for i, q in enumerate(query_ids)}
    values = {n: np.zeros(len(query_ids), dtype=np.float64) for n in names}
    eval_qrels = {q: {d: int(s) for d, s in qrels[q].items()} for q in query_ids if q in qrels}
    # Rank positions instead of raw scores: one tie-break rule for every ir_measures provider.
    eval_run = {}
    for q in query_ids:
        ranked = rank_documents(run.get(q) or {})
        if ranked:
            eval_run[q] = {d: float(len(ranked) - i) for i, (d, _) in enumerate(ranked)}
    missing = [q for q in query_ids if not run.get(q)]
    if eval_run and eval_qrels:
        for metric in ir_measures.iter_calc(measures, eval_qrels, eval_run):
            row = index.get(metric.query_id)
            if row is not None:
                values[str(metric.measure)][row] = float(metric.value)
    return RunScores(query_ids=query_ids, per_query=values, missing=missing)
