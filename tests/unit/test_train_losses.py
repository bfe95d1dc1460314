"""The training losses against their definitions (METHOD.md §1-3), brute force and sentence-transformers' maths."""

from __future__ import annotations

import doctest
import itertools
import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from sentence_transformers import util as st_util

from syntriever_haystack.train import losses as losses_module
from syntriever_haystack.train.losses import (
    BradleyTerryLoss,
    LCELoss,
    MultiPositiveContrastiveLoss,
    PartialPlackettLuceLoss,
    lce_group_logits,
    similarity_matrix,
)

SCALE = 20.0
F64 = torch.float64


def _randn(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=F64)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dot product of two vectors in plain python."""
    return sum(u * v for u, v in zip(a.tolist(), b.tolist(), strict=True))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two vectors in plain python."""
    return _dot(a, b) / (math.sqrt(_dot(a, a)) * math.sqrt(_dot(b, b)))


def _score_rows(queries: torch.Tensor, candidates: torch.Tensor, *, scale: float = SCALE) -> list[list[float]]:
    return [[scale * _cos(q, c) for c in candidates] for q in queries]


def _pl_likelihood(scores: list[float], order: tuple[int, ...]) -> float:
    """Full Plackett-Luce probability of the ranking ``order`` (every candidate) under ``scores``."""
    probability = 1.0
    for k in range(len(order)):
        rest = order[k:]
        probability *= math.exp(scores[order[k]]) / sum(math.exp(scores[j]) for j in rest)
    return probability


# 1. Multi-positive == InfoNCE == MultipleNegativesRankingLoss


def test_multi_positive_single_positive_equals_infonce_and_mnrl() -> None:
    batch, dim = 5, 12
    queries, positives = _randn(batch, dim, seed=1), _randn(batch, dim, seed=2)
    mask = torch.eye(batch, dtype=torch.bool)
    loss = MultiPositiveContrastiveLoss(scale=SCALE)(queries, positives, mask)

    # InfoNCE by hand
    rows = _score_rows(queries, positives)
    by_hand = sum(-math.log(math.exp(r[i]) / sum(math.exp(x) for x in r)) for i, r in enumerate(rows)) / batch
    assert loss.item() == pytest.approx(by_hand, rel=1e-10)

    # sentence-transformers' MultipleNegativesRankingLoss: cross_entropy(scale * cos_sim(a, p), arange(B))
    mnrl = F.cross_entropy(SCALE * st_util.cos_sim(queries, positives), torch.arange(batch))
    torch.testing.assert_close(loss, mnrl, rtol=1e-10, atol=1e-10)


def test_multi_positive_with_hard_negatives_equals_mnrl_triplets() -> None:
    batch, dim = 4, 10
    queries, positives, negatives = (_randn(batch, dim, seed=s) for s in (3, 4, 5))
    candidates = torch.cat([positives, negatives])
    mask = torch.zeros(batch, 2 * batch, dtype=torch.bool)
    mask[torch.arange(batch), torch.arange(batch)] = True
    loss = MultiPositiveContrastiveLoss()(queries, candidates, mask)
    mnrl = F.cross_entropy(SCALE * st_util.cos_sim(queries, candidates), torch.arange(batch))
    torch.testing.assert_close(loss, mnrl, rtol=1e-10, atol=1e-10)
    # the hard negatives matter: without them the loss is different (and smaller)
    assert loss.item() > MultiPositiveContrastiveLoss()(queries, positives, torch.eye(batch, dtype=torch.bool)).item()


