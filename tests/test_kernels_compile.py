"""The CUDA kernels stay self-contained: their header includes nothing but the shared math and
compiles with NVRTC (what the GPU test and GPU machines without DALI rely on). Needs no GPU:
NVRTC only compiles. NVRTC runs in a child process: its library, loaded into the test process,
interposes symbols that corrupt torch.load there (seen with cuda-bindings 13.5 and torch 2.14)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "dali_multimix" / "csrc"
KERNELS = ["multimix::MixKernel<unsigned char>", "multimix::MixKernel<multimix::Half>",
           "multimix::MixKernel<float>", "multimix::CopyBytesKernel"]

COMPILE = r"""
import json, sys
from cuda.bindings import nvrtc
source, names, options = json.loads(sys.stdin.read())
_, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"multimix.cu", 0, [], [])
for name in names:
    nvrtc.nvrtcAddNameExpression(prog, name.encode())
opts = [o.encode() for o in options]
(result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
_, size = nvrtc.nvrtcGetProgramLogSize(prog)
log = b" " * size
nvrtc.nvrtcGetProgramLog(prog, log)
lowered = {}
if result == nvrtc.nvrtcResult.NVRTC_SUCCESS:
    for name in names:
        err, low = nvrtc.nvrtcGetLoweredName(prog, name.encode())
        lowered[name] = low.decode() if err == nvrtc.nvrtcResult.NVRTC_SUCCESS else None
print(json.dumps({"ok": result == nvrtc.nvrtcResult.NVRTC_SUCCESS, "log": log.decode(errors="replace"),
                  "lowered": lowered}))
"""


def nvrtc_compile(source: str, names=(), options=()) -> dict:
    pytest.importorskip("cuda.bindings.nvrtc")
    result = subprocess.run([sys.executable, "-c", COMPILE], input=json.dumps([source, list(names), list(options)]),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_kernel_headers_include_nothing_but_each_other():
    for name in ("multimix_math.h", "multimix_kernels.cuh"):
        includes = re.findall(r'#include\s+[<"]([^>"]+)[>"]', (CSRC / name).read_text())
        assert set(includes) <= {"multimix_math.h"}, (name, includes)


def test_kernels_compile_with_nvrtc():
    out = nvrtc_compile('#include "multimix_kernels.cuh"\n', KERNELS,
                        ["--std=c++17", "--fmad=false", f"-I{CSRC}", "-arch=compute_75"])
    assert out["ok"], out["log"]
    assert all(out["lowered"][name] for name in KERNELS)


def test_nvrtc_reports_a_broken_kernel():
    """The check above can fail: a kernel with a type error does not compile."""
    out = nvrtc_compile("__global__ void f(int *p) { p = 1.5f; }")
    assert not out["ok"] and "error" in out["log"]
