"""The DALI GPU operator against the DALI CPU operator (same seed, same outputs). Marked `gpu`:
skipped with "no GPU" without one; skipped when DALI is not installed (the GPU check machines);
on a GPU machine with DALI and the plugin built with CUDA it must pass (see README, "GPU check").
The DALI-free GPU checks (the CUDA kernels through NVRTC, the torch side on CUDA) are in tests/gpu.
"""
from __future__ import annotations

import numpy as np
import pytest


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
