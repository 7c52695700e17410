"""Benchmark of the multimix operator (not a test): time per batch of B=128 samples, K=5
interpolations, against the physical limit (a memcpy of the output bytes) and peers in the
same run: numpy, torch on the same tensors, timm's and torchvision's single mixup/cutmix called
K times. Prints a table and writes it to bench/results/op_cpu.md (quoted by the README).

    python bench/bench_op.py [--repeats 11] [--batch 128] [--k 5]
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

RESULTS = Path(__file__).resolve().parent / "results" / "op_cpu.md"


def best_ms(fn_, repeats: int) -> float:
    """Best of `repeats` runs after a warm-up (the least disturbed by the rest of the machine)."""
    fn_()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn_()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def paired_best_ms(with_op, baseline, repeats: int) -> tuple[float, float]:
    """Best times of two pipelines run alternately, so that both see the same machine."""
    with_op(), baseline()
    t_op, t_base = [], []
    for _ in range(repeats):
        for run, times in ((with_op, t_op), (baseline, t_base)):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    return 1e3 * min(t_op), 1e3 * min(t_base)


def dali_runner(batch: np.ndarray, k: int, mode: str | None, threads: int):
    """A CPU pipeline feeding the preloaded batch; with `mode` None it only feeds (the baseline
    whose time is subtracted to get the operator's own cost)."""
    samples = list(batch)
    labels = [np.array(i, np.int32) for i in range(len(batch))]

    @pipeline_def(batch_size=len(batch), num_threads=threads, device_id=None, seed=1,
                  prefetch_queue_depth=1)
    def pipe():
        x = fn.external_source(source=lambda: samples, batch=True, layout="HWC")
        y = fn.external_source(source=lambda: labels, batch=True)
        if mode is None:
            return x, y
        out = dali_multimix.multimix(x, y, k=k, mode=mode)
        return out.images, out.weights

    p = pipe()
    p.build()
    return lambda: p.run()


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
    lam = torch.sort(torch.distributions.Beta(1.0, 1.0).sample((len(x), k)), 1).values
    lam = lam.reshape(lam.shape + (1,) * (x.dim() - 1))
    partner = x[torch.randperm(len(x), generator=gen)]
    xf, pf = x[:, None].float(), partner[:, None].float()
    out = torch.lerp(xf, pf, lam)
    return out.round_().to(torch.uint8) if x.dtype == torch.uint8 else out


def timm_k_times(x: torch.Tensor, k: int, mode: str):
    from timm.data import Mixup

    mix = Mixup(mixup_alpha=1.0 if mode == "mixup" else 0.0,
                cutmix_alpha=1.0 if mode == "cutmix" else 0.0, num_classes=10)
    target = torch.zeros(len(x), dtype=torch.long)
    return lambda: [mix(x.clone(), target) for _ in range(k)]


def torchvision_k_times(x: torch.Tensor, k: int, mode: str):
    from torchvision.transforms import v2

    mix = v2.MixUp(num_classes=10) if mode == "mixup" else v2.CutMix(num_classes=10)
    target = torch.zeros(len(x), dtype=torch.long)
    chw = x.permute(0, 3, 1, 2)  # torchvision wants (B, C, H, W)
    return lambda: [mix(chw, target) for _ in range(k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for side in (32, 224):
        for dtype in (np.uint8, np.float32):
            x = rng.integers(0, 256, (args.batch, side, side, 3)).astype(dtype)
            t_memcpy = best_ms(threaded_memcpy(x.nbytes * args.k, args.threads), args.repeats)
            feed = dali_runner(x, args.k, None, args.threads)
            xt = torch.from_numpy(x)
            gen = torch.Generator().manual_seed(0)
            for mode in ("mixup", "cutmix", "fmix"):
                t_pipe, t_feed = paired_best_ms(dali_runner(x, args.k, mode, args.threads), feed,
                                                args.repeats)
                t_op = max(t_pipe - t_feed, 1e-3)
                row = dict(size=f"{side}x{side}x3", dtype=np.dtype(dtype).name, mode=mode,
                           memcpy=t_memcpy, op=t_op, pipeline=t_pipe)
                if mode == "mixup":
                    row["numpy"] = best_ms(lambda: numpy_mixup(x, args.k, rng), args.repeats)
                    row["torch"] = best_ms(lambda: torch_mixup(xt, args.k, gen), args.repeats)
                if dtype == np.float32 and mode != "fmix":  # timm / torchvision: float, no fmix
                    row["timm xK"] = best_ms(timm_k_times(xt, args.k, mode), args.repeats)
                    row["torchvision xK"] = best_ms(torchvision_k_times(xt, args.k, mode),
                                                    args.repeats)
                rows.append(row)
                print(format_row(row), flush=True)
    write_results(rows, args)


COLUMNS = ["memcpy", "op", "pipeline", "numpy", "torch", "timm xK", "torchvision xK"]


def format_row(row: dict) -> str:
    cells = [row["size"], row["dtype"], row["mode"]]
    cells += [f"{row[c]:.2f}" if c in row else "-" for c in COLUMNS]
    cells.append(f"{row['op'] / row['memcpy']:.2f}x")
    cells.append(f"{row['numpy'] / row['op']:.1f}x" if "numpy" in row else "-")
    return "| " + " | ".join(cells) + " |"


def write_results(rows: list, args) -> None:
    header = ["size", "dtype", "mode"] + [f"{c} ms" for c in COLUMNS] + ["op / memcpy",
                                                                         "numpy / op"]
    lines = [
        f"B={args.batch}, K={args.k}, CPU ({platform.processor() or platform.machine()}, "
        f"{args.threads} threads), best of {args.repeats} runs, ms per batch.",
        "`op` = DALI pipeline with multimix minus the same pipeline that only feeds the batch; "
        "`memcpy` copies the output bytes (B*K images) once, on as many threads: the physical "
        "limit. numpy / torch: "
        "the same multi-mix (sorted Beta ratios, a permutation) vectorised; timm / torchvision: "
        "their single mixup/cutmix called K times (float32 only).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ] + [format_row(r) for r in rows]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
