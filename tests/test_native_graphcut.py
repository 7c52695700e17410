"""The native batched graph cuts (csrc/graphcut_*, graphcut.solve_batch / solve_steps): the exact
optimum, as brute force and as the PyMaxflow path (solve_exact), for every graph of a batch; the
nested cuts of solve_steps give the labels of the graph-by-graph cuts; bad input is refused in
Python before the native call; PuzzleMix wires it as "native" and "exact".
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dali_multimix.torch.graphcut import (GridEnergy, native_available, solve_batch, solve_exact,
                                          solve_native, solve_steps)

pytestmark = pytest.mark.skipif(not native_available(), reason="libmultimix_graphcut.so not built")


def random_batch(rng, graphs, n, labels, scale, m=None):
    m = n if m is None else m
    unary = rng.normal(size=(graphs, n, m, labels))
    # some zero weights: those arcs are left out, as in solve_exact
    cost_v = scale * rng.random((graphs, n - 1, m)) * (rng.random((graphs, n - 1, m)) > 0.1)
    cost_h = scale * rng.random((graphs, n, m - 1)) * (rng.random((graphs, n, m - 1)) > 0.1)
    return unary, cost_v, cost_h


def energies(unary, cost_v, cost_h, labels):
    return np.array([GridEnergy(unary[i], cost_v[i], cost_h[i]).energy(labels[i])
                     for i in range(len(unary))])


@pytest.mark.parametrize("n, labels", [(2, 2), (2, 3), (3, 2), (3, 3), (2, 4)])
def test_native_equals_brute_force(n, labels):
    rng = np.random.default_rng(100 * n + labels)
    for scale in (0.1, 1.0, 3.0):
        unary, cost_v, cost_h = random_batch(rng, 6, n, labels, scale)
        got = solve_batch(unary, cost_v, cost_h, backend="native", threads=2)
        assert got.shape == (6, n, n) and got.dtype == np.int64
        assert got.min() >= 0 and got.max() < labels
        for i in range(6):
            e = GridEnergy(unary[i], cost_v[i], cost_h[i])
            best = min(e.energy(np.array(l).reshape(n, n))
                       for l in itertools.product(range(labels), repeat=n * n))
            assert e.energy(got[i]) == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("labels", [2, 3, 4, 5, 7])
@pytest.mark.parametrize("n", [4, 8, 16])
def test_native_equals_pymaxflow(n, labels):
    """Same energies (and, with continuous random costs, the same labels: the same canonical cut).
    2 to 5 labels run the library's code compiled for that bit count, 7 its run-time bit count."""
    rng = np.random.default_rng(10 * n + labels)
    for scale in (0.05, 1.0, 4.0):
        unary, cost_v, cost_h = random_batch(rng, 8, n, labels, scale)
        native = solve_batch(unary, cost_v, cost_h, backend="native")
        reference = solve_batch(unary, cost_v, cost_h, backend="maxflow")
        np.testing.assert_allclose(energies(unary, cost_v, cost_h, native),
                                   energies(unary, cost_v, cost_h, reference), rtol=0, atol=1e-9)
        np.testing.assert_array_equal(native, reference)


