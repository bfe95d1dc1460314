"""Exact dense search and run arithmetic: top-k by inner product, reciprocal rank fusion, truncation."""

from __future__ import annotations

import numpy as np

from syntriever_haystack.evaluate.metrics import Run, rank_documents

__all__ = ["dense_run", "reciprocal_rank_fusion", "top_k_search", "truncate_run"]


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


def reciprocal_rank_fusion(runs: list[Run], *, k: int = 60, depth: int = 100) -> Run:
    """Fuse runs by reciprocal rank: ``score(d) = Σ 1 / (k + rank(d))`` with ranks starting at 1."""
    fused: Run = {}
    for query_id in {q for run in runs for q in run}:
        totals: dict[str, float] = {}
        for run in runs:
            ranked = rank_documents(run.get(query_id, {}))
            for rank, (doc_id, _) in enumerate(ranked, start=1):
                totals[doc_id] = totals.get(doc_id, 0.0) + 1.0 / (k + rank)
        best = rank_documents(totals)[:depth]
        fused[query_id] = dict(best)
    return fused


def truncate_run(run: Run, n: int) -> Run:
    """The best ``n`` documents of every query."""
    return {q: dict(rank_documents(docs)[:n]) for q, docs in run.items()}
