"""Distribution-based score fusion: the runtime function against a brute-force version, the Haystack component
over it, and the evaluation's ``fusion=dbsf`` hybrid against the component."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from haystack import Document
from haystack.components.joiners import DocumentJoiner

from haystack_integrations.components.joiners.syntriever import SyntrieverScoreFusionJoiner
from syntriever_haystack.evaluate.metrics import rank_documents
from syntriever_haystack.evaluate.search import score_fusion
from syntriever_haystack.runtime.fusion import distribution_normalized, fuse_scores


def _brute_force(lists: list[list[tuple[str, float]]], weights: list[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for ranking, weight in zip(lists, weights, strict=True):
        scores = [s for _, s in ranking]
        mean, std = statistics.fmean(scores), statistics.pstdev(scores)
        for doc, score in dict(reversed(ranking)).items():  # first (best) place of a repeated key
            value = 0.5 if std == 0 else (score - (mean - 3 * std)) / (6 * std)
            out[doc] = out.get(doc, 0.0) + weight * value
    return out


@pytest.mark.parametrize("seed", range(6))
def test_fuse_scores_equals_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    pool = [f"d{i}" for i in range(40)]
    lists = []
    for scale in (25.0, 1.0, 0.01):  # BM25-like, cosine-like, tiny: the scale must not matter
        ranking = sorted(((d, rng.random() * scale) for d in rng.sample(pool, rng.randint(1, 30))), key=lambda x: -x[1])
        lists.append(ranking)
    weights = [rng.choice([0.5, 1.0, 2.0]) for _ in lists]
    fused = fuse_scores(lists, weights)
    expected = _brute_force(lists, weights)
    assert dict(fused) == pytest.approx(expected, rel=1e-12)
    assert [s for _, s in fused] == sorted((s for _, s in fused), reverse=True)


def test_normalisation_ignores_scale_and_handles_degenerate_lists() -> None:
    bm25 = [30.0, 20.0, 10.0]
    assert distribution_normalized(bm25) == pytest.approx(distribution_normalized([s / 100 + 7 for s in bm25]))
    assert distribution_normalized([4.0, 4.0]) == [0.5, 0.5]  # no order in it
    assert distribution_normalized([]) == []
    assert distribution_normalized([None, 1.0, 3.0]) == pytest.approx(distribution_normalized([1.0, 1.0, 3.0]))
    assert distribution_normalized([math.inf, 1.0, 3.0]) == pytest.approx(distribution_normalized([3.0, 1.0, 3.0]))


def test_agreement_counts_unlike_haystacks_max_based_dbsf() -> None:
    """A document both retrievers rank second beats one only a single retriever ranks first (by a little): the
    sum rewards agreement; Haystack's distribution_based_rank_fusion keeps the maximum and ranks it below."""
    bm25 = [Document(id="a", score=10.0), Document(id="both", score=9.0), Document(id="x", score=1.0)]
    dense = [Document(id="b", score=0.80), Document(id="both", score=0.79), Document(id="y", score=0.30)]
    ours = SyntrieverScoreFusionJoiner().run(documents=[bm25, dense])["documents"]
    assert ours[0].id == "both"
    haystack = DocumentJoiner(join_mode="distribution_based_rank_fusion").run(documents=[bm25, dense])["documents"]
    assert haystack[0].id != "both"


def test_component_returns_new_documents_with_fused_scores() -> None:
    bm25 = [Document(id="a", content="A", score=12.0, meta={"k": 1}), Document(id="b", content="B", score=3.0)]
    dense = [Document(id="b", content="B", score=0.61), Document(id="c", content="C", score=0.60)]
    joiner = SyntrieverScoreFusionJoiner(top_k=2)
    out = joiner.run(documents=[bm25, dense])["documents"]
    expected = fuse_scores([[(d.id, d.score) for d in bm25], [(d.id, d.score) for d in dense]])[:2]
    assert [(d.id, d.score) for d in out] == expected
    assert out[0] is not bm25[0]
    assert bm25[0].score == 12.0  # inputs untouched
    fused_a = out[[d.id for d in out].index("a")]
    assert (fused_a.content, fused_a.meta) == ("A", {"k": 1})
    assert len(joiner.run(documents=[bm25, dense], top_k=3)["documents"]) == 3  # run-time top_k wins
    assert joiner.run(documents=[[], []])["documents"] == []


def test_component_weights_serialisation_and_errors() -> None:
    bm25 = [Document(id="a", score=5.0), Document(id="b", score=1.0)]
    dense = [Document(id="b", score=0.9), Document(id="a", score=0.1)]
    assert SyntrieverScoreFusionJoiner(weights=[3.0, 1.0]).run(documents=[bm25, dense])["documents"][0].id == "a"
    assert SyntrieverScoreFusionJoiner(weights=[1.0, 3.0]).run(documents=[bm25, dense])["documents"][0].id == "b"
    joiner = SyntrieverScoreFusionJoiner(weights=[2.0, 1.0], top_k=7)
    data = joiner.to_dict()
    assert data["init_parameters"] == {"weights": [2.0, 1.0], "top_k": 7}
    again = SyntrieverScoreFusionJoiner.from_dict(data)
    assert (again.weights, again.top_k) == ([2.0, 1.0], 7)
    with pytest.raises(ValueError, match="2 document lists arrived but 3 weights"):
        SyntrieverScoreFusionJoiner(weights=[1.0, 1.0, 1.0]).run(documents=[bm25, dense])
    with pytest.raises(ValueError, match="must not be negative"):
        SyntrieverScoreFusionJoiner(weights=[-1.0, 1.0])
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        SyntrieverScoreFusionJoiner(top_k=0)
    with pytest.raises(ValueError, match="top_k must be at least 1, got -1"):
        SyntrieverScoreFusionJoiner().run(documents=[bm25, dense], top_k=-1)


@pytest.mark.parametrize("seed", range(3))
def test_evaluation_fusion_equals_the_served_component(seed: int) -> None:
    """The evaluation's ``fusion=dbsf`` hybrid ranks and scores as the served joiner does, document for document."""
    rng = random.Random(seed)
    pool = [f"d{i}" for i in range(60)]
    queries = [f"q{i}" for i in range(30)]
    bm25 = {q: {d: rng.randint(1, 40) / 4 for d in rng.sample(pool, rng.randint(0, 30))} for q in queries}
    dense = {q: {d: rng.random() for d in rng.sample(pool, rng.randint(1, 30))} for q in queries[:-2]}
    depth = rng.choice([5, 20, 100])
    fused = score_fusion([bm25, dense], depth=depth)
    joiner = SyntrieverScoreFusionJoiner(top_k=depth)
    for q in queries:
        lists = [[Document(id=d, score=s) for d, s in rank_documents(run.get(q, {}))] for run in (bm25, dense)]
        expected = joiner.run(documents=lists)["documents"]
        assert [d for d, _ in rank_documents(fused[q])] == [d.id for d in expected], q
        assert [fused[q][d.id] for d in expected] == pytest.approx([d.score for d in expected], rel=1e-9)
