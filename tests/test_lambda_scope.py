"""lambda_scope: one set of ratios per batch ("batch", the default) or per sample ("sample").

The paper's analysis (Shen et al., Eq. 7-9, Prop. III.2: "a single lambda ... used on all sample
pairs in the batch") and every original (mixup, manifold mixup, CutMix's one box, FMix's one mask
per batch) draw once per batch. Checked here for the DALI operator (CPU backend, real pipelines),
multimix_batch and ManifoldMultiMix: with "batch" every row has the same ratios, boxes and masks,
fresh each iteration, and the ratios are sorted Beta(alpha, alpha) draws; with "sample" rows
differ, and the draws are exactly those of before the scope existed; overrides replace what either
scope draws; the batch draw is reproducible across num_threads, partial batches and checkpoints.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def
from scipy import stats
from torch import nn

import dali_multimix
from conftest import beta_pit, given_parameters, overrides_for, run_multimix
from dali_multimix import sampling
from dali_multimix.torch import ManifoldMultiMix, multimix_batch
from reference import multimix_reference

SCOPES = ("batch", "sample")
MODES = ("mixup", "cutmix", "fmix")


def constant_images(batch: int, h: int = 24, w: int = 40, c: int = 3) -> np.ndarray:
    """Image i is filled with 5*i + 1: every pixel tells which sample it came from."""
    return np.stack([np.full((h, w, c), 5 * i + 1, np.uint8) for i in range(batch)])


def partner_masks(images: np.ndarray, mixed: np.ndarray, partners: np.ndarray) -> dict:
    """{row: (K, H, W) bool, where the row took the partner's pixels}, for rows whose partner is
    another sample (a row paired with itself shows no mask)."""
    return {i: (mixed[i] == images[p, 0, 0, 0]).all(-1)
            for i, p in enumerate(partners) if p != i}


def assert_sorted_beta_sets(lam: np.ndarray, alpha: float) -> None:
    """Rows of `lam` (n, K) are K sorted i.i.d. Beta(alpha, alpha) draws: non-decreasing, the j-th
    is the Beta order statistic (under the CDF, Beta(j + 1, K - j)), and pooled they are
    Beta(alpha, alpha)."""
    k = lam.shape[1]
    assert (np.diff(lam, axis=1) >= 0).all(), "the K ratios must be sorted"
    u = beta_pit(lam, alpha)
    for j in range(k):
        p = stats.kstest(u[:, j], stats.beta(j + 1, k - j).cdf).pvalue
        assert p > 1e-3, f"ratio {j} is not the Beta order statistic (KS p={p:.2g})"
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3


def test_the_check_has_power():
    """assert_sorted_beta_sets rejects the mistakes it guards against, at the sizes used below:
    a wrong alpha, and unsorted (or per-position unsorted) draws."""
    rng = np.random.default_rng(0)
    n, k, alpha = 400, 5, 0.4
    good = np.sort(rng.beta(alpha, alpha, (n, k)), axis=1).astype(np.float32)
    assert_sorted_beta_sets(good, alpha)
    wrong_alpha = np.sort(rng.beta(1.0, 1.0, (n, k)), axis=1).astype(np.float32)
    with pytest.raises(AssertionError):
        assert_sorted_beta_sets(wrong_alpha, alpha)
    unsorted = rng.beta(alpha, alpha, (n, k)).astype(np.float32)
    with pytest.raises(AssertionError):
        assert_sorted_beta_sets(unsorted, alpha)


# -------------------------------------------------------------------------------------------
# The DALI operator (CPU backend)

@pytest.mark.parametrize("mode", MODES)
def test_batch_scope_is_the_default_and_shares_everything(mode):
    """Default scope == "batch": every row has the same ratios (weights), the same boxes (cutmix)
    and the same masks (fmix); each iteration draws afresh."""
    batch, k = 8, 4
    images = constant_images(batch)
    labels = [np.array(i) for i in range(batch)]
    default = run_multimix(images, labels, k=k, mode=mode, seed=31, iterations=3)
    explicit = run_multimix(images, labels, k=k, mode=mode, seed=31, iterations=3,
                            lambda_scope="batch")
    for d, e in zip(default, explicit):
        for a, b in zip(d, e):
            np.testing.assert_array_equal(a, b)

    masks_per_iteration = []
    for mixed, weights, _, partners in default:
        np.testing.assert_array_equal(weights, np.broadcast_to(weights[0], weights.shape))
        assert (np.diff(weights[0]) >= 0).all()
        if mode == "mixup":
            continue
        masks = partner_masks(images, mixed, partners)
        assert len(masks) >= 2
        first = next(iter(masks.values()))
        for row, m in masks.items():
            np.testing.assert_array_equal(m, first, err_msg=f"row {row} has another mask")
            np.testing.assert_allclose(weights[row], m.mean(axis=(1, 2)), atol=1e-7)
        masks_per_iteration.append(first)
    w = [r[1][0] for r in default]
    assert not np.array_equal(w[0], w[1]) and not np.array_equal(w[1], w[2])
    if mode != "mixup":
        assert not np.array_equal(masks_per_iteration[0], masks_per_iteration[1])
        assert not np.array_equal(masks_per_iteration[1], masks_per_iteration[2])


@pytest.mark.parametrize("mode", MODES)
def test_sample_scope_draws_per_row(mode):
    batch, k = 8, 4
    images = constant_images(batch)
    [(mixed, weights, _, partners)] = run_multimix(
        images, [np.array(i) for i in range(batch)], k=k, mode=mode, seed=31,
        lambda_scope="sample")
    assert len({tuple(row) for row in weights}) == batch  # every row its own ratios
    if mode != "mixup":
        masks = list(partner_masks(images, mixed, partners).values())
        assert len(masks) >= 2
        assert not all(np.array_equal(m, masks[0]) for m in masks[1:])


# Fingerprints (crc32 of all outputs of two iterations) of the draws per sample as they were
# before lambda_scope existed (recorded with the operator of commit eb5b2d8): "sample" keeps them.
# fmix's was recorded again each time its spectrum's normals changed (the same distribution,
# other draws; tests/test_fmix_noise.py checks it): from one Box-Muller variate per (u1, u2) pair
# to pairs from Marsaglia's polar method (a 224x224 map's normals 36 -> 12.5 us; 0xED1C135C
# before), then to the ziggurat (-5 us; 0x1B17AA9D before).
SAMPLE_SCOPE_FINGERPRINTS = {
    ("mixup", "sorted"): 0x6E8EF3B2,
    ("mixup", "stratified"): 0x426319F0,
    ("cutmix", "sorted"): 0x77C050AF,
    ("fmix", "sorted"): 0xC2442210,
}


@pytest.mark.parametrize("mode, how", sorted(SAMPLE_SCOPE_FINGERPRINTS))
def test_sample_scope_keeps_the_per_sample_streams(mode, how):
    images = np.random.default_rng(0).integers(0, 256, size=(6, 12, 10, 3)).astype(np.uint8)
    labels = [np.array(i, np.int32) for i in range(6)]
    runs = run_multimix(images, labels, k=4, mode=mode, lambda_sampling=how, seed=77,
                        iterations=2, lambda_scope="sample")
    crc = 0
    for outputs in runs:
        for a in outputs:
            crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    assert crc == SAMPLE_SCOPE_FINGERPRINTS[(mode, how)]


def test_batch_draw_keeps_the_pairing():
    """Same seed: the pairing is the same in both scopes (the partner stream is untouched)."""
    images = constant_images(6)
    labels = [np.array(i) for i in range(6)]
    b = run_multimix(images, labels, k=3, seed=8, iterations=3, lambda_scope="batch")
    s = run_multimix(images, labels, k=3, seed=8, iterations=3, lambda_scope="sample")
    for (_, _, _, pb), (_, _, _, ps) in zip(b, s):
        np.testing.assert_array_equal(pb, ps)


@pytest.mark.parametrize("mode", MODES)
def test_batch_draw_uses_a_stream_of_its_own(mode):
    """Same seed: the batch's ratios (mixup), centre (cutmix, 1x1 boxes at a fixed ratio) and
    noise map (fmix, at a fixed ratio) are none of the per-sample ones: no sample's stream is
    reused for the batch."""
    batch, h, w = 6, 64, 64
    images = constant_images(batch, h, w)
    labels = [np.array(i) for i in range(batch)]
    fixed = {"mixup": {}, "cutmix": {"lambdas": [0.000244]}, "fmix": {"lambdas": [0.3]}}[mode]
    roll = {"partners": np.roll(np.arange(batch), 1).astype(np.int32)}  # every row shows its mask
    b = run_multimix(images, labels, k=len(fixed.get("lambdas", [0] * 3)), mode=mode, seed=8,
                     iterations=3, lambda_scope="batch", arg_inputs=roll, **fixed)
    s = run_multimix(images, labels, k=len(fixed.get("lambdas", [0] * 3)), mode=mode, seed=8,
                     iterations=3, lambda_scope="sample", arg_inputs=roll, **fixed)
    for (mb, wb, _, pb), (ms, ws, _, ps) in zip(b, s):
        if mode == "mixup":
            batch_draw, sample_draws = wb[0], list(ws)
        else:
            masks_b = partner_masks(images, mb, pb)
            batch_draw = masks_b[0]
            for m in masks_b.values():
                np.testing.assert_array_equal(m, batch_draw)
            sample_draws = list(partner_masks(images, ms, ps).values())
            if mode == "cutmix":
                assert batch_draw.sum() == 1  # a 1x1 box: the centre itself
        assert len(sample_draws) == batch
        for row, draw in enumerate(sample_draws):
            assert not np.array_equal(batch_draw, draw), f"the batch drew sample {row}'s draw"


def test_batch_ratios_are_independent_of_the_pairing():
    """The batch's ratios and the permutation come from different sub-streams: with 2 samples
    the partner of row 0 and lambda_1 are independent (a shared sub-stream makes them depend)."""
    images = np.zeros((2, 2), np.float32)
    runs = run_multimix(images, [np.array(0)] * 2, layout="", k=1, seed=3, iterations=1500)
    lam = np.array([r[1][0, 0] for r in runs])
    partner = np.array([r[3][0] for r in runs])
    quartile = np.digitize(lam, np.quantile(lam, [0.25, 0.5, 0.75]))
    table = np.zeros((2, 4))
    np.add.at(table, (partner, quartile), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.4, 2.0])
@pytest.mark.parametrize("how", ["sorted", "stratified"])
def test_batch_ratios_follow_sorted_beta(alpha, how):
    """One set per batch, over many iterations: sorted Beta(alpha, alpha) draws (or one per
    stratum); a small batch, so each iteration adds one set."""
    k, iterations = 5, 400
    images = np.zeros((3, 2), np.float32)  # mixup weights are the ratios themselves
    runs = run_multimix(images, [np.array(0)] * 3, layout="", k=k, alpha=alpha, seed=41,
                        lambda_sampling=how, iterations=iterations)
    weights = np.stack([r[1] for r in runs])  # (iterations, batch, k)
    np.testing.assert_array_equal(weights, np.broadcast_to(weights[:, :1], weights.shape))
    lam = weights[:, 0]
    assert len({tuple(row) for row in lam}) == iterations
    if how == "sorted":
        assert_sorted_beta_sets(lam, alpha)
    else:
        assert (np.diff(lam, axis=1) >= 0).all()
        u = beta_pit(lam, alpha)
        for j in range(k):
            pos = u[:, j] * k - j  # uniform within stratum j
            assert (pos > -1e-4).all() and (pos < 1 + 1e-4).all()
            assert stats.kstest(np.clip(pos, 0, 1), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("scope", SCOPES)
def test_cutmix_centre_is_uniform_over_a_non_square_image(scope):
    """A ratio giving 1x1 boxes shows the centre itself: uniform over y in [0, H), x in [0, W)
    (H != W), one centre per batch with "batch", one per row with "sample"."""
    h, w, batch, iterations = 6, 10, 4, 300
    images = constant_images(batch, h, w)
    # partners as a DataNode: each row takes the next sample, so every row shows its box
    runs = run_multimix(images, [np.array(i) for i in range(batch)], k=1, mode="cutmix",
                        lambdas=[0.01], seed=13, iterations=iterations, lambda_scope=scope,
                        arg_inputs={"partners": np.array([1, 2, 3, 0], np.int32)})
    ys, xs, shared = [], [], 0
    for mixed, weights, _, partners in runs:
        centres = []
        for row, m in partner_masks(images, mixed, partners).items():
            [y], [x] = np.nonzero(m[0])  # exactly one pixel
            centres.append((y, x))
        assert len(centres) == batch
        shared += len(set(centres)) == 1
        if scope == "batch":
            centres = centres[:1]
        ys += [c[0] for c in centres]
        xs += [c[1] for c in centres]
    # "sample": 4 rows share a centre with probability 60^-3
    assert shared == (iterations if scope == "batch" else 0)
    n = len(ys)
    assert stats.chisquare(np.bincount(ys, minlength=h), np.full(h, n / h)).pvalue > 1e-3
    assert stats.chisquare(np.bincount(xs, minlength=w), np.full(w, n / w)).pvalue > 1e-3


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("mode", MODES)
def test_overrides_match_the_reference_in_either_scope(photos, scope, mode):
    """Given ratios, partners, centres and scores replace what the scope would draw."""
    batch, k = 5, 4
    images = np.concatenate([photos, 255 - photos[:1]])
    rng = np.random.default_rng(zlib.crc32(f"{scope}-{mode}".encode()))
    lambdas, partners, centers, scores = given_parameters(rng, batch, k, 64, 64)
    args = overrides_for(mode, lambdas, partners, centers, scores)
    [(mixed, weights, _, got_partners)] = run_multimix(
        images, [np.array(i, np.int32) for i in range(batch)], k=k, mode=mode,
        lambda_scope=scope, arg_inputs=args)
    expected, expected_weights = multimix_reference(np, images, lambdas, partners, mode=mode,
                                                    layout="HWC", centers=centers,
                                                    fmix_scores=scores)
    np.testing.assert_array_equal(mixed, expected)
    np.testing.assert_allclose(weights, expected_weights, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got_partners, partners)


def test_batch_fmix_with_given_ratios_thresholds_one_map():
    """"batch" fmix with per-sample ratios: every row's K masks are top sets of the batch's one
    noise map, so any two masks of any two rows are nested (the smaller inside the larger)."""
    batch, k = 6, 3
    images = constant_images(batch, 32, 32)
    lambdas = np.sort(np.random.default_rng(2).random((batch, k)), 1).astype(np.float32)
    [(mixed, weights, _, partners)] = run_multimix(
        images, [np.array(i) for i in range(batch)], k=k, mode="fmix", seed=3,
        arg_inputs={"lambdas": lambdas, "partners": np.roll(np.arange(batch), 1).astype(np.int32)})
    masks = np.concatenate(list(partner_masks(images, mixed, partners).values()))  # (B*K, H, W)
    np.testing.assert_allclose(weights.ravel(), masks.mean(axis=(1, 2)), atol=1e-7)
    order = np.argsort(masks.sum(axis=(1, 2)), kind="stable")
    for a, b in zip(order[:-1], order[1:]):
        assert (masks[a] <= masks[b]).all()
    assert len({m.sum() for m in masks}) > k  # the rows' ratios do differ


def test_batch_cutmix_with_given_ratios_shares_the_centre():
    batch = 5
    images = constant_images(batch, 40, 40)
    lambdas = np.array([[0.01], [0.04], [0.09], [0.16], [0.25]], np.float32)  # sides 4, 8, .., 20
    [(mixed, _, _, partners)] = run_multimix(
        images, [np.array(i) for i in range(batch)], k=1, mode="cutmix", seed=19,
        arg_inputs={"lambdas": lambdas, "partners": np.roll(np.arange(batch), 1).astype(np.int32)})
    centres = set()
    for m in partner_masks(images, mixed, partners).values():
        ys, xs = np.nonzero(m[0])
        # an unclipped box spans [c - s//2, c - s//2 + s): its centre is its top-left + s//2
        if ys.min() > 0 and xs.min() > 0 and ys.max() < 39 and xs.max() < 39:
            centres.add((ys.min() + (ys.max() - ys.min() + 1) // 2,
                         xs.min() + (xs.max() - xs.min() + 1) // 2))
    assert len(centres) == 1


@pytest.mark.parametrize("mode", MODES)
def test_batch_scope_same_seed_same_output_whatever_num_threads(photos, mode):
    images = np.concatenate([photos, 255 - photos, photos[::-1]])  # 12 samples
    labels = [np.array(i) for i in range(12)]
    runs = [run_multimix(images, labels, k=4, mode=mode, num_threads=n, seed=99, iterations=2,
                         lambda_scope="batch") for n in (1, 2, 4)]
    for other in runs[1:]:
        for it in range(2):
            for a, b in zip(runs[0][it], other[it]):
                np.testing.assert_array_equal(a, b)
    different_seed = run_multimix(images, labels, k=4, mode=mode, seed=100, lambda_scope="batch")
    assert not np.array_equal(different_seed[0][1], runs[0][0][1])


def _variable_batches(sizes, num_threads, seed=5):
    """Runs "batch" fmix on batches of the given sizes (a partial last batch included)."""
    images = constant_images(max(sizes), 16, 16)

    def source(info):
        n = sizes[info.iteration]
        return list(images[:n]), [np.array(i, np.int32) for i in range(n)]

    @pipeline_def(batch_size=max(sizes), num_threads=num_threads, device_id=None, seed=seed,
                  prefetch_queue_depth=1)
    def pipe():
        x, y = fn.external_source(source=source, num_outputs=2, batch=True, batch_info=True,
                                  layout=["HWC", ""])
        return tuple(dali_multimix.multimix(x, y, k=3, mode="fmix", lambda_scope="batch"))

    p = pipe()
    p.build()
    out = []
    for _ in sizes:
        out.append([np.stack([np.array(t[i]) for i in range(len(t))]) for t in p.run()])
    return images, out


def test_batch_scope_on_partial_batches():
    """Batches of 8, 3 and 1 (a partial last batch): each draws one valid sorted set and one mask
    for all its rows, reproducibly whatever num_threads."""
    sizes = [8, 3, 1, 8]
    images, runs = _variable_batches(sizes, num_threads=1)
    _, again = _variable_batches(sizes, num_threads=3)
    for a, b in zip(runs, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    sets = []
    for n, (mixed, weights, _, partners) in zip(sizes, runs):
        assert mixed.shape[0] == n
        np.testing.assert_array_equal(weights, np.broadcast_to(weights[0], weights.shape))
        assert (np.diff(weights[0]) >= 0).all() and (weights >= 0).all() and (weights <= 1).all()
        masks = list(partner_masks(images, mixed, partners).values())
        for m in masks[1:]:
            np.testing.assert_array_equal(m, masks[0])
        sets.append(tuple(weights[0]))
    assert len(set(sets)) == len(sizes)


def test_add_multimix_forwards_the_scope():
    batch = 4
    images = constant_images(batch)

    def run(scope):
        @pipeline_def(batch_size=batch, num_threads=1, device_id=None, seed=9)
        def pipe():
            x = fn.external_source(source=lambda: list(images), batch=True, layout="HWC")
            y = fn.external_source(source=lambda: [np.array(i) for i in range(batch)], batch=True)
            return dali_multimix.add_multimix(x, y, k=3, lambda_scope=scope)
        p = pipe()
        p.build()
        return np.array(p.run()[3].as_tensor())  # weights

    assert len({tuple(r) for r in run("batch")}) == 1
    assert len({tuple(r) for r in run("sample")}) == batch


# -------------------------------------------------------------------------------------------
# multimix_batch (torch)

@pytest.mark.parametrize("mode", MODES)
def test_multimix_batch_batch_scope_shares_everything(mode):
    batch, k = 8, 4
    x = torch.from_numpy(constant_images(batch))
    y = torch.arange(batch)
    g = torch.Generator().manual_seed(5)
    per_call = []
    for _ in range(3):
        r = multimix_batch(x, y, k=k, mode=mode, layout="HWC", generator=g)  # default scope
        assert torch.equal(r.weights, r.weights[:1].expand_as(r.weights))
        assert (r.weights[0].diff() >= 0).all()
        if mode != "mixup":
            masks = partner_masks(x.numpy(), r.images.numpy(), r.partners.numpy())
            first = next(iter(masks.values()))
            for m in masks.values():
                np.testing.assert_array_equal(m, first)
            per_call.append(first)
        else:
            per_call.append(r.weights[0].numpy())
    assert not np.array_equal(per_call[0], per_call[1])
    assert not np.array_equal(per_call[1], per_call[2])


@pytest.mark.parametrize("mode", MODES)
def test_multimix_batch_sample_scope_draws_per_row(mode):
    batch = 8
    x = torch.from_numpy(constant_images(batch))
    r = multimix_batch(x, torch.arange(batch), k=4, mode=mode, layout="HWC",
                       lambda_scope="sample", generator=torch.Generator().manual_seed(5))
    assert len({tuple(row.tolist()) for row in r.weights}) == batch
    if mode != "mixup":
        masks = list(partner_masks(x.numpy(), r.images.numpy(), r.partners.numpy()).values())
        assert not all(np.array_equal(m, masks[0]) for m in masks[1:])


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("mode", MODES)
def test_multimix_batch_draws_what_sampling_draws(photos, scope, mode):
    """The random path equals the overrides path fed sampling's draws (same generator, same
    order: ratios, partners, then centres or noise), in either scope; the batch fmix shortcut
    (one mask set for all rows) included."""
    x = torch.from_numpy(np.concatenate([photos, 255 - photos]))
    batch, k, h, w = 8, 3, 64, 64
    got = multimix_batch(x, torch.arange(batch), k=k, mode=mode, layout="HWC", lambda_scope=scope,
                         generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    overrides = {"lambdas": sampling.sample_lambdas(batch, k, 1.0, lambda_scope=scope, generator=g),
                 "partners": sampling.sample_partners(batch, generator=g)}
    if mode == "cutmix":
        overrides["centers"] = sampling.sample_centers(batch, h, w, lambda_scope=scope, generator=g)
    if mode == "fmix":
        overrides["fmix_scores"] = sampling.fmix_scores(batch, h, w, lambda_scope=scope, generator=g)
    want = multimix_batch(x, torch.arange(batch), k=k, mode=mode, layout="HWC", **overrides)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    expected, expected_weights = multimix_reference(
        np, x.numpy(), overrides["lambdas"].numpy(), overrides["partners"].numpy(), mode=mode,
        layout="HWC", centers=overrides.get("centers"),
        fmix_scores=None if mode != "fmix" else overrides["fmix_scores"].numpy())
    np.testing.assert_array_equal(got.images.numpy(), expected)
    np.testing.assert_allclose(got.weights.numpy(), expected_weights, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["cutmix", "fmix"])
def test_multimix_batch_batch_scope_with_given_ratios(mode):
    """Per-row ratios under "batch": the rows still share the batch's centre / noise map."""
    batch, h, w = 6, 32, 32
    x = torch.from_numpy(constant_images(batch, h, w))
    lam = torch.tensor([[0.01], [0.04], [0.09], [0.16], [0.25], [0.36]])
    r = multimix_batch(x, torch.arange(batch), k=1, mode=mode, layout="HWC", lambdas=lam,
                       partners=torch.roll(torch.arange(batch), 1),
                       generator=torch.Generator().manual_seed(8))
    masks = [m[0] for m in partner_masks(x.numpy(), r.images.numpy(), r.partners.numpy()).values()]
    assert len({int(m.sum()) for m in masks}) == batch  # different ratios
    for small, large in zip(masks[:-1], masks[1:]):  # growing ratios: nested masks
        assert (small <= large).all()


