"""Puzzle Mix's energies in the native library (csrc/puzzle_energy.h, puzzle.puzzle_masks_native):
the same float64 numbers as the torch code (puzzle_energy_arrays) bit for bit, for every image
size, channel count, block count and neighbourhood the energies take; the masks of one native
call are the cuts of those energies; PuzzleMix.masks takes that path for float32 CPU inputs and
falls back to the torch energies otherwise; bad input is refused with the sample that caused it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from math import comb

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dali_multimix.torch.graphcut import native_available, native_library, solve_steps
from dali_multimix.torch.puzzle import (PuzzleMix, _sum_to_one, _sum_to_one_in_place, label_prior,
                                        native_energies_apply, own_weights, puzzle_energy_arrays,
                                        puzzle_energy_arrays_native, puzzle_masks_native)

pytestmark = pytest.mark.skipif(not native_available(), reason="libmultimix_graphcut.so not built")


def puzzle_inputs(seed, batch, channels, side, k, spread=1.0):
    """Seeded saliency (B, H, H), [0, 1] pixels (B, C, H, H), partners, sorted lambdas (B, K)."""
    rng = np.random.default_rng(seed)
    saliency = rng.random((batch, side, side), dtype=np.float32) * np.float32(spread)
    pixels = rng.random((batch, channels, side, side), dtype=np.float32)
    partners = rng.permutation(batch)
    lambdas = np.sort(rng.random((batch, k)), 1)
    return (torch.from_numpy(saliency), torch.from_numpy(pixels), torch.from_numpy(partners),
            torch.from_numpy(lambdas))


# (side, channels, block_num, neigh_size, batch, K): CIFAR's 32 px at every block count; gray and
# RGBA; neighbourhoods of 1, 2 and 8 pixels; 28 px (7 and 14 blocks); ImageNet's 224 px with the
# authors' neigh_size 2; a batch of 100 at 16 blocks (the benchmark's)
SHAPES = [(32, 3, 2, 4, 7, 3), (32, 3, 4, 4, 9, 5), (32, 3, 8, 4, 5, 1), (32, 3, 16, 4, 100, 5),
          (32, 1, 4, 4, 6, 2), (32, 2, 8, 4, 4, 3), (32, 4, 4, 4, 5, 4), (32, 3, 4, 2, 6, 3),
          (32, 3, 4, 8, 6, 3), (32, 3, 32, 4, 3, 2), (28, 1, 7, 4, 8, 3), (28, 3, 14, 4, 5, 5),
          (224, 3, 16, 2, 3, 5), (96, 3, 6, 4, 4, 2)]


@pytest.mark.parametrize("side, channels, block_num, neigh_size, batch, k", SHAPES)
def test_native_energies_are_the_torch_energies_bit_for_bit(side, channels, block_num, neigh_size,
                                                            batch, k):
    for seed, spread in ((side + channels + block_num, 1.0), (block_num * 7 + k, 1e-3)):
        args = puzzle_inputs(seed, batch, channels, side, k, spread)
        kw = dict(neigh_size=neigh_size)
        want = puzzle_energy_arrays(*args, block_num, **kw)
        got = puzzle_energy_arrays_native(*args, block_num, threads=2, **kw)
        for name, a, b in zip(("unary", "cost_v", "cost_h"), want, got):
            assert b.shape == a.shape and b.dtype == np.float64, name
            np.testing.assert_array_equal(b, a, err_msg=name)


@pytest.mark.parametrize("n_labels, beta, gamma, eta", [(2, 1.2, 0.5, 0.2), (4, 0.8, 1.0, 0.5),
                                                        (5, 2.0, 0.0, 0.1)])
def test_native_energies_follow_every_parameter(n_labels, beta, gamma, eta):
    args = puzzle_inputs(n_labels, 6, 3, 32, 3)
    kw = dict(n_labels=n_labels, beta=beta, gamma=gamma, eta=eta)
    for a, b in zip(puzzle_energy_arrays(*args, 4, **kw), puzzle_energy_arrays_native(*args, 4, **kw)):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("block_num, n_labels", [(2, 3), (4, 3), (8, 3), (16, 3), (4, 5)])
def test_native_masks_are_the_cuts_of_those_energies(block_num, n_labels):
    args = puzzle_inputs(block_num, 24, 3, 32, 5)
    want = solve_steps(*puzzle_energy_arrays(*args, block_num, n_labels=n_labels), backend="native")
    got = puzzle_masks_native(*args, block_num, n_labels=n_labels, threads=2)
    assert got.shape == (24, 5, block_num, block_num) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    # and of the PyMaxflow path, graph by graph (a smaller batch: it is slow)
    few = [a[:4] for a in args[:2]] + [torch.arange(4).roll(1), args[3][:4]]
    np.testing.assert_array_equal(
        puzzle_masks_native(*few, block_num, n_labels=n_labels),
        solve_steps(*puzzle_energy_arrays(*few, block_num, n_labels=n_labels), backend="maxflow"))


@pytest.mark.parametrize("n_labels", [2, 3, 4, 7, 16])
def test_label_prior_is_the_originals_python_arithmetic(n_labels):
    """The pmf from the library (libm's pow, as Python's **) is the original's Python-float pmf."""
    rng = np.random.default_rng(n_labels)
    lams = np.concatenate((rng.random(4000), rng.random(200) ** 9, 1 - rng.random(200) ** 9,
                           [0.0, 1.0, 0.5, 1e-300, 1 - 2 ** -53]))
    last = n_labels - 1
    pmf = np.array([[comb(last, l) * lam ** l * (1 - lam) ** (last - l) for l in range(n_labels)]
                    for lam in lams.tolist()])
    want = 0.2 * -np.log(pmf + 1e-8) / 8 ** 2
    got = label_prior(torch.from_numpy(lams.reshape(-1, 1)), 8, n_labels, 0.2)
    np.testing.assert_array_equal(got[:, 0], want)


