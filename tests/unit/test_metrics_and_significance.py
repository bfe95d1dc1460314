"""Metrics checked by hand and against pytrec_eval; significance tests against exact/brute-force versions."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.evaluate import holm_adjust, paired_test, parse_metrics, score_run
from syntriever_haystack.evaluate.metrics import MetricError, canonical_metric, evaluable_queries


def test_metric_names_are_canonicalised() -> None:
    assert parse_metrics(None) == ["nDCG@10", "R@100", "RR@10", "Judged@10"]
    assert canonical_metric("MRR@10") == "RR@10"
    assert canonical_metric("Recall@100") == "R@100"
    assert canonical_metric("ndcg@5") == "nDCG@5"
    assert canonical_metric("R(rel=2)@100") == "R(rel=2)@100"
    assert parse_metrics(["nDCG@10", "ndcg@10", "MRR@10"]) == ["nDCG@10", "RR@10"]
    with pytest.raises(MetricError, match="unknown metric 'bogus@3'"):
        canonical_metric("bogus@3")


def test_hand_computed_example() -> None:
    # q1: graded judgments d1=2, d7=1, d5=0; ranking d3 (unjudged), d1, d5, d7.
    # nDCG@10 (trec_eval: linear gains, log2(rank+1) discount):
    #   DCG = 2/log2(3) + 0/log2(4) + 1/log2(5); IDCG = 2/log2(2) + 1/log2(3)
    # RR@10 = 1/2; R@100 = 2/2; Judged@10 = 3 judged of the 4 returned = 0.75
    # (ir_measures divides by min(10, returned))
    # q2: nothing returned -> every metric 0, still counted in the means.
    qrels = {"q1": {"d1": 2, "d7": 1, "d5": 0}, "q2": {"d2": 1}}
    run = {"q1": {"d3": 4.0, "d1": 3.0, "d5": 2.0, "d7": 1.0}}
    scores = score_run(run, qrels)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 + 1 / math.log2(3)
    assert scores.query_ids == ["q1", "q2"]
    assert scores.missing == ["q2"]
    assert scores.per_query["nDCG@10"][0] == pytest.approx(dcg / idcg)
    assert scores.per_query["RR@10"][0] == pytest.approx(0.5)
    assert scores.per_query["R@100"][0] == pytest.approx(1.0)
    assert scores.per_query["Judged@10"][0] == pytest.approx(0.75)
    assert scores.per_query["nDCG@10"][1] == 0.0
    assert scores.means["nDCG@10"] == pytest.approx(dcg / idcg / 2)
    assert scores.means["RR@10"] == pytest.approx(0.25)


def test_queries_without_relevant_documents_are_excluded_not_averaged() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 0, "d3": 0}}
    kept, dropped = evaluable_queries(qrels)
    assert kept == ["q1"]
    assert dropped == ["q2"]
    scores = score_run({"q1": {"d1": 1.0}, "q2": {"d2": 1.0}}, qrels)
    assert scores.query_ids == ["q1"]
    assert scores.means["nDCG@10"] == 1.0


def test_queries_outside_the_qrels_are_ignored() -> None:
    scores = score_run({"q1": {"d1": 1.0}, "zzz": {"d1": 1.0}}, {"q1": {"d1": 1}})
    assert scores.query_ids == ["q1"]


def _random_case(seed: int) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(60)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(25):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 8))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        qrels[qid][judged[0]] = max(1, qrels[qid][judged[0]])
        if q % 7 == 3:
            continue  # no results for this query
        returned = rng.sample(docs, rng.randint(1, 9))  # < 10 so pytrec's uncut recip_rank equals RR@10
        run[qid] = {d: round(rng.random(), 4) for d in returned}
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pytrec_eval_and_brute_force(seed: int) -> None:
    import pytrec_eval

    qrels, run = _random_case(seed)
    ours = score_run(run, qrels, ["nDCG@10", "R@100", "RR@10", "Judged@10"])
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recip_rank"})
    reference = evaluator.evaluate(run)
    for row, qid in enumerate(ours.query_ids):
        ref = reference.get(qid, {"ndcg_cut_10": 0.0, "recall_100": 0.0, "recip_rank": 0.0})
        assert ours.per_query["nDCG@10"][row] == pytest.approx(ref["ndcg_cut_10"])
        assert ours.per_query["R@100"][row] == pytest.approx(ref["recall_100"])
        assert ours.per_query["RR@10"][row] == pytest.approx(ref["recip_rank"])
        # brute force, trec_eval conventions: sort by score desc, then doc id desc
        ranked = [d for d, _ in sorted(run.get(qid, {}).items(), key=lambda x: (x[1], x[0]), reverse=True)][:10]
        gains = [qrels[qid].get(d, 0) for d in ranked]
        ideal = sorted(qrels[qid].values(), reverse=True)[:10]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        assert ours.per_query["nDCG@10"][row] == pytest.approx(dcg / idcg)
        judged = sum(1 for d in ranked if d in qrels[qid])
        assert ours.per_query["Judged@10"][row] == pytest.approx(judged / len(ranked) if ranked else 0.0)
    # the mean is over every qrels query, including those without results
    assert ours.means["nDCG@10"] == pytest.approx(
        sum(reference.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels) / len(qrels)
    )


def test_paired_t_test_matches_the_formula() -> None:
    a = np.array([0.2, 0.5, 0.1, 0.9, 0.4, 0.3])
    b = np.array([0.3, 0.7, 0.1, 0.8, 0.6, 0.5])
    d = b - a
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    from scipy import stats

    expected_p = 2 * stats.t.sf(abs(t), len(d) - 1)
    result = paired_test(a, b, test="t-test")
    assert result.delta == pytest.approx(d.mean())
    assert result.p_value == pytest.approx(expected_p)
    assert result.ci_low < result.delta < result.ci_high


def test_permutation_test_matches_exact_enumeration() -> None:
    rng = np.random.default_rng(4)
    a = rng.random(10)
    b = a + rng.normal(0.08, 0.1, size=10)
    d = b - a
    exact = np.mean(
        [abs(np.mean(np.array(s) * d)) >= abs(d.mean()) - 1e-12 for s in itertools.product([-1, 1], repeat=10)]
    )
    result = paired_test(a, b, test="permutation", n_resamples=20_000, seed=1)
    assert result.p_value == pytest.approx(exact, abs=0.01)


def test_bootstrap_and_degenerate_cases() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(200)
    assert paired_test(a, a).p_value == 1.0
    assert paired_test(a, a + 0.1).p_value == 0.0
    clearly_better = paired_test(a, a + rng.normal(0.1, 0.05, 200), test="bootstrap", seed=0)
    assert clearly_better.p_value < 0.001
    assert clearly_better.ci_low > 0
    noise = paired_test(a, a + rng.normal(0.0, 0.05, 200), test="bootstrap", seed=0)
    assert noise.p_value > 0.01
    assert noise.ci_low < 0 < noise.ci_high
    with pytest.raises(SyntrieverError, match="equal length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(SyntrieverError, match="unknown significance test"):
        paired_test([1.0, 2.0], [1.0, 3.0], test="wilcoxon-ish")


def test_holm_adjustment_by_hand() -> None:
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04, monotone)
    assert holm_adjust([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_ties_are_broken_the_same_way_for_every_metric() -> None:
    # a and b tie (as RRF produces routinely); trec_eval orders ties by doc id descending: b first.
    run = {"q": {"a": 1 / 61, "b": 1 / 61}}
    scores = score_run(run, {"q": {"b": 1}}, ["nDCG@1", "P@1", "RR@10", "Judged@1"])
    assert {m: float(v[0]) for m, v in scores.per_query.items()} == {
        "nDCG@1": 1.0,
        "P@1": 1.0,
        "RR@10": 1.0,
        "Judged@1": 1.0,
    }


def test_too_little_evidence_is_never_significant() -> None:
    assert paired_test([0.2], [0.3]).p_value == 1.0
    exact = paired_test([0.0, 0.0, 0.0], [0.1, 0.1, 0.1], test="permutation", n_resamples=20_000)
    assert exact.p_value == pytest.approx(2 / 8, abs=0.02)  # only the all-same-sign flips are as extreme
