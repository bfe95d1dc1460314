"""MarginMSELoss (Hofstätter et al. 2020; GPL) against an explicit python loop, and the direction of its gradient."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from syntriever_haystack.train.losses import MarginMSELoss  # noqa: E402

F64 = torch.float64


def _randn(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=F64)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(u * v for u, v in zip(a, b, strict=True))


def _sim(a: list[float], b: list[float], similarity: str) -> float:
    if similarity == "dot":
        return _dot(a, b)
    return _dot(a, b) / (math.sqrt(_dot(a, a)) * math.sqrt(_dot(b, b)))


def _brute_force(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    margins: torch.Tensor,
    *,
    similarity: str = "cos",
    scale: float = 1.0,
) -> float:
    total = 0.0
    for q, p, n, m in zip(queries.tolist(), positives.tolist(), negatives.tolist(), margins.tolist(), strict=True):
        student = scale * _sim(q, p, similarity) - scale * _sim(q, n, similarity)
        total += (student - m) ** 2
    return total / len(margins)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("similarity", ["cos", "dot"])
def test_margin_mse_matches_an_explicit_loop(seed: int, similarity: str) -> None:
    triples, dim = 7, 12
    queries, positives, negatives = (_randn(triples, dim, seed=seed * 10 + k) for k in range(3))
    margins = _randn(triples, seed=seed * 10 + 3)
    loss = MarginMSELoss(similarity=similarity)(queries, positives, negatives, margins)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(_brute_force(queries, positives, negatives, margins, similarity=similarity))


def test_margin_mse_scale_multiplies_the_student_margin_only() -> None:
    queries, positives, negatives = (_randn(4, 8, seed=s) for s in (1, 2, 3))
    margins = 10 * _randn(4, seed=4)
    loss = MarginMSELoss(scale=5.0)(queries, positives, negatives, margins)
    assert loss.item() == pytest.approx(_brute_force(queries, positives, negatives, margins, scale=5.0))


def test_margin_mse_is_zero_when_the_student_matches_the_teacher_and_ignores_a_constant_offset() -> None:
    queries, positives, negatives = (_randn(5, 8, seed=s) for s in (5, 6, 7))
    cos = torch.nn.functional.cosine_similarity
    student = cos(queries, positives) - cos(queries, negatives)
    loss_fn = MarginMSELoss()
    assert loss_fn(queries, positives, negatives, student).item() == pytest.approx(0.0, abs=1e-24)
    # the loss sees only t+ - t-: shifting both teacher scores by a constant changes nothing
    t_pos, t_neg = _randn(5, seed=8), _randn(5, seed=9)
    a = loss_fn(queries, positives, negatives, t_pos - t_neg)
    b = loss_fn(queries, positives, negatives, (t_pos + 3.0) - (t_neg + 3.0))
    torch.testing.assert_close(a, b)


def test_margin_mse_duplicate_rows_weigh_like_separate_triples() -> None:
    """The trainer repeats a query's row for each (p+, p-) pair: the loss is the plain mean over the rows."""
    q, p, n = (_randn(1, 6, seed=s) for s in (11, 12, 13))
    negatives = torch.cat([n, _randn(1, 6, seed=14)])
    margins = torch.tensor([0.3, -0.2], dtype=F64)
    loss = MarginMSELoss()(q.repeat(2, 1), p.repeat(2, 1), negatives, margins)
    assert loss.item() == pytest.approx(_brute_force(q.repeat(2, 1), p.repeat(2, 1), negatives, margins))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("teacher_margin", [-1.2, 0.0, 0.9])
def test_margin_mse_gradient_moves_the_student_margin_towards_the_teacher(seed: int, teacher_margin: float) -> None:
    q, p, n = (_randn(1, 16, seed=seed * 3 + k).requires_grad_(True) for k in range(3))
    teacher = torch.tensor([teacher_margin], dtype=F64, requires_grad=True)
    loss_fn = MarginMSELoss()
    cos = torch.nn.functional.cosine_similarity

    def student() -> float:
        return float((cos(q, p) - cos(q, n)).detach())

    before = student()
    loss = loss_fn(q, p, n, teacher)
    loss.backward()
    assert teacher.grad is None  # the teacher's margins are targets, not parameters
    for x in (q, p, n):
        assert x.grad is not None
        assert torch.isfinite(x.grad).all()
    # d loss / d student margin = 2 (student - teacher): one small descent step closes the gap
    with torch.no_grad():
        for x in (q, p, n):
            x -= 0.05 * x.grad
    after = student()
    assert abs(after - teacher_margin) < abs(before - teacher_margin)
    # and plain gradient descent converges to the teacher's margin
    optimizer = torch.optim.SGD([q, p, n], lr=0.5)
    for _ in range(400):
        optimizer.zero_grad()
        loss_fn(q, p, n, teacher).backward()
        optimizer.step()
    assert student() == pytest.approx(teacher_margin, abs=1e-3)


def test_margin_mse_rejects_bad_shapes() -> None:
    loss_fn = MarginMSELoss()
    q = torch.randn(3, 8)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(q, torch.randn(2, 8), torch.randn(3, 8), torch.zeros(3))
    with pytest.raises(ValueError, match=r"teacher_margins must have shape \[3\]"):
        loss_fn(q, torch.randn(3, 8), torch.randn(3, 8), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="empty"):
        loss_fn(torch.randn(0, 8), torch.randn(0, 8), torch.randn(0, 8), torch.zeros(0))
    with pytest.raises(ValueError, match="scale"):
        MarginMSELoss(scale=0.0)
    with pytest.raises(ValueError, match="similarity"):
        MarginMSELoss(similarity="l2")
    assert MarginMSELoss().get_config_dict() == {"scale": 1.0, "similarity": "cos"}