def test_rectangular_grids_threads_and_single_graphs():
    rng = np.random.default_rng(3)
    unary, cost_v, cost_h = random_batch(rng, 20, 5, 3, 1.0, m=7)
    one = solve_batch(unary, cost_v, cost_h, backend="native", threads=1)
    for threads in (0, 2, 7, 64):  # 0: one per CPU; more threads than graphs is fine
        np.testing.assert_array_equal(solve_batch(unary, cost_v, cost_h, backend="native",
                                                  threads=threads), one)
    np.testing.assert_array_equal(one[4], solve_exact(GridEnergy(unary[4], cost_v[4], cost_h[4])))
    np.testing.assert_array_equal(one[4], solve_native(GridEnergy(unary[4], cost_v[4], cost_h[4])))
    # 1 x 1 and 1 x m grids (no vertical edges), and an empty batch
    u1 = rng.normal(size=(3, 1, 1, 4))
    np.testing.assert_array_equal(solve_batch(u1, np.zeros((3, 0, 1)), np.zeros((3, 1, 0)))[:, 0, 0],
                                  u1[:, 0, 0].argmin(1))
    row = rng.normal(size=(2, 1, 6, 3))
    ch = rng.random((2, 1, 5))
    got = solve_batch(row, np.zeros((2, 0, 6)), ch)
    ref = solve_batch(row, np.zeros((2, 0, 6)), ch, backend="maxflow")
    np.testing.assert_array_equal(got, ref)
    assert solve_batch(np.zeros((0, 4, 4, 3)), np.zeros((0, 3, 4)), np.zeros((0, 4, 3))).shape == (0, 4, 4)


def test_strong_and_no_smoothness():
    rng = np.random.default_rng(1)
    unary = rng.normal(size=(2, 6, 6, 3))
    free = solve_batch(unary, np.zeros((2, 5, 6)), np.zeros((2, 6, 5)), backend="native")
    np.testing.assert_array_equal(free, unary.argmin(-1))
    stiff = solve_batch(unary, np.full((2, 5, 6), 1e4), np.full((2, 6, 5), 1e4), backend="native")
    assert all(len(np.unique(s)) == 1 for s in stiff)


def test_bad_input_is_refused_before_the_native_call():
    u, v, h = np.zeros((2, 3, 3, 3)), np.zeros((2, 2, 3)), np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match=r"`unary` must be \(G, n, m, L\) with n, m >= 1 and L >= 2; got \(3, 3, 3\)"):
        solve_batch(u[0], v, h)
    with pytest.raises(ValueError, match=r"L >= 2; got \(2, 3, 3, 1\)"):
        solve_batch(u[..., :1], v, h)
    with pytest.raises(ValueError, match=r"`cost_v` must be \(2, 2, 3\) and `cost_h` \(2, 3, 2\); got \(2, 3, 3\)"):
        solve_batch(u, np.zeros((2, 3, 3)), h)
    with pytest.raises(ValueError, match=r"must be finite"):
        solve_batch(np.full_like(u, np.nan), v, h)
    with pytest.raises(ValueError, match=r"must be finite"):
        solve_batch(u, v, np.full_like(h, np.inf))
    with pytest.raises(ValueError, match=r"weights `cost_v`, `cost_h` must be >= 0"):
        solve_batch(u, -np.ones_like(v), h)
    with pytest.raises(ValueError, match=r"L <= 256"):
        solve_batch(np.zeros((1, 1, 1, 300)), np.zeros((1, 0, 1)), np.zeros((1, 1, 0)))
    with pytest.raises(TypeError, match=r"`cost_h` must be an array of numbers; got str"):
        solve_batch(u, v, "abc")
    with pytest.raises(ValueError, match=r"`backend` must be 'auto', 'native' or 'maxflow'; got 'gpu'"):
        solve_batch(u, v, h, backend="gpu")
    with pytest.raises(ValueError, match=r"`threads` must be an integer >= 0"):
        solve_batch(u, v, h, threads=-1)
    # non-contiguous and float32 input is copied, not misread
    big = np.random.default_rng(0).normal(size=(2, 3, 3, 6))
    np.testing.assert_array_equal(solve_batch(big[..., ::2], v + 0.5, h + 0.5),
                                  solve_batch(np.ascontiguousarray(big[..., ::2]), v + 0.5, h + 0.5,
                                              backend="maxflow"))
    np.testing.assert_array_equal(solve_batch(big[..., :3].astype(np.float32), v, h),
                                  big[..., :3].astype(np.float32).argmin(-1))