# 2. Multi-positive brute force


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("similarity", ["cos", "dot"])
def test_multi_positive_matches_brute_force(seed: int, similarity: str) -> None:
    rng = torch.Generator().manual_seed(100 + seed)
    batch = int(torch.randint(1, 5, (1,), generator=rng))
    n_candidates = int(torch.randint(batch, 11, (1,), generator=rng))
    dim = int(torch.randint(2, 9, (1,), generator=rng))
    scale = 20.0 if similarity == "cos" else 0.7
    queries, candidates = _randn(batch, dim, seed=seed), _randn(n_candidates, dim, seed=seed + 50)
    positive_mask = torch.rand(batch, n_candidates, generator=rng) < 0.3
    positive_mask[torch.arange(batch), torch.randint(0, n_candidates, (batch,), generator=rng)] = True
    candidate_mask = (torch.rand(batch, n_candidates, generator=rng) < 0.7) | positive_mask

    loss_fn = MultiPositiveContrastiveLoss(scale=scale, similarity=similarity)
    got_full = loss_fn(queries, candidates, positive_mask)
    got_masked = loss_fn(queries, candidates, positive_mask, candidate_mask)

    def sim(q: torch.Tensor, c: torch.Tensor) -> float:
        return scale * (_cos(q, c) if similarity == "cos" else _dot(q, c))

    def brute(cmask: torch.Tensor) -> float:
        total = 0.0
        for i in range(batch):
            numerator = sum(
                math.exp(sim(queries[i], candidates[c])) for c in range(n_candidates) if positive_mask[i, c]
            )
            denominator = sum(math.exp(sim(queries[i], candidates[c])) for c in range(n_candidates) if cmask[i, c])
            total += -math.log(numerator / denominator)
        return total / batch

    assert got_full.item() == pytest.approx(brute(torch.ones_like(positive_mask)), rel=1e-9, abs=1e-12)
    assert got_masked.item() == pytest.approx(brute(candidate_mask), rel=1e-9, abs=1e-12)


def test_multi_positive_extra_positive_lowers_the_loss() -> None:
    """The numerator sums over every positive: adding a candidate as a positive can only lower the loss."""
    queries, candidates = _randn(3, 8, seed=7), _randn(9, 8, seed=8)
    one = torch.zeros(3, 9, dtype=torch.bool)
    one[torch.arange(3), torch.arange(3)] = True
    two = one.clone()
    two[torch.arange(3), torch.arange(3) + 3] = True
    loss_fn = MultiPositiveContrastiveLoss()
    assert loss_fn(queries, candidates, two).item() < loss_fn(queries, candidates, one).item()


# 3. Partial Plackett-Luce == marginal of the full PL likelihood


@pytest.mark.parametrize("seed", range(3))
def test_partial_plackett_luce_equals_brute_force_marginal(seed: int) -> None:
    """``c+ > c- > (tail, any order)``: its probability is the **sum** of the full PL likelihoods over every order
    of the tail (the orderings are disjoint events), which equals the product of PL's first two factors.
    METHOD.md's "average over orderings" is the same quantity up to the factor ``len(orderings)``: the mean of the
    full likelihoods times the number of orderings. Both are checked."""
    batch, dim = 3, 6
    queries, preferred, rejected = (_randn(batch, dim, seed=10 * seed + k) for k in range(3))
    candidates = torch.cat([preferred, rejected])  # C: 6 candidates, preferred then rejected
    rows = _score_rows(queries, candidates, scale=5.0)  # a moderate scale keeps every permutation's term visible
    loss = PartialPlackettLuceLoss(scale=5.0)(queries, preferred, rejected)

    by_sum, by_mean = [], []
    for i in range(batch):
        top, second = i, batch + i
        tail = [c for c in range(2 * batch) if c not in (top, second)]
        likelihoods = [_pl_likelihood(rows[i], (top, second, *perm)) for perm in itertools.permutations(tail)]
        assert len(likelihoods) == 24
        by_sum.append(-math.log(sum(likelihoods)))
        by_mean.append(-math.log(len(likelihoods) * (sum(likelihoods) / len(likelihoods))))
    assert loss.item() == pytest.approx(sum(by_sum) / batch, rel=1e-10)
    assert loss.item() == pytest.approx(sum(by_mean) / batch, rel=1e-10)


def test_partial_plackett_luce_second_factor_excludes_preferred() -> None:
    """Differs from a plain sum of two softmax terms over the whole of C (the c+ must leave the second one)."""
    queries, preferred, rejected = (_randn(2, 5, seed=s) for s in (20, 21, 22))
    scores = SCALE * similarity_matrix(queries, torch.cat([preferred, rejected]))
    log_probs = torch.log_softmax(scores, dim=1)
    wrong = -(log_probs[[0, 1], [0, 1]] + log_probs[[0, 1], [2, 3]]).mean()
    loss = PartialPlackettLuceLoss()(queries, preferred, rejected)
    assert loss.item() < wrong.item()


# 4. KL regularisation


