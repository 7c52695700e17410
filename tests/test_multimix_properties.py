"""Properties of the random path: ordering, nesting, weights, pairing, low-frequency fmix masks."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run_multimix


def constant_images(batch: int, h: int = 32, w: int = 40, c: int = 3) -> np.ndarray:
    """Image i is filled with 5*i + 1: every pixel tells which sample it came from."""
    return np.stack([np.full((h, w, c), 5 * i + 1, np.uint8) for i in range(batch)])


@pytest.mark.parametrize("scope", ["batch", "sample"])
@pytest.mark.parametrize("mode", ["cutmix", "fmix"])
@pytest.mark.parametrize("batch", [1, 5, 8])
def test_masks_are_nested_and_weights_are_their_area(mode, batch, scope):
    images = constant_images(batch)
    runs = run_multimix(images, [np.array(i) for i in range(batch)], k=6, mode=mode,
                        iterations=3, seed=7, lambda_scope=scope)
    for mixed, weights, partner_labels, partners in runs:
        assert sorted(partners.tolist()) == list(range(batch))  # a permutation of the batch
        np.testing.assert_array_equal(partner_labels, partners)
        for i in range(batch):
            own, partner = images[i, 0, 0, 0], images[partners[i], 0, 0, 0]
            steps = mixed[i]
            assert np.isin(steps, [own, partner]).all()  # pixels are copied, never blended
            if own == partner:
                continue
            taken = (steps == partner).all(axis=-1)  # (K, H, W)
            assert (taken[:-1] <= taken[1:]).all(), "step k's partner pixels must be in step k+1"
            np.testing.assert_allclose(weights[i], taken.mean(axis=(1, 2)), atol=1e-7)
        assert (np.diff(weights, axis=1) >= 0).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_mixup_lies_between_endpoints_and_moves_monotonically(photos, dtype):
    images = photos.astype(dtype) if dtype == np.uint8 else photos.astype(dtype) / 255.0 - 0.5
    [(mixed, weights, _, partners)] = run_multimix(images, [np.array(i) for i in range(4)], k=5,
                                                   alpha=0.4)
    own = images[:, None].astype(np.float64)
    partner = images[partners][:, None].astype(np.float64)
    out = mixed.astype(np.float64)
    # float32 arithmetic may step a few ulps past an endpoint; uint8 results are exact
    tol = 0.0 if dtype == np.uint8 else 4 * np.finfo(np.float32).eps * np.maximum(abs(own), abs(partner))
    assert (out >= np.minimum(own, partner) - tol).all()
    assert (out <= np.maximum(own, partner) + tol).all()
    assert (np.diff(weights, axis=1) >= 0).all()
    # the path is ordered: every element approaches the partner as k grows (uint8: up to the
    # rounding of two neighbouring steps)
    dist = np.abs(out - partner)
    step_tol = 1.0 if dtype == np.uint8 else 1e-5
    assert (dist[:, 1:] <= dist[:, :-1] + step_tol).all()


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_cutmix_boxes_share_one_centre(scope):
    images = constant_images(6, 48, 48)
    [(mixed, weights, _, partners)] = run_multimix(images, [np.array(i) for i in range(6)], k=5,
                                                   mode="cutmix", seed=3, lambda_scope=scope)
    for i in range(6):
        partner = images[partners[i], 0, 0, 0]
        if partner == images[i, 0, 0, 0]:
            continue
        centres = []
        for taken in (mixed[i] == partner).all(-1):
            if taken.sum() == 0:
                continue
            ys, xs = np.nonzero(taken)
            assert taken[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # a box
            clipped = ys.min() == 0 or xs.min() == 0 or ys.max() == 47 or xs.max() == 47
            if not clipped:
                centres.append(((ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2))
        # a box of side s around centre c spans [c - s//2, c - s//2 + s): its midpoint is c or
        # c - 0.5, so the midpoints of the unclipped boxes agree within half a pixel
        for a in centres:
            for b in centres:
                assert abs(a[0] - b[0]) <= 0.5 and abs(a[1] - b[1]) <= 0.5


def test_fmix_masks_are_low_frequency():
    """FMix masks are blobs: few neighbouring pixels disagree, unlike an i.i.d. mask (~50%)."""
    images = constant_images(8, 64, 64)
    [(mixed, weights, _, partners)] = run_multimix(images, [np.array(i) for i in range(8)], k=1,
                                                   mode="fmix", lambdas=[0.5], seed=5)
    for i in range(8):
        partner = images[partners[i], 0, 0, 0]
        if partner == images[i, 0, 0, 0]:
            continue
        taken = (mixed[i, 0] == partner).all(-1)
        assert abs(taken.mean() - 0.5) < 1e-9
        boundary = (taken[:, 1:] != taken[:, :-1]).mean() + (taken[1:] != taken[:-1]).mean()
        assert boundary < 0.1


def test_successive_iterations_differ():
    images = constant_images(8)
    runs = run_multimix(images, [np.array(i) for i in range(8)], k=3, mode="cutmix", iterations=3)
    w = [r[1] for r in runs]
    p = [r[3] for r in runs]
    assert not np.array_equal(w[0], w[1]) and not np.array_equal(w[1], w[2])
    assert not (np.array_equal(p[0], p[1]) and np.array_equal(p[1], p[2]))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_k1_is_plain_mixup(photos, dtype):
    """k=1, the operator's own draws: each output is (1 - lambda) x + lambda x' for the lambda it
    reports (weights) and the partner it reports, rounded as the reference (uint8 half to even)."""
    from reference import multimix_reference

    images = photos if dtype == np.uint8 else (photos / 255.0 - 0.5).astype(np.float32)
    runs = run_multimix(images, [np.array(i) for i in range(4)], k=1, seed=29, iterations=4)
    seen_lambdas, moved = set(), 0
    for mixed, weights, partner_labels, partners in runs:
        assert mixed.shape == (4, 1, 64, 64, 3) and weights.shape == (4, 1)
        assert mixed.dtype == dtype
        assert sorted(partners.tolist()) == [0, 1, 2, 3]
        np.testing.assert_array_equal(partner_labels, partners)
        assert ((weights >= 0) & (weights <= 1)).all()
        expected, expected_weights = multimix_reference(np, images, weights, partners, mode="mixup")
        if dtype == np.uint8:
            np.testing.assert_array_equal(mixed, expected)
        else:
            np.testing.assert_allclose(mixed, expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(weights, expected_weights)
        seen_lambdas.update(np.round(weights.ravel(), 6).tolist())
        moved += int((partners != np.arange(4)).sum())
    # the check means something: ratios away from 1/2 and real partners were drawn
    assert len(seen_lambdas) >= 3 and any(abs(v - 0.5) > 0.05 for v in seen_lambdas)
    assert moved > 0


def test_k64_runs(photos):
    [(mixed, weights, _, _)] = run_multimix(photos[:2], [np.array(i) for i in range(2)], k=64,
                                            mode="fmix")
    assert mixed.shape[1] == 64 and (np.diff(weights, axis=1) >= 0).all()
