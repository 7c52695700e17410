"""Fixtures of the DALI-free GPU checks. Imports nothing of DALI. No GPU: every test skips with
"no GPU"; a GPU that cupy (or torch) cannot use: every test fails, saying why."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .gpu_detect import gpu_present

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the source tree, not an installed copy (GPU machines have none)
    sys.path.insert(0, str(REPO))


def import_torch_side() -> None:
    """Imports `dali_multimix.torch` from the source tree: the package loads the DALI plugin only
    when the operator is used, so this needs no DALI (tests/test_gpu_check_without_dali.py)."""
    import dali_multimix.torch  # noqa: F401


@pytest.fixture(scope="session")
def cupy_gpu():
    """cupy on a working GPU: skips without a GPU, fails when a GPU is there but cupy or NVRTC
    cannot compile and run a kernel."""
    present, how = gpu_present()
    if not present:
        pytest.skip(how)
    try:
        import cupy

        add = cupy.RawKernel(r'extern "C" __global__ void add(float *x) { x[threadIdx.x] += 1.0f; }',
                             "add")
        x = cupy.zeros(32, cupy.float32)
        add((1,), (32,), (x,))
        if float(x.sum()) != 32.0:
            raise RuntimeError(f"a trivial kernel computed {float(x.sum())} instead of 32")
    except Exception as e:  # noqa: BLE001 - every cause is reported, as a failure
        pytest.fail(f"GPU present ({how}) but cupy/NVRTC cannot run a kernel: "
                    f"{type(e).__name__}: {e}", pytrace=False)
    return cupy


@pytest.fixture(scope="session")
def torch_cuda():
    """torch with a working CUDA device: skips without a GPU, fails when a GPU is there but torch
    cannot use it. Makes dali_multimix.torch importable (see import_torch_side)."""
    present, how = gpu_present()
    if not present:
        pytest.skip(how)
    try:
        import torch

        x = torch.arange(4.0, device="cuda")
        if float((x * 2).sum()) != 12.0:
            raise RuntimeError("a trivial CUDA computation gave a wrong result")
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"GPU present ({how}) but torch cannot use it: {type(e).__name__}: {e}",
                    pytrace=False)
    import_torch_side()
    return torch