def test_kl_term_zero_for_own_scores_and_exact_for_other_reference() -> None:
    batch, dim, weight = 3, 7, 0.3
    queries, preferred, rejected = (_randn(batch, dim, seed=s) for s in (30, 31, 32))
    own = SCALE * similarity_matrix(queries, torch.cat([preferred, rejected]))
    plain = PartialPlackettLuceLoss()(queries, preferred, rejected, reference_scores=_randn(batch, 2 * batch, seed=0))

    regularised = PartialPlackettLuceLoss(kl_weight=weight)
    same = regularised(queries, preferred, rejected, reference_scores=own)
    torch.testing.assert_close(same, plain, rtol=1e-12, atol=1e-12)
    assert regularised.last_terms["kl"] == pytest.approx(0.0, abs=1e-12)
    assert regularised.last_terms["pl"] == pytest.approx(plain.item(), rel=1e-12)

    reference = 4.0 * _randn(batch, 2 * batch, seed=33)
    other = regularised(queries, preferred, rejected, reference_scores=reference)
    model_rows, ref_rows = own.tolist(), reference.tolist()
    kl_total = 0.0
    for i in range(batch):
        p_norm = sum(math.exp(x) for x in ref_rows[i])
        q_norm = sum(math.exp(x) for x in model_rows[i])
        for r, m in zip(ref_rows[i], model_rows[i], strict=True):
            p, q = math.exp(r) / p_norm, math.exp(m) / q_norm
            kl_total += p * math.log(p / q)
    brute_kl = kl_total / batch
    assert brute_kl > 0.01
    assert other.item() - plain.item() == pytest.approx(weight * brute_kl, rel=1e-9)
    assert regularised.last_terms["kl"] == pytest.approx(brute_kl, rel=1e-9)
    assert regularised.last_terms["pl"] == pytest.approx(plain.item(), rel=1e-12)
    terms = regularised.components(queries, preferred, rejected, reference)
    assert terms["kl"].item() == pytest.approx(brute_kl, rel=1e-9)


def test_kl_reference_gets_no_gradient_and_model_does() -> None:
    queries = _randn(2, 4, seed=40).requires_grad_(True)
    preferred, rejected = _randn(2, 4, seed=41), _randn(2, 4, seed=42)
    reference = _randn(2, 4, seed=43).requires_grad_(True)
    loss_fn = PartialPlackettLuceLoss(kl_weight=1.0)
    loss_fn(queries, preferred, rejected, reference_scores=reference).backward()
    assert reference.grad is None
    assert queries.grad is not None
    assert queries.grad.abs().sum() > 0


def test_kl_weight_needs_reference_scores() -> None:
    queries, preferred, rejected = (_randn(2, 4, seed=s) for s in (50, 51, 52))
    with pytest.raises(ValueError, match="reference_scores"):
        PartialPlackettLuceLoss(kl_weight=0.5)(queries, preferred, rejected)
    with pytest.raises(ValueError, match=r"reference_scores must have shape \(2, 4\)"):
        PartialPlackettLuceLoss(kl_weight=0.5)(queries, preferred, rejected, reference_scores=_randn(2, 2, seed=1))
    # kl_weight == 0: reference_scores ignored, even if missing
    assert PartialPlackettLuceLoss()(queries, preferred, rejected).item() > 0


# 5. Bradley-Terry


@pytest.mark.parametrize("similarity", ["cos", "dot"])
def test_bradley_terry_equals_brute_force(similarity: str) -> None:
    batch, dim, scale = 4, 6, (SCALE if similarity == "cos" else 0.5)
    queries, preferred, rejected = (_randn(batch, dim, seed=s) for s in (60, 61, 62))
    loss = BradleyTerryLoss(scale=scale, similarity=similarity)(
        queries, preferred, rejected, reference_scores=_randn(batch, 2 * batch, seed=63)
    )

    def sim(a: torch.Tensor, b: torch.Tensor) -> float:
        return scale * (_cos(a, b) if similarity == "cos" else _dot(a, b))

    brute = 0.0
    for i in range(batch):
        diff = sim(queries[i], preferred[i]) - sim(queries[i], rejected[i])
        brute += -math.log(1.0 / (1.0 + math.exp(-diff)))
    assert loss.item() == pytest.approx(brute / batch, rel=1e-10)


# 6. LCE


