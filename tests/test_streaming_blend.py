"""The CPU mixup path for large batches: outputs of 16 MiB and more (kStreamOutputBytes in
csrc/multimix.cc) are written with non-temporal stores, a separate loop from the one the small
tests reach. Every ImageNet-size batch takes it. Here the operator, given the ratios and partners,
must equal the independent reference there too: uint8 exactly, float32 within 1e-6, including
images whose size is not a multiple of 32 bytes (unaligned starts of images 2..K and scalar tails).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run_multimix
from reference import multimix_reference

STREAM_BYTES = 16 << 20  # kStreamOutputBytes


def ratios(rng: np.random.Generator, batch: int, k: int) -> np.ndarray:
    """Distinct ratios per sample, far from 1/2 (where lambda and 1 - lambda would agree), with
    the end points on sample 0."""
    lam = np.sort(rng.uniform(0.05, 0.45, size=(batch, k)), axis=1)
    lam[1::2] = np.sort(1.0 - lam[1::2], axis=1)  # some above 1/2 as well
    lam[0] = np.linspace(0.0, 1.0, k)
    return lam.astype(np.float32)


@pytest.mark.parametrize("dtype, batch, k, chw", [
    (np.float32, 8, 4, (3, 256, 256)),   # 25 MiB, every image 32-byte aligned
    (np.float32, 8, 4, (3, 255, 257)),   # 786420 bytes per image: unaligned starts, tails
    (np.uint8, 8, 8, (3, 300, 300)),     # 16.5 MiB
    (np.uint8, 8, 8, (3, 301, 299)),     # 269997 bytes per image
])
def test_streamed_mixup_matches_reference(dtype, batch, k, chw):
    out_bytes = batch * k * int(np.prod(chw)) * np.dtype(dtype).itemsize
    assert out_bytes >= STREAM_BYTES  # the streaming path is taken
    rng = np.random.default_rng(int(np.prod(chw)) + batch * k)
    if dtype == np.uint8:
        images = rng.integers(0, 256, size=(batch,) + chw, dtype=np.uint8)
    else:
        images = rng.normal(0.0, 1.5, size=(batch,) + chw).astype(np.float32)
    lambdas = ratios(rng, batch, k)
    partners = np.roll(np.arange(batch), 3).astype(np.int32)  # no sample is its own partner
    partners[5] = 5                                            # but one is (the copy case)
    [(mixed, weights, partner_labels, partner_idx)] = run_multimix(
        images, [np.array(i, np.int32) for i in range(batch)], layout="CHW", k=k,
        arg_inputs={"lambdas": lambdas, "partners": partners})
    assert mixed.shape == (batch, k) + chw and mixed.dtype == dtype
    np.testing.assert_array_equal(partner_idx, partners)
    np.testing.assert_array_equal(partner_labels, partners)
    np.testing.assert_array_equal(weights, lambdas)

    for i in range(batch):  # sample by sample: the reference's temporaries stay small
        expected, _ = multimix_reference(np, images[[i, partners[i]]], lambdas[i:i + 1],
                                         np.array([1]), mode="mixup")
        if dtype == np.uint8:
            np.testing.assert_array_equal(mixed[i], expected[0], err_msg=f"sample {i}")
        else:
            np.testing.assert_allclose(mixed[i], expected[0], rtol=0, atol=1e-6,
                                       err_msg=f"sample {i}")
    # the end points are exact copies: lambda = 0 the own image, lambda = 1 the partner
    np.testing.assert_array_equal(mixed[0, 0], images[0])
    np.testing.assert_array_equal(mixed[0, -1], images[partners[0]])


def test_just_below_the_streaming_size_gives_the_same_values():
    """One batch each side of the 16 MiB switch: the same samples, the same values."""
    rng = np.random.default_rng(5)
    chw = (1, 512, 512)                                  # 1 MiB per float32 image
    k = 4
    images = rng.normal(size=(4, 1) + chw[1:]).astype(np.float32)
    lambdas = ratios(rng, 4, k)
    partners = np.array([1, 2, 3, 0], np.int32)
    results = []
    for batch in (3, 4):                                 # 12 MiB, then 16 MiB (streamed)
        [(mixed, _, _, _)] = run_multimix(
            images[:batch], [np.array(i, np.int32) for i in range(batch)], layout="CHW", k=k,
            arg_inputs={"lambdas": lambdas[:batch],
                        "partners": np.where(partners[:batch] < batch, partners[:batch], 0)
                        .astype(np.int32)})
        results.append(mixed)
    assert results[0].nbytes < STREAM_BYTES <= results[1].nbytes
    np.testing.assert_array_equal(results[0][:2], results[1][:2])  # samples 0, 1: same partners
