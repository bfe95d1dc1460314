"""Exact dense search and run arithmetic: top-k by inner product, reciprocal rank fusion, truncation, and
ranked lists as runs."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from syntriever_haystack.evaluate.metrics import Run, rank_documents
from syntriever_haystack.runtime.fusion import fuse_scores
from syntriever_haystack.specs import RRF_K, SystemSpecError

__all__ = ["dense_run", "ranked_scores", "reciprocal_rank_fusion", "score_fusion", "top_k_search", "truncate_run"]


def top_k_search(
    queries: np.ndarray, docs: np.ndarray, k: int, *, block: int | None = None, memory_budget: int = 256 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` for every query row, best first: (indices, scores), each ``(nq, k)``.

    Queries are processed in blocks sized so the similarity block stays within ``memory_budget`` bytes.
    """
    n_docs = docs.shape[0]
    k = min(k, n_docs)
    n = queries.shape[0]
    if block is None:
        block = max(1, memory_budget // (12 * max(n_docs, 1)))  # float32 sims + int64 partition indices
    indices = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        sims = queries[start : start + block] @ docs.T
        if k < n_docs:
            part = np.argpartition(sims, n_docs - k, axis=1)[:, n_docs - k :]
        else:
            part = np.broadcast_to(np.arange(n_docs), sims.shape)
        part_scores = np.take_along_axis(sims, part, axis=1)
        del sims
        order = np.argsort(-part_scores, axis=1, kind="stable")
        indices[start : start + block] = np.take_along_axis(part, order, axis=1)
        scores[start : start + block] = np.take_along_axis(part_scores, order, axis=1)
    return indices, scores


def dense_run(
    query_ids: list[str], query_vectors: np.ndarray, doc_ids: list[str], doc_vectors: np.ndarray, depth: int
) -> Run:
    """The top-``depth`` documents of every query by inner product, as a run."""
    indices, scores = top_k_search(query_vectors, doc_vectors, depth)
    return {
        query_id: {doc_ids[j]: float(s) for j, s in zip(indices[row], scores[row], strict=True)}
        for row, query_id in enumerate(query_ids)
    }


def ranked_scores(ranked: Iterable[tuple[str, float | None]]) -> dict[str, float]:
    """A ranked list (best first) as one query's run, ranking exactly in the list's order.

    A run ranks by score with ties broken by document id (:func:`~.metrics.rank_documents`, trec_eval's rule),
    but a ranked list's order is its own (a ``DocumentJoiner`` keeps equal fused scores in arrival order). So a
    score that does not fall below the previous one (a tie, a ``None``) is lowered to the float just below it:
    the scores move by a few ulps at most, and ``rank_documents`` gives the list's order back. A document listed
    twice keeps its first (best) place.
    """
    scores: dict[str, float] = {}
    previous = math.inf
    for doc_id, score in ranked:
        if doc_id in scores:
            continue
        value = float(score) if score is not None and math.isfinite(score) else previous
        if value >= previous:
            value = math.nextafter(previous, -math.inf) if math.isfinite(previous) else 0.0
        scores[doc_id] = previous = value
    return scores


def reciprocal_rank_fusion(runs: list[Run], *, k: int = RRF_K, depth: int = 100) -> Run:
    """Fuse runs exactly as the served pipelines do: by Haystack's ``DocumentJoiner(join_mode=
    "reciprocal_rank_fusion")`` itself, fed each run's ranking (best first, ties by document id) in ``runs`` order.

    That component scores ``Σ 1 / (61 + rank)`` over 0-based ranks (``1 / (60 + rank)`` over 1-based ones, the
    paper's k = 60), scaled by ``61 / len(runs)``, and keeps equal scores in the order the documents first arrived
    (the first run's documents first); the run returned ranks in that same order (:func:`ranked_scores`).

    :param runs: The runs to fuse (a query missing from a run is an empty list for it, as a retriever that found
        nothing).
    :param k: Must be 60: the component's constant is fixed.
    :param depth: Documents kept per query (the joiner's ``top_k``).
    :raises SystemSpecError: ``k`` other than 60.
    """
    if k != RRF_K:
        raise SystemSpecError(
            f"reciprocal rank fusion with k={k}: Haystack's DocumentJoiner (the served fusion) fixes k={RRF_K}"
        )
    from haystack import Document
    from haystack.components.joiners import DocumentJoiner

    joiner = DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=depth)
    fused: Run = {}
    for query_id in dict.fromkeys(q for run in runs for q in run):
        lists = [[Document(id=d, score=s) for d, s in rank_documents(run.get(query_id, {}))] for run in runs]
        documents = joiner.run(documents=lists)["documents"]
        fused[query_id] = ranked_scores((document.id, document.score) for document in documents)
    return fused


def score_fusion(runs: list[Run], *, depth: int = 100) -> Run:
    """Fuse runs exactly as the served pipelines do by default: by the code ``SyntrieverScoreFusionJoiner`` runs
    (:func:`~syntriever_haystack.runtime.fusion.fuse_scores`, distribution-based score fusion: each list's scores
    normalised by their mean and standard deviation, then summed), fed each run's ranking (best first, ties by
    document id) in ``runs`` order.

    :param runs: The runs to fuse (a query missing from a run is an empty list for it).
    :param depth: Documents kept per query (the joiner's ``top_k``).
    """
    fused: Run = {}
    for query_id in dict.fromkeys(q for run in runs for q in run):
        lists = [rank_documents(run.get(query_id, {})) for run in runs]
        fused[query_id] = ranked_scores(fuse_scores(lists)[:depth])
    return fused


def truncate_run(run: Run, n: int) -> Run:
    """The best ``n`` documents of every query."""
    return {q: dict(rank_documents(docs)[:n]) for q, docs in run.items()}