@pytest.mark.parametrize("side, block", [(32, 16), (32, 8), (32, 2), (28, 14), (28, 4), (224, 14),
                                         (30, 5), (36, 4), (35, 2)])
def test_native_saliency_pool_is_torchs_avg_pool(side, block):
    rng = np.random.default_rng(side + block)
    x = rng.random((11, side, side), dtype=np.float32) * np.float32(rng.random())
    out = np.empty((11, side // block, side // block), np.float32)
    assert native_library().mm_avg_pool(x.ctypes.data, 11, side, side, block, block, out.ctypes.data) == 0
    np.testing.assert_array_equal(out, F.avg_pool2d(torch.from_numpy(x)[:, None], block)[:, 0].numpy())
    assert native_library().mm_avg_pool(x.ctypes.data, 11, side, side, side + 1, 1, out.ctypes.data) == -1


def test_sum_to_one_in_place_gives_the_torch_numbers():
    rng = np.random.default_rng(4)
    pooled = rng.random((9, 16, 16), dtype=np.float32) * np.float32(3.7)
    pooled[2] = 0.0  # clamped: 0 / 1e-12
    pooled[5] *= np.float32(1e-15)  # a sum below the clamp
    want = _sum_to_one(torch.from_numpy(pooled.copy())).numpy()
    got = _sum_to_one_in_place(pooled)
    assert got is pooled
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_masks_take_the_native_energies_for_float32_cpu_inputs_only():
    saliency, pixels, partners, lambdas = puzzle_inputs(3, 10, 3, 32, 3)
    assert native_energies_apply(saliency, pixels)
    assert not native_energies_apply(saliency.double(), pixels)
    assert not native_energies_apply(saliency, pixels.double())
    five = torch.cat((pixels, pixels[:, :2]), 1)
    assert not native_energies_apply(saliency, five)
    pm = PuzzleMix(3, solver="native", mean=[128.0] * 3, std=[64.0] * 3)
    want = solve_steps(*puzzle_energy_arrays(saliency, pixels, partners, lambdas, 8), backend="native")
    got = pm.masks(saliency, pixels, partners, lambdas, 8)
    np.testing.assert_array_equal(got.numpy(), 1.0 - want / 2.0)
    # five channels: the torch energies, the native cuts (the same as the maxflow path's)
    got5 = pm.masks(saliency, five, partners, lambdas, 8)
    want5 = solve_steps(*puzzle_energy_arrays(saliency, five, partners, lambdas, 8), backend="maxflow")
    np.testing.assert_array_equal(got5.numpy(), 1.0 - want5 / 2.0)
    with pytest.raises(ValueError, match="1 to 4 channels"):
        puzzle_masks_native(saliency, five, partners, lambdas, 8)


@pytest.mark.parametrize("n_labels", [2, 3, 4, 5, 7])
def test_native_masks_are_own_weights_of_the_native_labels(n_labels):
    """PuzzleMix.masks takes the weights that the library writes next to its labels: own_weights'
    float32 numbers (1 - l / (n_labels - 1)) bit for bit, for every label count."""
    saliency, pixels, partners, lambdas = puzzle_inputs(11 + n_labels, 12, 3, 32, 4)
    pm = PuzzleMix(4, n_labels=n_labels, solver="native", mean=[128.0] * 3, std=[64.0] * 3)
    got = pm.masks(saliency, pixels, partners, lambdas, 8)
    labels = puzzle_masks_native(saliency, pixels, partners, lambdas, 8, n_labels=n_labels)
    assert got.dtype == torch.float32 and got.shape == (12, 4, 8, 8)
    assert len(np.unique(labels)) == n_labels  # every label, so every weight, is checked
    np.testing.assert_array_equal(got.numpy().view(np.int32),
                                  own_weights(labels, n_labels).numpy().view(np.int32))


def test_non_finite_inputs_name_the_sample():
    saliency, pixels, partners, lambdas = puzzle_inputs(5, 8, 3, 32, 2)
    bad = pixels.clone()
    bad[5, 1, 7, 3] = float("nan")
    # sample 5's own energies, and its partner's (which pools sample 5's pixels)
    mate = int((partners == 5).nonzero()[0, 0])
    with pytest.raises(ValueError, match=f"sample {min(5, mate)} are not finite"):
        puzzle_masks_native(saliency, bad, partners, lambdas, 4)
    bad_saliency = saliency.clone()
    bad_saliency[2, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="not finite"):
        puzzle_masks_native(bad_saliency, pixels, partners, lambdas, 4)


@pytest.mark.parametrize("change, message", [
    (lambda s, p, q, l: (s, p, q + 100, l), "partners in"),
    (lambda s, p, q, l: (s, p, q[:-1], l), "`partners` \\(B,\\)"),
    (lambda s, p, q, l: (s, p, q, l[:, 0]), "`lambdas` must be \\(B, K\\)"),
    (lambda s, p, q, l: (s[:, :-1], p, q, l), "`saliency` \\(B, H, H\\)"),
    (lambda s, p, q, l: (s[:, :30, :30], p[..., :30, :30], q, l), "divisible by block_num"),
])
def test_bad_inputs_are_refused(change, message):
    args = change(*puzzle_inputs(6, 6, 3, 32, 2))
    with pytest.raises(ValueError, match=message):
        puzzle_masks_native(*args, 4)


TEAM_SCRIPT = """
import hashlib, sys
import numpy as np, torch
from dali_multimix.torch.graphcut import _torch_openmp_parallel, transport_native
from dali_multimix.torch.puzzle import puzzle_masks_native
rng = np.random.default_rng(0)
sal = torch.from_numpy(rng.random((40, 32, 32), dtype=np.float32))
pix = torch.from_numpy(rng.random((40, 3, 32, 32), dtype=np.float32))
lam = torch.from_numpy(np.sort(rng.random((40, 5)), 1))
labels = puzzle_masks_native(sal, pix, torch.from_numpy(rng.permutation(40)), lam, 8, threads=int(sys.argv[1]))
source = transport_native((labels[:, 2] < 2).astype(np.float32), rng.random((40, 8, 8), dtype=np.float32), 0.8,
                          threads=int(sys.argv[1]))
print(_torch_openmp_parallel() is not None, hashlib.sha256(labels.tobytes() + source.tobytes()).hexdigest())
"""


def test_openmp_team_and_own_threads_give_the_same_results(tmp_path):
    """The library's threads run as torch's OpenMP team where torch has one (no new threads beside
    its spinning ones), else as std::threads; a team with fewer members than asked for (the
    runtime's thread limit) still does every item: the same labels and transport every way."""
    script = tmp_path / "team.py"
    script.write_text(TEAM_SCRIPT)
    runs = {}
    for name, env, threads in [("team", {}, "2"), ("team of 1", {"OMP_THREAD_LIMIT": "1"}, "4"),
                               ("std::threads", {"DALI_MULTIMIX_NO_OPENMP_TEAM": "1"}, "3"),
                               ("one thread", {"DALI_MULTIMIX_NO_OPENMP_TEAM": "1"}, "1")]:
        out = subprocess.run([sys.executable, str(script), threads], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=300, check=True).stdout.split()
        runs[name] = out
    if "parallel backend: OpenMP" in torch.__config__.parallel_info() and sys.platform == "linux":
        assert runs["team"][0] == "True" and runs["std::threads"][0] == "False"
    assert len({digest for _, digest in runs.values()}) == 1, runs
