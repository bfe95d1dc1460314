"""Distribution-based score fusion (DBSF) of ranked lists: the served hybrid's fusion, shared by
``SyntrieverScoreFusionJoiner`` and the evaluation so that both compute the same scores.

Each list's scores are normalised by that list's own distribution, ``(s - (mean - 3 std)) / (6 std)``, and an
item's fused score is the weighted **sum** of its normalised scores (a list it is missing from adds nothing), as
Qdrant and Elasticsearch define DBSF. Haystack's ``DocumentJoiner(join_mode="distribution_based_rank_fusion")``
normalises the same way but keeps an item's *maximum*, so agreement between the retrievers counts for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

__all__ = ["distribution_normalized", "fuse_scores"]

K = TypeVar("K", bound=Hashable)


def distribution_normalized(scores: Sequence[float | None]) -> list[float]:
    """``scores`` mapped by their own distribution, ``(s - (mean - 3 std)) / (6 std)``: a list's typical scores fall
    in [0, 1] whatever the retriever's scale (BM25's unbounded sums, a cosine). A missing (``None``, NaN) score
    counts as the list's lowest (``+inf`` as its highest); a list whose scores are all equal carries no order and
    maps to 0.5 each."""
    present = [float(s) for s in scores if s is not None and math.isfinite(s)]
    if not present:
        return [0.5] * len(scores)
    low, high = min(present), max(present)
    values = [float(s) if s is not None and math.isfinite(s) else (high if s == math.inf else low) for s in scores]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if std == 0.0:
        return [0.5] * len(values)
    return [(v - (mean - 3.0 * std)) / (6.0 * std) for v in values]


def fuse_scores(
    lists: Sequence[Sequence[tuple[K, float | None]]], weights: Sequence[float] | None = None
) -> list[tuple[K, float]]:
    """Fuse ranked lists of ``(key, score)`` by distribution-based score fusion.

    :param lists: Each retriever's ranking, best first. A key listed twice in one list counts once, at its first
        place.
    :param weights: One weight per list (``None``: 1 each).
    :returns: ``(key, fused score)``, best first; equal scores keep the order in which the keys first arrived.
    :raises ValueError: The number of weights differs from the number of lists.
    """
    if weights is None:
        weights = [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError(f"{len(lists)} lists to fuse but {len(weights)} weights; give one weight per list, or none")
    fused: dict[K, float] = {}
    for ranking, weight in zip(lists, weights, strict=True):
        seen: set[K] = set()
        for (key, _), value in zip(ranking, distribution_normalized([s for _, s in ranking]), strict=True):
            if key in seen:
                continue
            seen.add(key)
            fused[key] = fused.get(key, 0.0) + weight * value
    return sorted(fused.items(), key=lambda item: -item[1])  # stable: ties keep arrival order