def test_lce_group_size_two_equals_pairwise_softmax() -> None:
    logits = 3.0 * _randn(6, 2, seed=70)
    loss = LCELoss()(logits)
    a, b = logits[:, 0], logits[:, 1]
    brute = (
        sum(-math.log(math.exp(x) / (math.exp(x) + math.exp(y))) for x, y in zip(a.tolist(), b.tolist(), strict=True))
        / 6
    )
    assert loss.item() == pytest.approx(brute, rel=1e-10)
    torch.testing.assert_close(loss, F.softplus(b - a).mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        loss, F.binary_cross_entropy_with_logits(a - b, torch.ones_like(a)), rtol=1e-12, atol=1e-12
    )


def test_lce_equals_cross_entropy_with_target_zero() -> None:
    logits = 2.0 * _randn(5, 8, seed=71)
    loss = LCELoss()(logits)
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.zeros(5, dtype=torch.long)))
    # the positive is column 0: moving it elsewhere changes the loss
    assert loss.item() != pytest.approx(LCELoss()(logits.roll(1, dims=1)).item())


def test_lce_group_logits_reshapes_and_validates() -> None:
    flat = torch.arange(12.0)
    grouped = lce_group_logits(flat, 4)
    assert grouped.shape == (3, 4)
    assert grouped[1].tolist() == [4.0, 5.0, 6.0, 7.0]
    torch.testing.assert_close(lce_group_logits(flat.unsqueeze(1), 4), grouped)
    with pytest.raises(ValueError, match="groups of 5"):
        lce_group_logits(flat, 5)
    with pytest.raises(ValueError, match=r"\[Q\*G\]"):
        lce_group_logits(torch.zeros(6, 2), 2)
    with pytest.raises(ValueError, match="group_size"):
        lce_group_logits(flat, 0)


# 7. Invariance to the order of the in-batch items


def test_losses_invariant_to_batch_order() -> None:
    batch, n_candidates, dim = 5, 9, 6
    perm = torch.tensor([3, 0, 4, 1, 2])
    cand_perm = torch.tensor([8, 2, 5, 0, 7, 1, 6, 3, 4])

    queries, candidates = _randn(batch, dim, seed=80), _randn(n_candidates, dim, seed=81)
    generator = torch.Generator().manual_seed(82)
    positive_mask = torch.rand(batch, n_candidates, generator=generator) < 0.3
    positive_mask[torch.arange(batch), torch.arange(batch)] = True
    candidate_mask = (torch.rand(batch, n_candidates, generator=generator) < 0.6) | positive_mask
    multi = MultiPositiveContrastiveLoss()
    torch.testing.assert_close(
        multi(queries, candidates, positive_mask, candidate_mask),
        multi(
            queries[perm],
            candidates[cand_perm],
            positive_mask[perm][:, cand_perm],
            candidate_mask[perm][:, cand_perm],
        ),
    )

    preferred, rejected = _randn(batch, dim, seed=83), _randn(batch, dim, seed=84)
    reference = 3.0 * _randn(batch, 2 * batch, seed=85)
    columns = torch.cat([perm, perm + batch])
    pl = PartialPlackettLuceLoss(kl_weight=0.5)
    original = pl(queries, preferred, rejected, reference_scores=reference)
    original_terms = dict(pl.last_terms)
    permuted = pl(queries[perm], preferred[perm], rejected[perm], reference_scores=reference[perm][:, columns])
    torch.testing.assert_close(original, permuted)
    assert pl.last_terms == pytest.approx(original_terms)
    # a reference permuted inconsistently does change the loss (so the check above can fail)
    assert pl(queries[perm], preferred[perm], rejected[perm], reference_scores=reference).item() != pytest.approx(
        original.item()
    )

    bt = BradleyTerryLoss()
    torch.testing.assert_close(bt(queries, preferred, rejected), bt(queries[perm], preferred[perm], rejected[perm]))

    logits = _randn(batch, 4, seed=86)
    negatives_perm = torch.tensor([0, 3, 1, 2])  # the positive stays in column 0
    torch.testing.assert_close(LCELoss()(logits), LCELoss()(logits[perm][:, negatives_perm]))


# 8. Finite losses and gradients


