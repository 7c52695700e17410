"""The CUDA kernels stay self-contained: their header includes no DALI and compiles with NVRTC
(what the GPU test and GPU machines without DALI rely on). Needs no GPU: NVRTC only compiles."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "dali_multimix" / "csrc"
KERNELS = ["multimix::MixKernel<unsigned char>", "multimix::MixKernel<multimix::Half>",
           "multimix::MixKernel<float>", "multimix::CopyBytesKernel"]


def test_kernel_headers_include_nothing_but_each_other():
    for name in ("multimix_math.h", "multimix_kernels.cuh"):
        includes = re.findall(r'#include\s+[<"]([^>"]+)[>"]', (CSRC / name).read_text())
        assert set(includes) <= {"multimix_math.h"}, (name, includes)


def test_kernels_compile_with_nvrtc():
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    err, prog = nvrtc.nvrtcCreateProgram(b'#include "multimix_kernels.cuh"\n', b"multimix.cu", 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    for name in KERNELS:
        nvrtc.nvrtcAddNameExpression(prog, name.encode())
    options = [b"--std=c++17", b"--fmad=false", f"-I{CSRC}".encode(), b"-arch=compute_75"]
    (result,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode()
    for name in KERNELS:
        err, lowered = nvrtc.nvrtcGetLoweredName(prog, name.encode())
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS and lowered
    nvrtc.nvrtcDestroyProgram(prog)


def test_nvrtc_reports_a_broken_kernel():
    """The check above can fail: a kernel with a type error does not compile."""
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    _, prog = nvrtc.nvrtcCreateProgram(b"__global__ void f(int *p) { p = 1.5f; }", b"bad.cu", 0, [], [])
    (result,) = nvrtc.nvrtcCompileProgram(prog, 0, [])
    assert result != nvrtc.nvrtcResult.NVRTC_SUCCESS
    nvrtc.nvrtcDestroyProgram(prog)