@pytest.mark.parametrize("alpha", [0.4, 2.0])
def test_multimix_batch_ratios_follow_sorted_beta(alpha):
    g = torch.Generator().manual_seed(12)
    x = torch.zeros(3, 2)
    lam = []
    for _ in range(400):
        r = multimix_batch(x, torch.arange(3), k=5, alpha=alpha, generator=g)
        assert torch.equal(r.weights, r.weights[:1].expand_as(r.weights))
        lam.append(r.weights[0].numpy())
    assert_sorted_beta_sets(np.stack(lam), alpha)


# -------------------------------------------------------------------------------------------
# ManifoldMultiMix

def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def test_manifold_batch_scope_is_the_default():
    model = tiny_model()
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(1))
    seen = []
    with ManifoldMultiMix(model, ["", "1"], k=4, generator=torch.Generator().manual_seed(2)) as mm:
        for _ in range(3):
            out = model(x)
            lam = mm.last.lambdas
            assert out.shape == (7 * 4, 3)
            assert torch.equal(lam, lam[:1].expand_as(lam))
            assert (lam[0].diff() >= 0).all()
            seen.append(lam[0].clone())
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_manifold_input_mix_at_batch_ratios():
    """Mixing the input with one set of ratios: row b*K + k of the output is the model applied to
    (1 - lambda_k) x_b + lambda_k x_partner(b), with the same lambda_k for every b."""
    model = tiny_model()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    with ManifoldMultiMix(model, [""], k=3, generator=torch.Generator().manual_seed(4)) as mm:
        out = model(x)
        lam, partners = mm.last.lambdas, mm.last.partners
    assert torch.equal(lam, lam[:1].expand_as(lam))
    mixed = torch.stack([(1 - lam[0, j]) * x + lam[0, j] * x[partners] for j in range(3)], 1)
    torch.testing.assert_close(out, model(mixed.reshape(15, 4)), rtol=1e-6, atol=1e-6)


