"""Benchmark of the multimix operator (not a test): time per batch of B=128 samples, K=5
interpolations, against the memory limit and peers in the same run: numpy, torch on the same
tensors, timm's and torchvision's single mixup/cutmix called K times. Prints a table and writes it
to bench/results/op_{cpu,gpu}.md (quoted by the README).

The CPU limit is what the operator cannot beat: reading the B input images once and writing the
B*K output images with streaming (non-temporal) stores, on as many threads (the native helper
``mm_stream_read_write`` of libmultimix_graphcut.so), timed interleaved with the operator (the
machine may be shared). Its measured bandwidth is in the table. A plain memcpy is no limit: its
ordinary stores also read the destination lines, so a streaming operator beats it. The limit
writes non-zero data: the 2-core VM of these tables writes zeros 2.2x faster than any other bytes
(385 MB of streaming stores: 6.6 ms for zeros, 14.6 ms for a non-zero constant or varying data,
measured 2026-11-26), and an operator writes images. Last, mixup, fmix and fmix with
lambda_scope "sample" at 224x224 uint8 are timed in turn in one loop, for the ratios between them.

    python bench/bench_op.py [--device cpu|gpu] [--repeats 11] [--batch 128] [--k 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def

import dali_multimix

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def best_ms(fn_, repeats: int) -> float:
    """Best of `repeats` runs after a warm-up (the least disturbed by the rest of the machine)."""
    fn_()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn_()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def in_turn_best_ms(runs, repeats: int) -> list:
    """Best time of each of `runs` (callables), all run in turn in every repeat after a warm-up,
    so that every one sees the same machine states."""
    for run in runs:
        run()
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - t0)
    return [1e3 * b for b in best]


def dali_runner(batch: np.ndarray, k: int, mode: str | None, threads: int, device: str = "cpu"):
    """A pipeline feeding the preloaded batch (moved to the GPU for device "gpu"); with `mode`
    None it only feeds (the baseline whose time is subtracted to get the operator's own cost).
    mode: "mixup", "cutmix", "fmix" (lambda_scope "batch", the default), "fmix/sample"
    (lambda_scope "sample": one noise map per sample)."""
    scope = {}
    if mode is not None and "/" in mode:
        mode, scope = mode.split("/")[0], dict(lambda_scope=mode.split("/")[1])
    samples = list(batch)
    labels = [np.array(i, np.int32) for i in range(len(batch))]

    @pipeline_def(batch_size=len(batch), num_threads=threads, seed=1, prefetch_queue_depth=1,
                  device_id=0 if device == "gpu" else None)
    def pipe():
        x = fn.external_source(source=lambda: samples, batch=True, layout="HWC")
        y = fn.external_source(source=lambda: labels, batch=True)
        if device == "gpu":
            x, y = x.gpu(), y.gpu()
        if mode is None:
            return x, y
        out = dali_multimix.multimix(x, y, k=k, mode=mode, **scope)
        return out.images, out.weights

    p = pipe()
    p.build()
    return lambda: p.run()


def device_memcpy(nbytes: int):
    """GPU: one device-to-device copy of the output size (the physical limit on the GPU)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)

    def run():
        dst.copy_(src)
        torch.cuda.synchronize()
    return run


def synchronized(fn_):
    def run():
        fn_()
        torch.cuda.synchronize()
    return run


def stream_limit(in_bytes: int, out_bytes: int, threads: int):
    """Reads `in_bytes` and writes `out_bytes` with streaming stores on `threads` threads (the
    native helper; ctypes releases the GIL): the memory limit of the operator on the CPU. None
    when the native library is not built."""
    from dali_multimix.torch.graphcut import native_library

    lib = native_library()
    if lib is None:
        return None
    src, dst = np.ones(in_bytes, np.uint8), np.zeros(out_bytes, np.uint8)
    return lambda: lib.mm_stream_read_write(src.ctypes.data, in_bytes, dst.ctypes.data, out_bytes,
                                            threads)


