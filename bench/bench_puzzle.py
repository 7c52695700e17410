"""Benchmark (not a test): Puzzle Mix mask time per batch (B=100, 32x32) for K = 1, 3, 5 with each
solver, and a training step (PreActResNet18-sized work is too slow on a CPU: the small CNN) with
Puzzle Mix K=1 vs K=5 vs plain mixup, in one run. Writes bench/results/puzzle_cpu.md.

    python bench/bench_puzzle.py [--batch 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from dali_multimix.torch import mixed_cross_entropy, multimix_batch
from dali_multimix.torch.puzzle import PuzzleMix, input_saliency
from train.models import SmallCNN

RESULTS = Path(__file__).resolve().parent / "results" / "puzzle_cpu.md"
# the inputs stand for CIFAR-100 images normalised with these statistics (0..255 scale, as given to
# fn.crop_mirror_normalize); Puzzle Mix needs them for its pixel-level term
MEAN, STD = [129.3, 124.1, 112.4], [68.2, 65.4, 70.4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(10, (args.batch,), generator=g)
    torch.manual_seed(0)
    model = SmallCNN(10, 3)
    saliency = input_saliency(model, x, y)
    partners = torch.randperm(args.batch, generator=g)
    lines = [f"Puzzle Mix on the CPU ({args.threads} threads), B={args.batch}, 32x32x3; median of "
             f"{args.repeats}.", "", "Mask time per batch (graph cuts for every sample and step), ms:", "",
             "| blocks per side | solver | processes | K=1 | K=3 | K=5 |", "|---|---|---|---|---|---|"]
    for block_num in (4, 8, 16):
        for solver, workers in (("exact", 1), ("exact", args.threads), ("swap", 1), ("swap", args.threads)):
            pm = PuzzleMix(solver=solver, workers=workers, mean=MEAN, std=STD)
            pixels = pm.pixels(x)
            row = []
            for k in (1, 3, 5):
                lam = torch.sort(torch.rand(args.batch, k, generator=g), 1).values
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    pm.masks(saliency, pixels, partners, lam, block_num)
                    times.append(time.perf_counter() - t0)
                row.append(1e3 * float(np.median(times)))
            lines.append(f"| {block_num} | {solver} | {workers} | " + " | ".join(f"{t:.0f}" for t in row) + " |")
            print(lines[-1], flush=True)
    lines += ["", "One SGD step of the small CNN (saliency pass + masks + forward/backward), ms:", "",
              "| feed | step ms |", "|---|---|"]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    feeds = {
        "mixup (multimix_batch k=1)": lambda: _mixup(x, y, 1, g),
        "Puzzle Mix K=1": lambda: PuzzleMix(1, generator=g, workers=args.threads, mean=MEAN, std=STD)(model, x, y),
        "multi-mix Puzzle Mix K=5": lambda: PuzzleMix(5, generator=g, workers=args.threads, mean=MEAN, std=STD)(model, x, y),
    }
    for name, feed in feeds.items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            images, own, partner, weights = feed()
            loss = mixed_cross_entropy(model(images), own, partner, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        lines.append(f"| {name} | {1e3 * float(np.median(times)):.0f} |")
        print(lines[-1], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {RESULTS}")


def _mixup(x, y, k, g):
    r = multimix_batch(x, y, k=k, generator=g)
    return (r.images.flatten(0, 1), y.repeat_interleave(k), r.partner_labels.repeat_interleave(k),
            r.weights.reshape(-1))


if __name__ == "__main__":
    main()