@pytest.mark.parametrize("similarity", ["cos", "dot"])
def test_finite_loss_and_gradients_for_extreme_inputs(similarity: str) -> None:
    batch, dim = 4, 16
    base = torch.randn(batch, dim, generator=torch.Generator().manual_seed(90))
    large = 1e4 * base
    near_duplicate = base + 1e-7 * torch.randn(batch, dim, generator=torch.Generator().manual_seed(91))
    for preferred_source, rejected_source in ((large, 1e4 * near_duplicate), (base, near_duplicate)):
        queries = (1e4 * base).clone().requires_grad_(True)
        preferred = preferred_source.clone().requires_grad_(True)
        rejected = rejected_source.clone().requires_grad_(True)
        candidates = torch.cat([preferred, rejected])
        mask = torch.zeros(batch, 2 * batch, dtype=torch.bool)
        mask[torch.arange(batch), torch.arange(batch)] = True
        reference = torch.full((batch, 2 * batch), 1e4)
        reference[:, 0] = -1e4
        results = [
            MultiPositiveContrastiveLoss(similarity=similarity)(queries, candidates, mask),
            PartialPlackettLuceLoss(similarity=similarity, kl_weight=1.0)(
                queries, preferred, rejected, reference_scores=reference
            ),
            BradleyTerryLoss(similarity=similarity)(queries, preferred, rejected),
        ]
        for loss in results:
            assert torch.isfinite(loss), loss
            queries.grad = preferred.grad = rejected.grad = None
            loss.backward()
            for tensor in (queries, preferred, rejected):
                assert tensor.grad is not None
                assert torch.isfinite(tensor.grad).all()

    logits = (1e4 * torch.randn(3, 8, generator=torch.Generator().manual_seed(92))).requires_grad_(True)
    lce = LCELoss()(logits)
    lce.backward()
    assert torch.isfinite(lce)
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()


# 9. Clear errors


def test_multi_positive_errors() -> None:
    loss_fn = MultiPositiveContrastiveLoss()
    queries, candidates = _randn(2, 4, seed=1), _randn(3, 4, seed=2)
    no_positive = torch.tensor([[True, False, False], [False, False, False]])
    with pytest.raises(ValueError, match=r"at least one positive.*\[1\]"):
        loss_fn(queries, candidates, no_positive)
    positive_mask = torch.tensor([[True, False, False], [False, True, False]])
    with pytest.raises(ValueError, match="removes a positive"):
        loss_fn(queries, candidates, positive_mask, torch.tensor([[True, True, True], [True, False, True]]))
    with pytest.raises(ValueError, match="positive_mask must be a bool tensor of shape"):
        loss_fn(queries, candidates, positive_mask[:, :2])
    with pytest.raises(ValueError, match="positive_mask must be a bool tensor"):
        loss_fn(queries, candidates, positive_mask.float())
    with pytest.raises(ValueError, match="candidate_mask must be a bool tensor of shape"):
        loss_fn(queries, candidates, positive_mask, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="dimensions differ"):
        loss_fn(queries, _randn(3, 5, seed=3), positive_mask)
    with pytest.raises(ValueError, match="2-D"):
        loss_fn(queries[0], candidates, positive_mask)
    with pytest.raises(ValueError, match="similarity must be one of"):
        MultiPositiveContrastiveLoss(similarity="euclidean")
    with pytest.raises(ValueError, match="scale"):
        MultiPositiveContrastiveLoss(scale=0.0)


@pytest.mark.parametrize("loss_cls", [PartialPlackettLuceLoss, BradleyTerryLoss])
def test_pair_losses_reject_mismatched_shapes(loss_cls: type[PartialPlackettLuceLoss | BradleyTerryLoss]) -> None:
    queries = _randn(3, 4, seed=1)
    with pytest.raises(ValueError, match="same shape"):
        loss_cls()(queries, _randn(2, 4, seed=2), _randn(3, 4, seed=3))
    with pytest.raises(ValueError, match="same shape"):
        loss_cls()(queries, _randn(3, 4, seed=2), _randn(3, 5, seed=3))
    with pytest.raises(ValueError, match="empty"):
        loss_cls()(queries[:0], queries[:0], queries[:0])


def test_lce_errors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        LCELoss()(torch.zeros(8))
    with pytest.raises(ValueError, match="size >= 2"):
        LCELoss()(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="kl_weight"):
        PartialPlackettLuceLoss(kl_weight=-1.0)


# 10. The docstring examples run


def test_docstring_examples_run() -> None:
    result = doctest.testmod(losses_module, verbose=False, report=True)
    assert result.attempted >= 20
    assert result.failed == 0
