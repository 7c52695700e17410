"""The operator against the independent reference, fed the same ratios, partners, centres and
noise: uint8 and float16 exactly, float32 within 1e-6."""
from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conftest import given_parameters, overrides_for, run_multimix, to_layout
from reference import multimix_reference


def batch_of(photos: np.ndarray, batch: int, dtype, layout: str) -> np.ndarray:
    idx = np.arange(batch) % len(photos)
    imgs = photos[idx].copy()
    imgs[len(photos):] = 255 - imgs[len(photos):]  # keep repeated photos distinct
    imgs = to_layout(imgs, layout)
    if dtype == np.uint8:
        return imgs
    return ((imgs.astype(np.float32) - 120.0) / 60.0).astype(dtype)  # normalised, as pipelines mix


def check_against_reference(mixed, weights, expected, expected_weights, dtype):
    if dtype == np.float32:
        np.testing.assert_allclose(mixed, expected, rtol=0, atol=1e-6)
    else:  # uint8 and float16 results are rounded the same way: exactly equal
        np.testing.assert_array_equal(mixed, expected)
    np.testing.assert_allclose(weights, expected_weights, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["mixup", "cutmix", "fmix"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32])
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
@pytest.mark.parametrize("batch", [1, 3, 6])
def test_given_parameters_match_reference(photos, mode, dtype, layout, batch):
    k = 5
    rng = np.random.default_rng(zlib.crc32(f"{mode}-{np.dtype(dtype).name}-{layout}-{batch}".encode()))
    images = batch_of(photos, batch, dtype, layout)
    h, w = photos.shape[1:3]
    lambdas, partners, centers, scores = given_parameters(rng, batch, k, h, w)
    labels = [np.array(i, np.int32) for i in range(batch)]
    args = overrides_for(mode, lambdas, partners, centers, scores)
    [(mixed, weights, partner_labels, partner_idx)] = run_multimix(
        images, labels, layout=layout, k=k, mode=mode, arg_inputs=args)

    expected, expected_weights = multimix_reference(
        np, images, lambdas, partners, mode=mode, layout=layout, centers=centers,
        fmix_scores=scores)
    assert mixed.shape == (batch, k) + images.shape[1:]
    assert mixed.dtype == images.dtype
    check_against_reference(mixed, weights, expected, expected_weights, dtype)
    np.testing.assert_array_equal(partner_idx, partners)
    np.testing.assert_array_equal(partner_labels, partners)  # label i is i


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_mixup_any_rank_spectrogram(dtype):
    """mixup needs no H/W: a 2-D (freq, time) map with no layout, and a 1-D signal."""
    rng = np.random.default_rng(3)
    for shape in [(40, 101), (16000,)]:
        raw = rng.integers(0, 256, size=(5,) + shape)
        images = raw.astype(dtype)
        lambdas = np.sort(rng.random((5, 3)), 1).astype(np.float32)
        partners = np.array([4, 3, 2, 1, 0], np.int32)
        [(mixed, weights, _, _)] = run_multimix(
            images, [np.array(i, np.int64) for i in range(5)], layout="", k=3,
            arg_inputs={"lambdas": lambdas, "partners": partners})
        expected, expected_weights = multimix_reference(np, images, lambdas, partners, mode="mixup")
        check_against_reference(mixed, weights, expected, expected_weights, dtype)


@pytest.mark.parametrize("mode", ["cutmix", "fmix"])
def test_grey_hw_layout(photos, mode):
    images = to_layout(photos, "HW")
    rng = np.random.default_rng(11)
    lambdas, partners, centers, scores = given_parameters(rng, 4, 4, 64, 64)
    args = overrides_for(mode, lambdas, partners, centers, scores)
    [(mixed, weights, _, _)] = run_multimix(images, [np.array(i, np.int32) for i in range(4)],
                                            layout="HW", k=4, mode=mode, arg_inputs=args)
    expected, expected_weights = multimix_reference(np, images, lambdas, partners, mode=mode,
                                                    layout="HW", centers=centers,
                                                    fmix_scores=scores)
    check_against_reference(mixed, weights, expected, expected_weights, np.uint8)


def test_random_mixup_matches_reference_fed_its_own_draws(photos):
    """Default randomness: the op's reported ratios and partners reproduce its images."""
    images = batch_of(photos, 7, np.uint8, "HWC")
    [(mixed, weights, _, partners)] = run_multimix(images, [np.array(i) for i in range(7)], k=5)
    expected, _ = multimix_reference(np, images, weights, partners, mode="mixup")
    np.testing.assert_array_equal(mixed, expected)


def test_soft_labels_follow_the_partner(photos):
    images = batch_of(photos, 5, np.float32, "HWC")
    soft = np.eye(10, dtype=np.float32)[[3, 1, 4, 1, 5]] * 0.9 + 0.01
    [(_, _, partner_labels, partners)] = run_multimix(images, list(soft), k=2, mode="cutmix")
    np.testing.assert_array_equal(partner_labels, soft[partners])
    assert partner_labels.dtype == np.float32