def test_manifold_sample_scope_draws_per_row():
    model = tiny_model()
    with ManifoldMultiMix(model, ["1"], k=4, lambda_scope="sample",
                          generator=torch.Generator().manual_seed(2)) as mm:
        model(torch.randn(7, 4))
        lam = mm.last.lambdas
    assert len({tuple(row.tolist()) for row in lam}) == 7
    assert (lam.diff(dim=1) >= 0).all()


def test_manifold_batch_ratios_follow_sorted_beta():
    model = tiny_model()
    x = torch.randn(3, 4)
    lam = []
    with ManifoldMultiMix(model, ["1"], k=5, alpha=2.0,
                          generator=torch.Generator().manual_seed(6)) as mm:
        with torch.no_grad():
            for _ in range(400):
                model(x)
                assert torch.equal(mm.last.lambdas, mm.last.lambdas[:1].expand(3, 5))
                lam.append(mm.last.lambdas[0].numpy())
    assert_sorted_beta_sets(np.stack(lam), 2.0)


# -------------------------------------------------------------------------------------------
# Errors

# (the wrapper's and the operator's own checks: test_errors.py; multimix_batch's: test_torch_mixing.py)

def test_bad_scope_in_multimix_batch_and_manifold():
    with pytest.raises(ValueError, match=r"multimix_batch: `lambda_scope`: expected one of "
                                         r"\('batch', 'sample'\); got 'all'"):
        multimix_batch(torch.zeros(2, 3), torch.arange(2), lambda_scope="all")
    with pytest.raises(ValueError, match=r"multimix_batch: `lambda_scope`"):  # overrides too
        multimix_batch(torch.zeros(2, 3), torch.arange(2), k=1, lambdas=[[0.5], [0.5]],
                       partners=[1, 0], lambda_scope=None)
    with pytest.raises(ValueError, match=r"ManifoldMultiMix: `lambda_scope` must be one of "
                                         r"\('batch', 'sample'\); got 'row'"):
        ManifoldMultiMix(tiny_model(), ["1"], lambda_scope="row")
