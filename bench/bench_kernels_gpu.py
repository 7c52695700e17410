"""Benchmark (not a test) of the plugin's CUDA kernels on one GPU, without DALI: MixKernel compiled
with NVRTC from dali_multimix/csrc/multimix_kernels.cuh (tests/gpu/mixkernels.py) and launched with
the plugin's grid, against
  * a device-to-device copy of the same output bytes, and the HBM bandwidth that copy measures;
  * torch's fused lerp called K times (the mixup blend, written into the K output slots);
  * timm's Mixup and torchvision's v2 MixUp called K times on the same batch (where installed);
  * dali_multimix.torch.multimix_batch on the CUDA tensor.
Writes bench/results/kernels_gpu.md. Runs in well under a minute on a data-centre GPU.

    python bench/bench_kernels_gpu.py [--reps 20]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]  # tests/gpu/mixkernels.py; the source tree

from gpu.mixkernels import compile_module, launch, make_jobs  # noqa: E402

RESULTS = REPO / "bench" / "results" / "kernels_gpu.md"
# (name, batch, sample shape CHW)
SHAPES = [("CIFAR 32x32", 256, (3, 32, 32)), ("ImageNet 224x224", 64, (3, 224, 224))]
K = 5


def time_ms(fn, reps: int) -> float:
    """Median milliseconds of fn() on the GPU (CUDA events around each call, after 3 warm-ups)."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def kernel_case(cupy, torch, module, names, batch, shape, dtype, mode, reps):
    """(kernel ms, output bytes) of one MixKernel launch over B*K jobs. The kernel runs on torch's
    current stream, so that the CUDA events time it."""
    rng = np.random.default_rng(0)
    images = cupy.asarray(rng.integers(0, 256, (batch,) + shape).astype(dtype))
    out = cupy.empty((batch, K) + shape, dtype)
    h, w = shape[1:]
    levels = cupy.asarray(rng.integers(0, K + 1, (batch, h * w)).astype(np.uint8))
    lambdas = np.sort(rng.random((batch, K)), 1).astype(np.float32)
    partners = rng.permutation(batch)
    centers = np.stack([rng.integers(0, h, batch), rng.integers(0, w, batch)], 1)
    jobs = cupy.asarray(make_jobs(out, images, levels, lambdas, partners, centers, mode=mode,
                                  layout="CHW").view(np.uint8))
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    volume = int(np.prod(shape))

    def run():
        with stream:
            launch(module, names, out, jobs, batch * K, volume)

    return time_ms(run, reps), out.nbytes


def copy_ms(torch, nbytes: int, reps: int) -> float:
    # non-zero bytes, as the kernels write: a memory system may move zeros faster (the CPU VM of
    # bench_op.py streams zeros 2.2x faster than other data)
    src = torch.full((nbytes,), 0x5A, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return time_ms(lambda: dst.copy_(src), reps)


def torch_baselines(torch, batch, shape, reps) -> dict:
    """ms of the float32 mixup baselines producing B*K mixed rows."""
    x = torch.rand((batch,) + shape, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    out = torch.empty((batch, K) + shape, device="cuda")
    perm = torch.randperm(batch, device="cuda")
    lams = torch.rand(K).sort().values.tolist()

    def lerp():
        partner = x[perm]
        for s, lam in enumerate(lams):
            torch.lerp(x, partner, lam, out=out[:, s])

    results = {"torch.lerp x K (fused blend into the K slots)": time_ms(lerp, reps)}
    try:
        from dali_multimix.torch import multimix_batch
        g = torch.Generator().manual_seed(0)
        results["dali_multimix.torch.multimix_batch (CUDA tensor)"] = time_ms(
            lambda: multimix_batch(x, y, k=K, generator=g), reps)
    except ImportError as e:
        print(f"multimix_batch skipped: {e}")
    try:
        from timm.data import Mixup
        mixup = Mixup(mixup_alpha=1.0, num_classes=10)
        results["timm Mixup x K (clone + in-place mix each)"] = time_ms(
            lambda: [mixup(x.clone(), y) for _ in range(K)], reps)
    except ImportError:
        print("timm not installed: its baseline is left out")
    try:
        from torchvision.transforms import v2
        mixup_v2 = v2.MixUp(num_classes=10)
        results["torchvision v2.MixUp x K"] = time_ms(lambda: [mixup_v2(x, y) for _ in range(K)], reps)
    except (ImportError, AttributeError):
        print("torchvision (v2.MixUp) not installed: its baseline is left out")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    import cupy
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels_gpu: no CUDA GPU visible to torch")
    module, names = compile_module()
    card = torch.cuda.get_device_name(0)
    lines = [f"MixKernel (NVRTC from multimix_kernels.cuh, the plugin's grid) on **{card}**, K={K}, "
             f"CHW, median of {args.reps} launches (CUDA events); torch {torch.__version__}, "
             f"cupy {cupy.__version__}. Copy = a device-to-device copy of the kernel's output bytes; "
             f"HBM GB/s = 2 x bytes / copy time (read + write). Kernel GB/s counts the output bytes "
             f"written (reads of the B inputs hit the cache K times).", ""]
    for title, batch, shape in SHAPES:
        lines += [f"### {title}, B={batch} (B*K = {batch * K} outputs)", "",
                  "| kernel | dtype | ms | output GB/s | copy ms | HBM GB/s (copy) | kernel / copy |",
                  "|---|---|---|---|---|---|---|"]
        for dtype in (np.uint8, np.float32):
            for mode in ("mixup", "cutmix", "fmix"):
                ms, nbytes = kernel_case(cupy, torch, module, names, batch, shape, dtype, mode, args.reps)
                copy = copy_ms(torch, nbytes, args.reps)
                lines.append(f"| MixKernel {mode} | {np.dtype(dtype).name} | {ms:.3f} | "
                             f"{nbytes / ms / 1e6:.0f} | {copy:.3f} | {2 * nbytes / copy / 1e6:.0f} | "
                             f"{ms / copy:.2f} |")
                print(lines[-1], flush=True)
        base = torch_baselines(torch, batch, shape, args.reps)
        mix_ms, nbytes = kernel_case(cupy, torch, module, names, batch, shape, np.float32, "mixup", args.reps)
        lines += ["", "| float32 mixup, B*K rows | ms | x MixKernel mixup |", "|---|---|---|",
                  f"| MixKernel mixup (one launch) | {mix_ms:.3f} | 1.00 |"]
        lines += [f"| {name} | {ms:.3f} | {ms / mix_ms:.2f} |" for name, ms in base.items()]
        lines.append("")
        print("\n".join(lines[-len(base) - 3:]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