def threaded_memcpy(nbytes: int, threads: int):
    """Copies `nbytes` (the output size) once, split over `threads` threads like the operator's
    work: the physical limit of writing the output."""
    src, dst = np.ones(nbytes, np.uint8), np.zeros(nbytes, np.uint8)
    bounds = np.linspace(0, nbytes, threads + 1).astype(int)
    pool = ThreadPoolExecutor(threads)

    def run():
        list(pool.map(lambda i: np.copyto(dst[bounds[i]:bounds[i + 1]], src[bounds[i]:bounds[i + 1]]),
                      range(threads)))
    return run


def numpy_mixup(x: np.ndarray, k: int, rng: np.random.Generator):
    lam = np.sort(rng.beta(1.0, 1.0, (len(x), k)), 1).astype(np.float32)
    lam = lam.reshape(lam.shape + (1,) * (x.ndim - 1))
    partner = x[rng.permutation(len(x))]
    out = (1 - lam) * x[:, None].astype(np.float32) + lam * partner[:, None].astype(np.float32)
    return np.rint(out).astype(np.uint8) if x.dtype == np.uint8 else out


def torch_mixup(x: torch.Tensor, k: int, gen: torch.Generator):
    lam = torch.sort(torch.distributions.Beta(1.0, 1.0).sample((len(x), k)), 1).values.to(x.device)
    lam = lam.reshape(lam.shape + (1,) * (x.dim() - 1))
    partner = x[torch.randperm(len(x), generator=gen, device=x.device)]
    xf, pf = x[:, None].float(), partner[:, None].float()
    out = torch.lerp(xf, pf, lam)
    return out.round_().to(torch.uint8) if x.dtype == torch.uint8 else out


def timm_k_times(x: torch.Tensor, k: int, mode: str):
    from timm.data import Mixup

    mix = Mixup(mixup_alpha=1.0 if mode == "mixup" else 0.0,
                cutmix_alpha=1.0 if mode == "cutmix" else 0.0, num_classes=10)
    target = torch.zeros(len(x), dtype=torch.long, device=x.device)
    return lambda: [mix(x.clone(), target) for _ in range(k)]


