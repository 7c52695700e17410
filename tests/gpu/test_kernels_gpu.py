"""The plugin's CUDA kernels, compiled with NVRTC from multimix_kernels.cuh (the header the plugin
compiles, no copy) and launched with the plugin's grid, against the reference (tests/reference.py)
run with cupy on the same device arrays. Needs numpy and cupy, no DALI."""
from __future__ import annotations

import numpy as np
import pytest

from reference import multimix_reference

from .mixkernels import compile_module, fmix_levels, launch, make_jobs

pytestmark = pytest.mark.gpu


def synthetic_images(batch: int, h: int, w: int, dtype, layout: str) -> np.ndarray:
    """Smooth ramps plus noise, (B, H, W, 3) or (B, 3, H, W), uint8 or floats around 0."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(yy * 255 // (h - 1)), (xx * 255 // (w - 1)), ((yy + xx) * 127 // (h + w))], -1)
    images = np.clip(base[None] + rng.integers(-40, 41, (batch, h, w, 3)), 0, 255).astype(np.uint8)
    if layout == "CHW":
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return images if dtype == np.uint8 else (images / 255.0 - 0.4).astype(dtype)


@pytest.mark.parametrize("mode", ["mixup", "cutmix", "fmix"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32])
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
@pytest.mark.parametrize("h, w", [(64, 42), (7, 13)])
def test_nvrtc_kernel_matches_reference(cupy_gpu, mode, dtype, layout, h, w):
    """64x42: every image 16-byte aligned (the vector path), rows that end inside a vector;
    7x13: images of 273 elements, so most jobs are not aligned (the element path) and the aligned
    first job has vectors across rows and channel planes, and a tail."""
    cupy = cupy_gpu
    module, names = compile_module()
    rng = np.random.default_rng(7)
    batch, k = 5, 4
    host = synthetic_images(batch, h, w, dtype, layout)
    images = cupy.asarray(host)
    lambdas = np.sort(rng.random((batch, k)), 1).astype(np.float32)
    lambdas[0] = np.linspace(0.0, 1.0, k)  # the end points
    partners = rng.permutation(batch).astype(np.int32)
    centers = np.stack([rng.integers(0, h, batch), rng.integers(0, w, batch)], 1)
    scores = rng.normal(size=(batch, h, w)).astype(np.float32)
    scores[:, :2, :2] = 0.5  # ties
    levels = fmix_levels(cupy, scores, lambdas) if mode == "fmix" else cupy.zeros((batch, h * w), np.uint8)
    out = cupy.full((batch, k) + host.shape[1:], 7, dtype)  # not zeros: every element is written
    jobs = make_jobs(out, images, levels, lambdas, partners, centers, mode=mode, layout=layout)
    launch(module, names, out, cupy.asarray(jobs.view(np.uint8)), len(jobs), host[0].size)
    expected, _ = multimix_reference(cupy, images, lambdas, partners, mode=mode, layout=layout,
                                     centers=centers, fmix_scores=scores)
    if dtype == np.uint8:
        cupy.testing.assert_array_equal(out, expected)
    else:
        cupy.testing.assert_allclose(out.astype(np.float32), expected.astype(np.float32), rtol=0, atol=1e-6)


def test_a_wrong_job_is_caught(cupy_gpu):
    """The comparison above can fail: a job whose partner pointer is its own image does not match
    the reference."""
    cupy = cupy_gpu
    module, names = compile_module()
    batch, k = 3, 2
    images = cupy.asarray(synthetic_images(batch, 16, 16, np.uint8, "HWC"))
    lambdas = np.full((batch, k), 0.5, np.float32)
    partners = np.array([1, 2, 0], np.int32)
    out = cupy.zeros((batch, k) + images.shape[1:], np.uint8)
    levels = cupy.zeros((batch, 256), np.uint8)
    jobs = make_jobs(out, images, levels, lambdas, np.arange(batch), np.zeros((batch, 2), int),
                     mode="mixup", layout="HWC")
    launch(module, names, out, cupy.asarray(jobs.view(np.uint8)), len(jobs), images[0].size)
    expected, _ = multimix_reference(cupy, images, lambdas, partners, mode="mixup", layout="HWC")
    assert not bool((out == expected).all())


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_nvrtc_kernel_with_an_unaligned_output(cupy_gpu, mode, dtype):
    """Output images one element past a 16-byte boundary: the kernel must take the element path
    (a 128-bit store there would fault or write the wrong bytes)."""
    cupy = cupy_gpu
    module, names = compile_module()
    rng = np.random.default_rng(11)
    batch, k, h, w = 4, 3, 32, 32
    host = synthetic_images(batch, h, w, dtype, "CHW")
    images = cupy.asarray(host)
    lambdas = np.sort(rng.random((batch, k)), 1).astype(np.float32)
    partners = rng.permutation(batch).astype(np.int32)
    centers = np.stack([rng.integers(0, h, batch), rng.integers(0, w, batch)], 1)
    storage = cupy.full(batch * k * host[0].size + 1, 7, dtype)
    out = storage[1:].reshape((batch, k) + host.shape[1:])
    jobs = make_jobs(out, images, cupy.zeros((batch, h * w), np.uint8), lambdas, partners, centers,
                     mode=mode, layout="CHW")
    launch(module, names, out, cupy.asarray(jobs.view(np.uint8)), len(jobs), host[0].size)
    expected, _ = multimix_reference(cupy, images, lambdas, partners, mode=mode, layout="CHW",
                                     centers=centers)
    if dtype == np.uint8:
        cupy.testing.assert_array_equal(out, expected)
    else:
        cupy.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert int(storage[0]) == 7  # nothing written before the output
