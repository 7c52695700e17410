"""The plugin's CUDA kernels without DALI: compiled with NVRTC (cupy.RawModule) from the very
header the plugin compiles (dali_multimix/csrc/multimix_kernels.cuh, no copy), and launched the
way multimix.cu launches them. Shared by the GPU tests (tests/gpu) and bench/bench_kernels_gpu.py.
Needs numpy and cupy only."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

CSRC = Path(__file__).resolve().parents[2] / "dali_multimix" / "csrc"
HEADERS = ("multimix_kernels.cuh", "multimix_math.h")  # what the kernels compile
MODES = {"mixup": 0, "cutmix": 1, "fmix": 2}
KERNEL_TYPES = {np.dtype(np.uint8): "unsigned char", np.dtype(np.float16): "multimix::Half",
                np.dtype(np.float32): "float"}
BLOCK = 256  # multimix.cu's kBlock
VECTOR_BYTES = 16  # multimix_kernels.cuh's kVectorBytes

# Mirrors multimix::MixJob<T> (multimix_math.h): pointers, then scalars, C alignment.
MIX_JOB = np.dtype([
    ("out", np.uint64), ("own", np.uint64), ("partner", np.uint64), ("levels", np.uint64),
    ("volume", np.int64), ("mode", np.int32), ("step", np.int32), ("lam", np.float32),
    ("y0", np.int32), ("y1", np.int32), ("x0", np.int32), ("x1", np.int32),
    ("h", np.int32), ("w", np.int32), ("inner", np.int32),
], align=True)


def compile_module():
    """The kernels of multimix_kernels.cuh for uint8, half and float, with the plugin's flags
    (--fmad=false: the per-element math of the CPU, bit for bit). Returns (module, names by dtype)."""
    import cupy

    names = {dt: f"multimix::MixKernel<{t}>" for dt, t in KERNEL_TYPES.items()}
    # cupy caches compiled modules by their source text: name the headers' digest in it, or an
    # edited header would be served its stale binary
    digest = hashlib.sha256(b"".join((CSRC / h).read_bytes() for h in HEADERS)).hexdigest()
    module = cupy.RawModule(code=f'// headers {digest}\n#include "multimix_kernels.cuh"\n',
                            options=("--std=c++17", "--fmad=false", f"-I{CSRC}"),
                            name_expressions=list(names.values()))
    return module, names


def grid_for(max_elements: int, njobs: int, itemsize: int = 1) -> tuple[int, int]:
    """multimix.cu's GridFor: up to 1024 blocks of 256 threads per job, one grid row per job; a
    thread takes one 16-byte vector (16 // itemsize elements) per step."""
    width = VECTOR_BYTES // itemsize
    blocks = min(max(-(-max_elements // (BLOCK * width)), 1), 1024)
    return blocks, min(njobs, 65535)


def cutmix_box(h: int, w: int, center, lam: float) -> tuple[int, int, int, int]:
    """The cutmix box of ratio `lam` centred at `center` (round(h sqrt(lam)) x round(w sqrt(lam)),
    clipped): (y0, y1, x0, x1)."""
    bh = int(np.floor(h * np.sqrt(np.float64(lam)) + 0.5))
    bw = int(np.floor(w * np.sqrt(np.float64(lam)) + 0.5))
    y0, x0 = int(center[0]) - bh // 2, int(center[1]) - bw // 2
    return (int(np.clip(y0, 0, h)), int(np.clip(y0 + bh, 0, h)), int(np.clip(x0, 0, w)),
            int(np.clip(x0 + bw, 0, w)))


def fmix_levels(cupy, scores: np.ndarray, lambdas: np.ndarray):
    """(B, h*w) uint8 levels: the first step whose fmix mask takes the pixel (from the reference's
    masks, so that the kernel is checked against them)."""
    from reference import fmix_masks

    batch, k = lambdas.shape
    levels = cupy.zeros((batch, scores[0].size), np.uint8)
    for i in range(batch):
        masks = fmix_masks(cupy, cupy.asarray(scores[i]), lambdas[i])
        levels[i] = (k - masks.reshape(k, -1).sum(0)).astype(np.uint8)
    return levels


def make_jobs(out, images, levels, lambdas, partners, centers, *, mode: str, layout: str) -> np.ndarray:
    """The B*K MixJobs of a batch: out (B, K, ...) and images (B, ...) cupy arrays of one dtype,
    levels (B, h*w) uint8 cupy (fmix), lambdas (B, K), partners (B,), centers (B, 2) numpy."""
    batch, k = lambdas.shape
    h, w = images.shape[1:3] if layout == "HWC" else images.shape[2:4]
    inner = images.shape[3] if layout == "HWC" else 1
    volume = int(np.prod(images.shape[1:]))
    item = images.dtype.itemsize
    jobs = np.zeros(batch * k, MIX_JOB)
    for i in range(batch):
        for s in range(k):
            j = jobs[i * k + s]
            j["out"] = out.data.ptr + (i * k + s) * volume * item
            j["own"] = images.data.ptr + i * volume * item
            j["partner"] = images.data.ptr + int(partners[i]) * volume * item
            j["levels"] = levels.data.ptr + i * h * w
            j["volume"], j["mode"], j["step"], j["lam"] = volume, MODES[mode], s, lambdas[i, s]
            j["y0"], j["y1"], j["x0"], j["x1"] = cutmix_box(h, w, centers[i], lambdas[i, s])
            j["h"], j["w"], j["inner"] = h, w, inner
            jobs[i * k + s] = j
    return jobs


def launch(module, names, out, jobs_gpu, njobs: int, volume: int) -> None:
    """One launch of MixKernel<dtype of out> over `njobs` jobs (jobs_gpu: the uint8 view on the
    device), with the plugin's grid."""
    kernel = module.get_function(names[np.dtype(out.dtype)])
    kernel(grid_for(volume, njobs, out.dtype.itemsize), (BLOCK,), (jobs_gpu, np.int32(njobs)))