def torchvision_k_times(x: torch.Tensor, k: int, mode: str):
    from torchvision.transforms import v2

    mix = v2.MixUp(num_classes=10) if mode == "mixup" else v2.CutMix(num_classes=10)
    target = torch.zeros(len(x), dtype=torch.long, device=x.device)
    chw = x.permute(0, 3, 1, 2)  # torchvision wants (B, C, H, W)
    return lambda: [mix(chw, target) for _ in range(k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="run the operator's CPU or GPU backend (gpu needs CUDA)")
    args = parser.parse_args()
    if args.device == "gpu" and not torch.cuda.is_available():
        parser.error("--device gpu needs a CUDA GPU; none is visible to torch")
    gpu = args.device == "gpu"
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for side in (32, 224):
        for dtype in (np.uint8, np.float32):
            x = rng.integers(0, 256, (args.batch, side, side, 3)).astype(dtype)
            out_bytes = x.nbytes * args.k
            limit = None if gpu else stream_limit(x.nbytes, out_bytes, args.threads)
            limit_name = "stream"
            if limit is None:
                limit_name = "memcpy"
                limit = device_memcpy(out_bytes) if gpu else threaded_memcpy(out_bytes, args.threads)
            feed = dali_runner(x, args.k, None, args.threads, args.device)
            xt = torch.from_numpy(x).cuda() if gpu else torch.from_numpy(x)
            gen = torch.Generator(device=xt.device).manual_seed(0)
            peer = synchronized if gpu else (lambda f: f)
            for mode in ("mixup", "cutmix", "fmix", "fmix/sample"):
                t_pipe, t_feed, t_limit = in_turn_best_ms(
                    (dali_runner(x, args.k, mode, args.threads, args.device), feed, limit),
                    args.repeats)
                t_op = max(t_pipe - t_feed, 1e-3)
                row = dict(size=f"{side}x{side}x3", dtype=np.dtype(dtype).name, mode=mode,
                           limit=t_limit, op=t_op, pipeline=t_pipe, limit_name=limit_name,
                           gbs=(x.nbytes + out_bytes) / (t_limit * 1e-3) / 1e9)
                if mode == "mixup":
                    if not gpu:
                        row["numpy"] = best_ms(lambda: numpy_mixup(x, args.k, rng), args.repeats)
                    row["torch"] = best_ms(peer(lambda: torch_mixup(xt, args.k, gen)), args.repeats)
                if dtype == np.float32 and not mode.startswith("fmix"):  # timm / torchvision: float, no fmix
                    row["timm xK"] = best_ms(peer(timm_k_times(xt, args.k, mode)), args.repeats)
                    row["torchvision xK"] = best_ms(peer(torchvision_k_times(xt, args.k, mode)),
                                                    args.repeats)
                rows.append(row)
                print(format_row(row), flush=True)
    x = rng.integers(0, 256, (args.batch, 224, 224, 3)).astype(np.uint8)
    interleaved = interleaved_ops_ms(x, args.k, args.threads, args.device, 2 * args.repeats)
    for line in format_interleaved(interleaved):
        print(line)
    write_results(rows, args, interleaved)


INTERLEAVED_MODES = ("mixup", "fmix", "fmix/sample")


def interleaved_ops_ms(x: np.ndarray, k: int, threads: int, device: str, repeats: int) -> dict:
    """The operator's time (pipeline minus feed, best of `repeats`) per mode, with the feed and
    every mode's pipeline run in turn in one loop: all modes see the same machine states, so
    their ratios (the fmix goals: "batch" about mixup, "sample" <= 2x mixup) are read here."""
    modes = (None,) + INTERLEAVED_MODES
    feed, *ops = in_turn_best_ms([dali_runner(x, k, mode, threads, device) for mode in modes],
                                 repeats)
    return {mode: max(t - feed, 1e-3) for mode, t in zip(INTERLEAVED_MODES, ops)}


def format_interleaved(ops: dict) -> list:
    lines = ["| mode | op ms | / mixup |", "|---|---|---|"]
    return lines + [f"| {mode} | {ops[mode]:.2f} | {ops[mode] / ops['mixup']:.2f}x |"
                    for mode in INTERLEAVED_MODES]


COLUMNS = ["limit", "op", "pipeline", "numpy", "torch", "timm xK", "torchvision xK"]


def format_row(row: dict) -> str:
    cells = [row["size"], row["dtype"], row["mode"]]
    cells += [f"{row[c]:.2f}" if c in row else "-" for c in COLUMNS]
    cells.append(f"{row['gbs']:.1f} ({row['limit_name']})")
    cells.append(f"{row['op'] / row['limit']:.2f}x")
    cells.append(f"{row['numpy'] / row['op']:.1f}x" if "numpy" in row else "-")
    return "| " + " | ".join(cells) + " |"


def write_results(rows: list, args, interleaved: dict) -> None:
    header = ["size", "dtype", "mode"] + [f"{c} ms" for c in COLUMNS] + [
        "limit GB/s (read + write)", "op / limit", "numpy / op"]
    if args.device == "gpu":
        where = f"GPU ({torch.cuda.get_device_name()})"
        limit = "a device-to-device copy of the output bytes (memcpy)"
    else:
        where = f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)"
        limit = ("reading the B input images once and writing the B*K output images with "
                 "streaming (non-temporal) stores of non-zero data on as many threads (stream; "
                 "memcpy where the native helper is not built; a machine may write zeros faster "
                 "than data, and the operator writes images)")
    lines = [
        f"B={args.batch}, K={args.k}, {where}, best of {args.repeats} runs, ms per batch. "
        f"Regenerate: `python bench/bench_op.py --device {args.device} --repeats {args.repeats}`.",
        "`op` = DALI pipeline with multimix minus the same pipeline that only feeds the batch; "
        f"`limit` = {limit}: the memory limit, timed interleaved with the operator; its measured "
        "bandwidth (input + output bytes per second) is given. numpy / torch: the same multi-mix "
        "(sorted Beta ratios, a permutation) vectorised; timm / torchvision: their single "
        "mixup/cutmix called K times (float32 only). Caveat: the machine is shared with other "
        "jobs, so times are noisy (best of N; op and limit interleaved in the same run).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ] + [format_row(r) for r in rows] + [
        "",
        f"224x224x3 uint8 again, the feed and the three pipelines below timed in turn in one loop "
        f"(best of {2 * args.repeats}): every mode sees the same machine states, so these are the "
        "ratios to read (each row above is paired with its own feed and limit, at another time).",
        "",
    ] + format_interleaved(interleaved)
    path = RESULTS_DIR / f"op_{args.device}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