def test_constant_overrides(photos):
    """Python constants for lambdas / partners / centers apply to every sample."""
    images = batch_of(photos, 3, np.uint8, "HWC")
    [(mixed, weights, _, partners)] = run_multimix(
        images, [np.array(i) for i in range(3)], k=3, mode="cutmix", lambdas=[0.1, 0.5, 0.9],
        partners=2, centers=[10, 20])
    np.testing.assert_array_equal(partners, [2, 2, 2])
    expected, expected_weights = multimix_reference(
        np, images, np.tile([0.1, 0.5, 0.9], (3, 1)), [2, 2, 2], mode="cutmix", layout="HWC",
        centers=[(10, 20)] * 3)
    check_against_reference(mixed, weights, expected, expected_weights, np.uint8)


def test_float16_mixup_rounds_like_numpy_over_every_finite_half():
    """Every finite float16 value (subnormals, +-0, +-65504) mixed at several ratios: the result is
    numpy's float32 -> float16 conversion (round to nearest even), bit for bit."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    values = bits.view(np.float16)
    values = values[np.isfinite(values)]
    images = np.stack([values, values[::-1]])
    lambdas = np.array([[0.0, 0.3, 0.5, 0.7, 1.0]] * 2, np.float32)
    partners = np.array([1, 0], np.int32)
    [(mixed, _, _, _)] = run_multimix(images, [np.array(0), np.array(1)], layout="", k=5,
                                      arg_inputs={"lambdas": lambdas, "partners": partners})
    expected, _ = multimix_reference(np, images, lambdas, partners, mode="mixup")
    np.testing.assert_array_equal(mixed.view(np.uint16), expected.view(np.uint16))


def test_portable_loop_matches_reference_too():
    """The CPU backend picks a hand-vectorised AVX2 loop where it can; the portable loop (forced
    by DALI_MULTIMIX_NO_AVX2=1 in a fresh process) must pass the same reference tests."""
    env = dict(os.environ, DALI_MULTIMIX_NO_AVX2="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "(given_parameters and mixup) or spectrogram or every_finite_half"],
        env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(__file__))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "deselected" in result.stdout


@pytest.mark.parametrize("case", ["all_equal", "two_values", "outlier", "tiny_range", "signed_zeros",
                                  "huge_range"])
def test_fmix_thresholds_on_adversarial_scores(case):
    """The K nested masks take exactly the top round(lambda*H*W) pixels (ties by index) however
    the scores are spread: ties everywhere, one outlier squeezing the rest into one bin, ranges
    too narrow to divide, +0/-0, values from 1e-30 to 1e30. 24 x 21 pixels: the levels' vector
    loop (16 pixels a step) leaves a tail of 8."""
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    h, w, batch, k = 24, 21, 3, 6
    scores = {
        "all_equal": np.ones((batch, h, w)),
        "two_values": rng.integers(0, 2, (batch, h, w)).astype(np.float64),
        "outlier": np.concatenate([rng.normal(size=(batch, h * w - 1)), np.full((batch, 1), 1e30)],
                                  1).reshape(batch, h, w),
        "tiny_range": 1.0 + rng.integers(0, 3, (batch, h, w)) * np.finfo(np.float32).eps,
        "signed_zeros": np.where(rng.random((batch, h, w)) < 0.5, -0.0, 0.0),
        "huge_range": np.sign(rng.normal(size=(batch, h, w))) * 10.0 ** rng.uniform(-30, 30, (batch, h, w)),
    }[case].astype(np.float32)
    images = np.stack([np.full((h, w, 1), 10 * (i + 1), np.uint8) for i in range(batch)])
    lambdas = np.sort(rng.random((batch, k)), 1).astype(np.float32)
    lambdas[0, 0], lambdas[0, -1] = 0.0, 1.0
    partners = np.array([1, 2, 0], np.int32)
    [(mixed, weights, _, _)] = run_multimix(
        images, [np.array(i) for i in range(batch)], mode="fmix", k=k,
        arg_inputs={"lambdas": lambdas, "partners": partners, "fmix_scores": scores})
    expected, expected_weights = multimix_reference(np, images, lambdas, partners, mode="fmix",
                                                    layout="HWC", fmix_scores=scores)
    check_against_reference(mixed, weights, expected, expected_weights, np.uint8)


def test_overrides_accept_int64_and_float64(photos):
    """numpy's default dtypes work as overrides: int64 partners and centers, float64 ratios."""
    images = batch_of(photos, 3, np.uint8, "HWC")
    lambdas = np.array([[0.1, 0.6], [0.2, 0.3], [0.0, 1.0]])
    partners = np.array([2, 0, 1])
    centers = np.array([[5, 60], [30, 30], [63, 0]])
    [(mixed, weights, _, got_partners)] = run_multimix(
        images, [np.array(i) for i in range(3)], k=2, mode="cutmix",
        arg_inputs={"lambdas": lambdas, "partners": partners, "centers": centers})
    np.testing.assert_array_equal(got_partners, partners)
    expected, expected_weights = multimix_reference(
        np, images, lambdas.astype(np.float32), partners, mode="cutmix", layout="HWC",
        centers=centers)
    check_against_reference(mixed, weights, expected, expected_weights, np.uint8)
