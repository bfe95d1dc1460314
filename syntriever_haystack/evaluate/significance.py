"""Paired significance tests over queries, and Holm's correction for comparing several systems.

Two systems evaluated on the same queries give paired per-query scores ``a`` and ``b``. The tests here ask
whether the mean of ``b - a`` differs from 0:

- ``"t-test"``: the paired (dependent-samples) Student t-test, what most IR papers report;
- ``"permutation"``: the paired randomisation test (random sign flips of the differences; Smucker et al.,
  CIKM 2007), which makes no normality assumption;
- ``"bootstrap"``: the paired bootstrap test (Sakai, SIGIR 2006) on the shifted mean difference.

Every result carries a 95% confidence interval of the mean difference (t-based for the t-test, percentile
bootstrap otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from syntriever_haystack.errors import SyntrieverError

TESTS = ("t-test", "permutation", "bootstrap")


@dataclass(frozen=True)
class PairedTest:
    """Outcome of a paired test of ``mean(b - a) == 0``.

    :param delta: Observed mean difference ``mean(b) - mean(a)``.
    :param p_value: Two-sided p-value.
    :param ci_low: Lower bound of the 95% confidence interval of ``delta``.
    :param ci_high: Upper bound of the 95% confidence interval of ``delta``.
    :param test: Which test produced it.
    :param n: Number of paired queries.
    """

    delta: float
    p_value: float
    ci_low: float
    ci_high: float
    test: str
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    test: str = "t-test",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedTest:
    """Test whether system ``b`` differs from system ``a`` on paired per-query scores.

    :param a: Per-query scores of the baseline.
    :param b: Per-query scores of the other system, same queries in the same order.
    :param test: ``"t-test"``, ``"permutation"`` or ``"bootstrap"``.
    :param n_resamples: Resamples of the permutation and bootstrap tests.
    :param seed: Seed of the resampling (results are reproducible).
    :raises SyntrieverError: If the arrays differ in length, are empty, or the test name is unknown.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise SyntrieverError(f"paired test needs two 1-d arrays of equal length, got shapes {x.shape} and {y.shape}")
    if test not in TESTS:
        raise SyntrieverError(f"unknown significance test {test!r}; choose one of {', '.join(TESTS)}")
    n = len(x)
    if n == 0:
        raise SyntrieverError("paired test needs at least one query")
    diff = y - x
    delta = float(diff.mean())
    if n < 2 or np.allclose(diff, 0.0):
        # One query, or identical scores everywhere: no evidence of a difference.
        return PairedTest(delta, 1.0, delta, delta, test, n)
    rng = np.random.default_rng(seed)
    if test == "t-test" and np.allclose(diff, diff[0]):
        # Zero variance with a non-zero shift: t is infinite, p -> 0.
        return PairedTest(delta, 0.0, delta, delta, test, n)
    if test == "t-test":
        from scipy import stats

        result = stats.ttest_rel(y, x)
        sem = float(diff.std(ddof=1) / np.sqrt(n))
        half = float(stats.t.ppf(0.975, n - 1)) * sem
        return PairedTest(delta, float(result.pvalue), delta - half, delta + half, test, n)
    boot_means = _bootstrap_means(diff, rng, n_resamples)
    ci_low, ci_high = (float(v) for v in np.percentile(boot_means, [2.5, 97.5]))
    if test == "permutation":
        signs = rng.choice(np.array([-1.0, 1.0]), size=(n_resamples, n))
        null = (signs * diff).mean(axis=1)
    else:  # bootstrap: resample the differences shifted to mean 0 (the null hypothesis)
        null = boot_means - delta
    extreme = int(np.sum(np.abs(null) >= abs(delta) - 1e-12))
    p_value = (extreme + 1) / (n_resamples + 1)
    return PairedTest(delta, float(p_value), ci_low, ci_high, test, n)


def _bootstrap_means(diff: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    n = len(diff)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    return means


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (controls the family-wise error rate over several comparisons)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
