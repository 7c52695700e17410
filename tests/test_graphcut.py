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

