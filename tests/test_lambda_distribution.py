"""The mixing ratios follow the paper's distribution: K sorted Beta(alpha, alpha) draws are the
Beta order statistics; stratified draws put one ratio in each of K equal-probability strata.
Drawn per sample (lambda_scope="sample") to get many sets per batch; the batch scope's one set per
batch is checked over iterations in test_lambda_scope.py."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from conftest import beta_pit, run_multimix


def draw_lambdas(k: int, alpha: float, sampling: str, seed: int, batch: int = 256,
                 iterations: int = 8) -> np.ndarray:
    images = np.zeros((batch, 2), np.float32)  # mixup weights are the ratios themselves
    runs = run_multimix(images, [np.array(0)] * batch, layout="", k=k, alpha=alpha,
                        lambda_sampling=sampling, lambda_scope="sample", seed=seed,
                        iterations=iterations)
    return np.concatenate([r[1] for r in runs])  # (batch * iterations, k)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_sorted_lambdas_are_beta_order_statistics(alpha):
    k = 5
    lam = draw_lambdas(k, alpha, "sorted", seed=11)
    assert (np.diff(lam, axis=1) >= 0).all()
    u = beta_pit(lam, alpha)
    for j in range(k):
        # the j-th smallest of k i.i.d. uniforms is Beta(j + 1, k - j)
        assert stats.kstest(u[:, j], stats.beta(j + 1, k - j).cdf).pvalue > 1e-3
    # all ratios pooled are Beta(alpha, alpha)
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.4, 1.0])
def test_stratified_lambdas_fill_each_stratum_uniformly(alpha):
    k = 4
    lam = draw_lambdas(k, alpha, "stratified", seed=12)
    assert (np.diff(lam, axis=1) >= 0).all()
    u = beta_pit(lam, alpha)
    for j in range(k):
        pos = u[:, j] * k - j  # position within stratum j, uniform on [0, 1]
        assert (pos > -1e-4).all() and (pos < 1 + 1e-4).all()
        assert stats.kstest(np.clip(pos, 0, 1), "uniform").pvalue > 1e-3


def test_wrong_distribution_is_detected():
    """The KS check above has power: uniform ratios are not Beta(0.2, 0.2) order statistics."""
    rng = np.random.default_rng(0)
    lam = np.sort(rng.random((2048, 5)), axis=1).astype(np.float32)
    assert stats.kstest(beta_pit(lam, 0.2)[:, 0], stats.beta(1, 5).cdf).pvalue < 1e-6


def test_partners_are_uniform_permutations():
    images = np.zeros((4, 2), np.float32)
    runs = run_multimix(images, [np.array(0)] * 4, layout="", k=1, seed=21, iterations=600)
    perms = np.stack([r[3] for r in runs])
    counts = np.zeros((4, 4))
    for p in perms:
        counts[np.arange(4), p] += 1
    # each sample meets each partner with probability 1/4
    assert stats.chisquare(counts.ravel(), np.full(16, 600 / 4)).pvalue > 1e-3