def step_priors(lams, labels, eta=0.3):
    """Puzzle Mix's prior of each label for each lambda: eta * -log(Binomial(L-1, lam).pmf + 1e-8),
    (..., L); ascending lambdas make every bit cheaper (ordered steps)."""
    from math import comb
    l = np.arange(labels)
    coef = np.array([comb(labels - 1, int(i)) for i in l])
    pmf = coef * lams[..., None] ** l * (1 - lams[..., None]) ** (labels - 1 - l)
    return eta * -np.log(pmf + 1e-8)


def steps_case(rng, case, groups, k, n, labels, m=None):
    """(unary (G, K, n, m, L), cost_v, cost_h) of K steps sharing their weights; case: 'ascending'
    / 'descending' lambdas, 'equal' steps, 'unordered' (independent unaries), 'mixed' (ascending,
    then a step back, then ascending again), 'ties' (small integers: exact arithmetic, many equal
    cuts), 'edges' (lambdas of 0 and 1 among them: priors of -log(1e-8))."""
    m = n if m is None else m
    if case == "ties":
        base = rng.integers(0, 4, size=(groups, 1, n, m, labels)).astype(np.float64)
        shift = np.sort(rng.integers(0, 3, size=(groups, k, 1, 1, 1)), 1) * np.arange(labels)[::-1]
        unary = base + shift  # larger shifts favour high labels less: ordered steps
        cost_v = rng.integers(0, 3, size=(groups, n - 1, m)).astype(np.float64)
        cost_h = rng.integers(0, 3, size=(groups, n, m - 1)).astype(np.float64)
        return unary, cost_v, cost_h
    base = rng.normal(size=(groups, 1, n, m, labels))
    lams = np.sort(rng.random((groups, k)), 1)
    if case == "descending":
        lams = lams[:, ::-1]
    elif case == "equal":
        lams = np.repeat(lams[:, :1], k, 1)
    elif case == "mixed":
        lams = np.concatenate([lams[:, : k // 2 + 1], np.sort(rng.random((groups, k - k // 2 - 1)), 1)], 1)
    elif case == "edges":
        lams[:, 0], lams[:, -1] = 0.0, 1.0
    unary = base + step_priors(lams, labels)[:, :, None, None, :]
    if case == "unordered":
        unary = rng.normal(size=(groups, k, n, m, labels))
    scale = rng.choice([0.05, 0.5, 2.0])
    cost_v = scale * rng.random((groups, n - 1, m)) * (rng.random((groups, n - 1, m)) > 0.1)
    cost_h = scale * rng.random((groups, n, m - 1)) * (rng.random((groups, n, m - 1)) > 0.1)
    return unary, cost_v, cost_h


def graph_by_graph(unary, cost_v, cost_h):
    """solve_steps' labels (G, K, n, m) from native cuts of every (group, step) on its own."""
    g, k, n, m, labels = unary.shape
    return solve_batch(unary.reshape(g * k, n, m, labels), np.repeat(cost_v, k, 0),
                       np.repeat(cost_h, k, 0), backend="native").reshape(g, k, n, m)


@pytest.mark.parametrize("case", ["ascending", "descending", "equal", "unordered", "mixed", "ties",
                                  "edges"])
@pytest.mark.parametrize("n, labels, k", [(2, 2, 3), (3, 3, 5), (4, 3, 5), (8, 3, 5), (16, 3, 5),
                                          (8, 2, 8), (8, 4, 4), (16, 3, 1), (6, 5, 5), (6, 7, 4)])
def test_nested_steps_give_the_labels_of_graph_by_graph_cuts(case, n, labels, k):
    rng = np.random.default_rng([n, labels, k, len(case)])
    unary, cost_v, cost_h = steps_case(rng, case, 12, k, n, labels)
    got = solve_steps(unary, cost_v, cost_h, backend="native", threads=2)
    assert got.shape == (12, k, n, n) and got.dtype == np.int64
    each = graph_by_graph(unary, cost_v, cost_h)
    if case == "ties" and (labels - 1) ** 2 & ((labels - 1) ** 2 - 1):
        # weights / (L-1)^2 rounds where that is no power of two (/ 9, / 36): tied cuts may part
        # by a rounding (PyMaxflow's too), so only the energies are equal
        flat = unary.reshape(-1, n, n, labels), np.repeat(cost_v, k, 0), np.repeat(cost_h, k, 0)
        np.testing.assert_allclose(energies(*flat, got.reshape(-1, n, n)),
                                   energies(*flat, each.reshape(-1, n, n)), rtol=0, atol=1e-9)
        return
    np.testing.assert_array_equal(got, each)
    if n <= 8:  # and those of PyMaxflow, graph by graph
        np.testing.assert_array_equal(got, solve_steps(unary, cost_v, cost_h, backend="maxflow"))
    if case in ("ascending", "ties"):  # what the nesting rests on: labels only grow along K
        assert (np.diff(got, axis=1) >= 0).all()


def test_nested_steps_are_optimal_by_brute_force():
    rng = np.random.default_rng(5)
    for case in ("ascending", "ties", "mixed"):
        unary, cost_v, cost_h = steps_case(rng, case, 4, 4, 3, 3)
        got = solve_steps(unary, cost_v, cost_h, backend="native")
        for g in range(4):
            for k in range(4):
                e = GridEnergy(unary[g, k], cost_v[g], cost_h[g])
                best = min(e.energy(np.array(l).reshape(3, 3))
                           for l in itertools.product(range(3), repeat=9))
                assert e.energy(got[g, k]) == pytest.approx(best, abs=1e-9)


def test_steps_rectangular_threads_and_bad_input():
    rng = np.random.default_rng(8)
    unary, cost_v, cost_h = steps_case(rng, "ascending", 9, 5, 5, 3, m=7)
    one = solve_steps(unary, cost_v, cost_h, backend="native", threads=1)
    for threads in (0, 3, 64):
        np.testing.assert_array_equal(solve_steps(unary, cost_v, cost_h, threads=threads), one)
    np.testing.assert_array_equal(one, solve_steps(unary, cost_v, cost_h, backend="maxflow"))
    empty = solve_steps(np.zeros((0, 5, 4, 4, 3)), np.zeros((0, 3, 4)), np.zeros((0, 4, 3)))
    assert empty.shape == (0, 5, 4, 4)
    with pytest.raises(ValueError, match=r"solve_steps: `unary` must be \(G, K, n, m, L\) with K, n, "
                                         r"m >= 1 and L >= 2; got \(5, 5, 7, 3\)"):
        solve_steps(unary[0], cost_v, cost_h)
    with pytest.raises(ValueError, match=r"solve_steps: `cost_v` must be \(9, 4, 7\) and `cost_h` "
                                         r"\(9, 5, 6\)"):
        solve_steps(unary, np.repeat(cost_v, 5, 0), cost_h)
    with pytest.raises(ValueError, match=r"K <= 4096"):
        solve_steps(np.zeros((1, 4097, 1, 1, 2)), np.zeros((1, 0, 1)), np.zeros((1, 1, 0)))
    with pytest.raises(ValueError, match=r"solve_steps: `unary`, `cost_v` and `cost_h` must be finite"):
        solve_steps(np.full_like(unary, np.nan), cost_v, cost_h)
    with pytest.raises(ValueError, match=r"solve_steps: pairwise weights"):
        solve_steps(unary, -cost_v, cost_h)
    with pytest.raises(ValueError, match=r"solve_steps: `backend` must be"):
        solve_steps(unary, cost_v, cost_h, backend="gpu")
    with pytest.raises(TypeError, match=r"solve_steps: `unary` must be an array of numbers; got str"):
        solve_steps("abc", cost_v, cost_h)


def test_puzzlemix_native_exact_and_maxflow_masks_agree():
    from dali_multimix.torch.puzzle import PuzzleMix, puzzle_energies

    mean, std = [129.3, 124.1, 112.4], [68.2, 65.4, 70.4]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 32, 32, generator=g)
    saliency = torch.rand(6, 32, 32, generator=g)
    partners = torch.randperm(6, generator=g)
    lam = torch.sort(torch.rand(6, 3, generator=g), 1).values
    masks = {}
    for solver in ("exact", "native", "maxflow"):
        pm = PuzzleMix(3, solver=solver, mean=mean, std=std)
        for block_num in (4, 16):
            masks[solver, block_num] = pm.masks(saliency, pm.pixels(x), partners, lam, block_num)
    for block_num in (4, 16):
        assert torch.equal(masks["native", block_num], masks["maxflow", block_num])
        assert torch.equal(masks["exact", block_num], masks["native", block_num])
    # the energies given to the native solver are those of puzzle_energies, so its masks are optimal
    pm = PuzzleMix(3, solver="native", mean=mean, std=std)
    rows = puzzle_energies(saliency, pm.pixels(x), partners, lam, 16)
    labels = (2 * (1 - masks["native", 16])).round().long().numpy()
    for i, row in enumerate(rows):
        for k, e in enumerate(row):
            assert e.energy(labels[i, k]) == pytest.approx(e.energy(solve_exact(e)), abs=1e-12)


def test_stream_limit_reads_everything_and_writes_data_not_zeros():
    """The benchmarks' memory limit (mm_stream_read_write): it must write every output byte, and
    never zeros (the machine of the CPU tables writes zeros 2.2x faster than data, so a limit
    writing zeros is no limit for an operator writing images), whatever the input."""
    from dali_multimix.torch.graphcut import native_library

    lib = native_library()
    for src in (np.zeros(4096 + 3, np.uint8), np.ones(1000, np.uint8),
                np.random.default_rng(0).integers(0, 256, 777, dtype=np.uint8)):
        for size, offset in ((64 * 1024 + 5, 0), (100, 1), (4096, 3)):
            dst = np.zeros(size + offset, np.uint8)
            for threads in (1, 2, 3):
                dst[:] = 0
                lib.mm_stream_read_write(src.ctypes.data, src.size, dst[offset:].ctypes.data, size,
                                         threads)
                assert (dst[offset:] != 0).all() and (dst[:offset] == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_nested_steps_on_puzzle_mix_energies(seed):
    """PuzzleMix's own energies (the saliency, border and prior terms of the authors' code) for K
    sorted lambdas, one set per sample or per batch, 0 and 1 among them: the nested cuts give the
    labels of graph-by-graph cuts at every block count."""
    from dali_multimix.torch.puzzle import PuzzleMix, puzzle_energy_arrays

    g = torch.Generator().manual_seed(seed)
    k = (2, 5, 8)[seed % 3]
    x = torch.randn(24, 3, 32, 32, generator=g)
    saliency = torch.rand(24, 32, 32, generator=g) ** 3
    partners = torch.randperm(24, generator=g)
    lam = torch.sort(torch.rand(24, k, generator=g), 1).values
    if seed % 2:
        lam = lam[:1].repeat(24, 1)  # lambda_scope "batch"
    if seed >= 3:
        lam[:, 0], lam[:, -1] = 0.0, 1.0
    pm = PuzzleMix(k, mean=[129.3, 124.1, 112.4], std=[68.2, 65.4, 70.4])
    for block_num in (2, 4, 8, 16):
        unary, w_v, w_h = puzzle_energy_arrays(saliency, pm.pixels(x), partners, lam, block_num)
        nested = solve_steps(unary, w_v, w_h, backend="native")
        each = graph_by_graph(unary, w_v, w_h)
        np.testing.assert_array_equal(nested, each)
        assert (np.diff(nested, axis=1) >= 0).all()  # ascending lambdas: masks only lose own pixels
