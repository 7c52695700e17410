"""GPU checks (marked `gpu`, skipped without CUDA).

* The CUDA kernels, compiled from their DALI-free header with NVRTC (cupy.RawModule), against the
  reference run with cupy on the same device arrays: runs on any GPU machine, DALI or not.
* The DALI GPU operator against the DALI CPU operator (same seed, same outputs): needs DALI too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reference import fmix_masks, multimix_reference

CSRC = Path(__file__).resolve().parents[1] / "dali_multimix" / "csrc"
MODES = {"mixup": 0, "cutmix": 1, "fmix": 2}

# Mirrors multimix::MixJob<T> (multimix_math.h): pointers, then scalars, C alignment.
MIX_JOB = np.dtype([
    ("out", np.uint64), ("own", np.uint64), ("partner", np.uint64), ("levels", np.uint64),
    ("volume", np.int64), ("mode", np.int32), ("step", np.int32), ("lam", np.float32),
    ("y0", np.int32), ("y1", np.int32), ("x0", np.int32), ("x1", np.int32),
    ("h", np.int32), ("w", np.int32), ("inner", np.int32),
], align=True)


def kernel_module():
    import cupy

    options = ["--std=c++17", "--fmad=false", f"-I{CSRC}"]
    names = [f"multimix::MixKernel<{t}>" for t in ("unsigned char", "multimix::Half", "float")]
    return cupy.RawModule(code='#include "multimix_kernels.cuh"\n', options=tuple(options),
                          name_expressions=names), names


def box_of(h, w, center, lam):
    bh = int(np.floor(h * np.sqrt(np.float64(lam)) + 0.5))
    bw = int(np.floor(w * np.sqrt(np.float64(lam)) + 0.5))
    y0, x0 = center[0] - bh // 2, center[1] - bw // 2
    return (np.clip(y0, 0, h), np.clip(y0 + bh, 0, h), np.clip(x0, 0, w), np.clip(x0 + bw, 0, w))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["mixup", "cutmix", "fmix"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32])
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_nvrtc_kernel_matches_reference(photos, mode, dtype, layout):
    import cupy

    from conftest import to_layout

    module, names = kernel_module()
    kernel = module.get_function(names[[np.uint8, np.float16, np.float32].index(dtype)])
    rng = np.random.default_rng(7)
    batch, k = 5, 4
    host = to_layout(photos[np.arange(batch) % 4], layout)
    host = host if dtype == np.uint8 else (host / 255.0 - 0.4).astype(dtype)
    host[4] = host[4][::-1] if layout == "HWC" else host[4][:, ::-1]
    images = cupy.asarray(host)
    lambdas = np.sort(rng.random((batch, k)), 1).astype(np.float32)
    partners = rng.permutation(batch).astype(np.int32)
    h, w = 64, 64
    centers = np.stack([rng.integers(0, h, batch), rng.integers(0, w, batch)], 1)
    scores = rng.normal(size=(batch, h, w)).astype(np.float32)
    inner = 3 if layout == "HWC" else 1

    out = cupy.zeros((batch, k) + host.shape[1:], dtype)
    levels = cupy.zeros((batch, h * w), np.uint8)
    jobs = np.zeros(batch * k, MIX_JOB)
    item = np.dtype(dtype).itemsize
    volume = int(np.prod(host.shape[1:]))
    for i in range(batch):
        if mode == "fmix":  # level of a pixel = the first step whose mask takes it
            masks = fmix_masks(cupy, cupy.asarray(scores[i]), lambdas[i])
            levels[i] = (k - masks.reshape(k, -1).sum(0)).astype(np.uint8)
        for s in range(k):
            j = jobs[i * k + s]
            j["out"] = out.data.ptr + (i * k + s) * volume * item
            j["own"] = images.data.ptr + i * volume * item
            j["partner"] = images.data.ptr + int(partners[i]) * volume * item
            j["levels"] = levels.data.ptr + i * h * w
            j["volume"], j["mode"], j["step"], j["lam"] = volume, MODES[mode], s, lambdas[i, s]
            j["y0"], j["y1"], j["x0"], j["x1"] = box_of(h, w, centers[i], lambdas[i, s])
            j["h"], j["w"], j["inner"] = h, w, inner
            jobs[i * k + s] = j
    jobs_gpu = cupy.asarray(jobs.view(np.uint8))
    kernel((64, batch * k), (256,), (jobs_gpu, np.int32(batch * k)))

    expected, _ = multimix_reference(cupy, images, lambdas, partners, mode=mode, layout=layout,
                                     centers=centers, fmix_scores=scores)
    if dtype == np.uint8:
        cupy.testing.assert_array_equal(out, expected)
    else:
        cupy.testing.assert_allclose(out.astype(np.float32), expected.astype(np.float32),
                                     rtol=0, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["mixup", "cutmix", "fmix"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("lambda_scope", ["batch", "sample"])
def test_dali_gpu_backend_matches_cpu_backend(photos, mode, dtype, lambda_scope):
    pytest.importorskip("nvidia.dali")
    from conftest import run_multimix

    images = np.concatenate([photos, photos[::-1]]).astype(dtype)
    labels = [np.eye(8, dtype=np.float32)[i] for i in range(8)]
    kwargs = dict(k=5, mode=mode, seed=42, iterations=2, lambda_scope=lambda_scope)
    cpu = run_multimix(images, labels, device="cpu", **kwargs)
    gpu = run_multimix(images, labels, device="gpu", **kwargs)
    for c, g in zip(cpu, gpu):
        for a, b in zip(c, g):
            np.testing.assert_array_equal(a, b)
