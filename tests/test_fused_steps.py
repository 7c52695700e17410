"""The CPU loops that write all K steps of an image in one pass (mixup and fmix load the two
inputs once per 32 bytes and write up to 8 steps, more steps in groups of 8): equal to the
reference for K beyond one group, odd image sizes (scalar heads and tails, unaligned steps), every
dtype, both layouts, below and above the streaming size (kStreamOutputBytes, 16 MiB)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import given_parameters, run_multimix
from reference import multimix_reference

STREAM_BYTES = 16 << 20


def make_images(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
    if dtype == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.normal(0.0, 2.0, size=shape).astype(dtype)


def check(mixed, expected, dtype, what):
    if dtype == np.float32:
        np.testing.assert_allclose(mixed, expected, rtol=0, atol=1e-6, err_msg=what)
    else:  # uint8 rounding and float16 conversion are bit-exact
        np.testing.assert_array_equal(mixed, expected, err_msg=what)


@pytest.mark.parametrize("mode", ["mixup", "fmix"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32])
@pytest.mark.parametrize("k", [1, 3, 8, 11, 19])
@pytest.mark.parametrize("layout, shape", [("HWC", (13, 11, 3)), ("CHW", (3, 9, 17)),
                                           ("HW", (7, 5))])
def test_fused_steps_match_the_reference(mode, dtype, k, layout, shape):
    rng = np.random.default_rng(k * 1000 + len(layout))
    batch = 5
    h, w = (shape[0], shape[1]) if layout != "CHW" else (shape[1], shape[2])
    images = make_images(rng, (batch,) + shape, dtype)
    lambdas, partners, _, scores = given_parameters(rng, batch, k, h, w)
    args = {"lambdas": lambdas, "partners": partners}
    if mode == "fmix":
        args["fmix_scores"] = scores
    [(mixed, weights, _, _)] = run_multimix(images, [np.array(i, np.int32) for i in range(batch)],
                                            layout=layout, k=k, mode=mode, arg_inputs=args)
    expected, expected_weights = multimix_reference(
        np, images, lambdas, partners, mode=mode, layout=layout,
        fmix_scores=scores if mode == "fmix" else None)
    check(mixed, expected, dtype, f"{mode} {layout} k={k}")
    np.testing.assert_allclose(weights, expected_weights, rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["mixup", "fmix"])
@pytest.mark.parametrize("dtype, k, shape", [
    (np.uint8, 11, (301, 299, 3)),    # 269997 bytes per image: unaligned steps, two groups
    (np.uint8, 5, (256, 256, 3)),     # every step 32-byte aligned
    (np.float32, 9, (255, 257, 3)),   # unaligned steps, groups of 8 + 1
])
def test_streamed_fused_steps_match_the_reference(mode, dtype, k, shape):
    rng = np.random.default_rng(int(np.prod(shape)) + k)
    image_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    batch = -(-STREAM_BYTES // (k * image_bytes))  # the smallest batch that streams
    images = make_images(rng, (batch,) + shape, dtype)
    lambdas, partners, _, scores = given_parameters(rng, batch, k, shape[0], shape[1])
    args = {"lambdas": lambdas, "partners": partners}
    if mode == "fmix":
        args["fmix_scores"] = scores
    [(mixed, _, _, _)] = run_multimix(images, [np.array(i, np.int32) for i in range(batch)],
                                      layout="HWC", k=k, mode=mode, arg_inputs=args)
    assert mixed.nbytes >= STREAM_BYTES
    for i in range(batch):  # sample by sample: the reference's temporaries stay small
        expected, _ = multimix_reference(
            np, images[[i, partners[i]]], lambdas[i:i + 1], np.array([1]), mode=mode,
            layout="HWC", fmix_scores=scores[i:i + 1] if mode == "fmix" else None)
        check(mixed[i], expected[0], dtype, f"{mode} sample {i}")
