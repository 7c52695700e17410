"""Puzzle Mix's mask solvers: the exact s-t cut equals brute force; alpha-beta swap never beats it."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from dali_multimix.torch.graphcut import GridEnergy, solve_exact, solve_swap


def random_energy(rng, n, labels, pairwise_scale=1.0):
    return GridEnergy(rng.normal(size=(n, n, labels)),
                      pairwise_scale * rng.random((n - 1, n)), pairwise_scale * rng.random((n, n - 1)))


def brute_force(e: GridEnergy) -> float:
    n, m, L = e.unary.shape
    return min(e.energy(np.array(l).reshape(n, m)) for l in itertools.product(range(L), repeat=n * m))


@pytest.mark.parametrize("n, labels", [(2, 2), (2, 3), (3, 3), (2, 4)])
def test_exact_solver_equals_brute_force(n, labels):
    rng = np.random.default_rng(n * 10 + labels)
    for trial in range(8 if n * labels < 9 else 3):
        e = random_energy(rng, n, labels, pairwise_scale=[0.1, 1.0, 3.0][trial % 3])
        best = brute_force(e)
        got = solve_exact(e)
        assert got.shape == (n, n) and got.min() >= 0 and got.max() < labels
        assert e.energy(got) == pytest.approx(best, abs=1e-9)


def test_swap_energy_is_never_below_the_exact_optimum():
    rng = np.random.default_rng(5)
    for n in (4, 8):
        for _ in range(10):
            e = random_energy(rng, n, 3, pairwise_scale=2.0)
            exact, swap = e.energy(solve_exact(e)), e.energy(solve_swap(e))
            assert swap >= exact - 1e-6


def test_strong_smoothness_gives_a_constant_mask_and_none_follows_the_unary():
    rng = np.random.default_rng(1)
    unary = rng.normal(size=(4, 4, 3))
    free = solve_exact(GridEnergy(unary, np.zeros((3, 4)), np.zeros((4, 3))))
    np.testing.assert_array_equal(free, unary.argmin(axis=2))
    stiff = solve_exact(GridEnergy(unary, np.full((3, 4), 1e3), np.full((4, 3), 1e3)))
    assert len(np.unique(stiff)) == 1


def test_bad_energies_are_rejected():
    with pytest.raises(ValueError, match=r"cost_v must be \(1, 2\) and cost_h \(2, 1\)"):
        GridEnergy(np.zeros((2, 2, 3)), np.zeros((2, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"pairwise weights must be >= 0"):
        GridEnergy(np.zeros((2, 2, 3)), -np.ones((1, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"at least 2 labels"):
        GridEnergy(np.zeros((2, 2, 1)), np.zeros((1, 2)), np.zeros((2, 1)))



def test_swap_on_the_originals_quantisation():
    """scale=s: gco on trunc(s * cost) as the original's graphcut_multi (exactness against the
    original: tests/test_golden_puzzle.py); never below the optimum; bad scales are refused."""
    from dali_multimix.torch.graphcut import swap_scale

    rng = np.random.default_rng(9)
    for n in (2, 4, 8):
        for _ in range(5):
            e = GridEnergy(rng.random((n, n, 3)) * 0.1, 0.01 * rng.random((n - 1, n)), 0.01 * rng.random((n, n - 1)))
            labels = solve_swap(e, scale=swap_scale(n))
            assert labels.shape == (n, n) and e.energy(labels) >= e.energy(solve_exact(e)) - 1e-9
    assert swap_scale(16) == 256000.0
    with pytest.raises(ValueError, match=r"`scale` must be a finite number > 0; got -1"):
        solve_swap(e, scale=-1)
    with pytest.raises(ValueError, match=r"over int32"):
        solve_swap(e, scale=1e12)


def test_swap_truncates_as_the_original():
    """The original casts scale * cost to int32 (truncation); rounding instead picks another
    labelling here (found by brute force over both quantisations)."""
    unary = [[[9.946828304173716, 14.919383710597785, 15.5082391326033],
              [17.44384664466645, 4.4447364248443435, 13.502413279750094]],
             [[5.009911201541974, 7.031814182679973, 7.939442257781742],
              [12.430334625337029, 11.509579459806329, 11.00588207876311]]]
    e = GridEnergy(np.array(unary), np.array([[5.041285218628888, 1.0748586242545457]]),
                   np.array([[8.205853452117799], [3.6939846226058703]]))
    np.testing.assert_array_equal(solve_swap(e, scale=1.0), [[0, 1], [0, 1]])  # rint: [[0, 1], [0, 0]]
