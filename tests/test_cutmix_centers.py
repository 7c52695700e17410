"""The cutmix centre is uniform over the whole image, (y, x) ~ U{0..H-1} x U{0..W-1}, in the DALI
operator and on the torch side. Non-square images (H=7, W=13), so that a centre drawn from the
other axis' range, or from a sub-range, fails: both ranges must be covered and each axis must pass
a chi-square test of uniformity (seeded: the outcome is fixed).

The centre is read back from the output: with ratio 0.01 the box side is
round(7 * 0.1) = round(13 * 0.1) = 1 (multimix_math.h box_side), so the single pixel taken from the
partner is the centre. Gathered over iterations, so that it holds whether one centre is drawn per
batch (lambda_scope="batch") or per sample ("sample").
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from scipy import stats

import dali_multimix
from conftest import run_multimix
from dali_multimix import sampling
from dali_multimix.torch import multimix_batch

H, W = 7, 13
LAM = 0.01             # a 1 x 1 box: side round(7 * 0.1) = 1 and round(13 * 0.1) = 1
P_MIN = 1e-4           # chi-square: a uniform sampler fails this with probability 1e-4 per axis

OP_SCOPES = [None] + (["batch", "sample"] if "lambda_scope" in inspect.signature(
    dali_multimix.multimix).parameters else [])
TORCH_SCOPES = [None] + (["batch", "sample"] if "lambda_scope" in inspect.signature(
    sampling.sample_centers).parameters else [])
BATCH_SCOPES = [None] + (["batch", "sample"] if "lambda_scope" in inspect.signature(
    multimix_batch).parameters else [])


def check_uniform(ys, xs):
    ys, xs = np.asarray(ys), np.asarray(xs)
    assert ys.min() >= 0 and ys.max() < H and xs.min() >= 0 and xs.max() < W
    y_counts, x_counts = np.bincount(ys, minlength=H), np.bincount(xs, minlength=W)
    assert (y_counts > 0).all(), f"rows never drawn: {np.flatnonzero(y_counts == 0)}"
    assert (x_counts > 0).all(), f"columns never drawn: {np.flatnonzero(x_counts == 0)}"
    assert stats.chisquare(y_counts).pvalue > P_MIN, y_counts
    assert stats.chisquare(x_counts).pvalue > P_MIN, x_counts


def centre_of(mask: np.ndarray):
    """The one partner pixel of an (H, W) mask: the centre."""
    ys, xs = np.nonzero(mask)
    assert len(ys) == 1, f"expected a 1 x 1 box inside the image; got {len(ys)} pixels"
    return int(ys[0]), int(xs[0])


def gather(centres_per_iteration, scope):
    """Independent draws only: one per iteration where the batch shares one centre."""
    ys, xs = [], []
    for centres in centres_per_iteration:
        shared = len(set(centres)) == 1
        if scope == "batch":
            assert shared, centres
        if scope == "sample":
            assert not shared, centres
        for y, x in centres[:1] if shared else centres:
            ys.append(y)
            xs.append(x)
    return ys, xs


@pytest.mark.parametrize("layout", ["HWC", "CHW"])
@pytest.mark.parametrize("scope", OP_SCOPES)
def test_operator_centre_is_uniform_over_a_non_square_image(layout, scope):
    batch, iterations = 6, 250
    # image i filled with i + 1, partner of i is i + 1: every output shows its partner's pixels
    images = np.stack([np.full((H, W, 2), i + 1, np.uint8) for i in range(batch)])
    if layout == "CHW":
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    partners = ((np.arange(batch) + 1) % batch).astype(np.int32)
    kwargs = {} if scope is None else {"lambda_scope": scope}
    runs = run_multimix(images, [np.array(i, np.int32) for i in range(batch)], layout=layout, k=2,
                        mode="cutmix", seed=321, iterations=iterations,
                        arg_inputs={"lambdas": np.full((batch, 2), LAM, np.float32),
                                    "partners": partners}, **kwargs)
    per_iteration = []
    for mixed, weights, _, _ in runs:
        np.testing.assert_allclose(weights, 1.0 / (H * W), rtol=1e-6)
        centres = []
        for i in range(batch):
            step = mixed[i, 0] if layout == "HWC" else np.moveaxis(mixed[i, 0], 0, -1)
            mask = (step == partners[i] + 1).all(axis=-1)
            assert ((step == i + 1).all(axis=-1) | mask).all()
            np.testing.assert_array_equal(mixed[i, 1], mixed[i, 0])  # one centre for the K boxes
            centres.append(centre_of(mask))
        per_iteration.append(centres)
    ys, xs = gather(per_iteration, scope)
    assert len(ys) >= iterations
    check_uniform(ys, xs)


@pytest.mark.parametrize("scope", TORCH_SCOPES)
def test_sample_centers_is_uniform_over_a_non_square_image(scope):
    g = torch.Generator().manual_seed(11)
    kwargs = {} if scope is None else {"lambda_scope": scope}
    before = g.get_state()
    per_call = []
    for _ in range(400):
        c = sampling.sample_centers(5, H, W, generator=g, **kwargs)
        assert c.shape == (5, 2) and c.dtype == torch.int64
        per_call.append([tuple(map(int, row)) for row in c])
    assert not torch.equal(g.get_state(), before)
    ys, xs = gather(per_call, scope)
    check_uniform(ys, xs)
    # and (h, w) are not interchangeable: a square request for the same h draws rows only < 7
    c = sampling.sample_centers(2000, W, H, generator=torch.Generator().manual_seed(1),
                                lambda_scope="sample") if scope else None
    if c is not None:
        assert int(c[:, 0].max()) == W - 1 and int(c[:, 1].max()) == H - 1


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
@pytest.mark.parametrize("scope", BATCH_SCOPES)
def test_multimix_batch_cutmix_centre_is_uniform(layout, scope):
    batch = 6
    x = torch.stack([torch.full((2, H, W), float(i + 1)) for i in range(batch)])
    if layout == "HWC":
        x = x.permute(0, 2, 3, 1).contiguous()
    partners = (torch.arange(batch) + 1) % batch
    g = torch.Generator().manual_seed(5)
    kwargs = {} if scope is None else {"lambda_scope": scope}
    per_call = []
    for _ in range(250):
        r = multimix_batch(x, torch.arange(batch), k=2, mode="cutmix", layout=layout, generator=g,
                           lambdas=torch.full((batch, 2), LAM), partners=partners, **kwargs)
        torch.testing.assert_close(r.weights, torch.full((batch, 2), 1.0 / (H * W)))
        centres = []
        for i in range(batch):
            step = r.images[i, 0] if layout == "HWC" else r.images[i, 0].permute(1, 2, 0)
            mask = (step == float(partners[i] + 1)).all(dim=-1).numpy()
            assert torch.equal(r.images[i, 1], r.images[i, 0])
            centres.append(centre_of(mask))
        per_call.append(centres)
    ys, xs = gather(per_call, scope)
    check_uniform(ys, xs)
