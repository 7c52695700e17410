"""Benchmark (not a test): Puzzle Mix mask time per batch (B=100, 32x32) for K = 1, 3, 5 with each
solver, and one training step of the small CNN fed by multi-mix input mixup K=5 and by Puzzle Mix
(K=1, K=5), with a breakdown (saliency pass, masks, transport + mix, forward/backward), in one run.
Solvers and feeds are interleaved within each repeat and the best of N is kept (the machine is
shared: noisy). Writes bench/results/puzzle_cpu.md.

    python bench/bench_puzzle.py [--batch 100] [--repeats 5] [--threads 2] [--device cpu|cuda]

The step is timed for each block count the original draws (2, 4, 8, 16 per side, uniformly) and
reported as their mean: the expected cost of a step (the best of N per block count). --device
cuda runs the model, saliency, transport and mixing on the GPU (the masks' graph cuts stay on the
CPU, as in the original) and writes bench/results/puzzle_cuda.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import torch

from dali_multimix.torch import mixed_cross_entropy, multimix_batch
from dali_multimix.torch.graphcut import native_available
from dali_multimix.torch.puzzle import PuzzleMix, input_saliency
from train.models import SmallCNN

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COMMAND = "python bench/bench_puzzle.py --batch 100 --repeats 5"
BLOCK_NUMS = (2, 4, 8, 16)  # the original's CIFAR draw: 2 ** randint(1, 5)
# the inputs stand for CIFAR-100 images normalised with these statistics (0..255 scale, as given to
# fn.crop_mirror_normalize); Puzzle Mix needs them for its pixel-level term
MEAN, STD = [129.3, 124.1, 112.4], [68.2, 65.4, 70.4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU; none is visible to torch")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def now() -> float:  # wall time once the GPU's queued work is done
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(10, (args.batch,), generator=g)
    torch.manual_seed(0)
    model = SmallCNN(10, 3)
    saliency = input_saliency(model, x, y)
    partners = torch.randperm(args.batch, generator=g)
    solvers = [("maxflow", 1), ("maxflow", args.threads)]
    if importlib.util.find_spec("gco") is not None:  # gco-wrapper: sdist only, not everywhere
        solvers.append(("swap", args.threads))
    if native_available():
        solvers.insert(0, ("native", args.threads))
    where = (f"the CPU ({args.threads} threads)" if device.type == "cpu" else
             f"{torch.cuda.get_device_name()} (masks: graph cuts on the CPU, {args.threads} threads)")
    lines = [f"Puzzle Mix on {where}, B={args.batch}, 32x32x3; best of "
             f"{args.repeats}, solvers interleaved in each repeat (times are noisy on a shared "
             f"machine: compare ratios within this table).",
             f"Regenerate: `{COMMAND}{' --device cuda' if device.type == 'cuda' else ''}`.", "",
             "Mask time per batch (energies + graph cuts for every sample and step), ms. "
             "`maxflow` is the PyMaxflow exact path (graph by graph, worker processes when "
             "workers > 1; its energies now come from the same vectorised code as native's, so it "
             "is faster than the pre-issue path); `native` the library's batched path: the energies "
             "(csrc/puzzle_energy.h, the torch code's numbers bit for bit) and the cuts (the K steps "
             "of a sample cut nested, each level of the bisection one warm-started max-flow) in one "
             "call over threads (puzzle.puzzle_masks_native). The limit column is the "
             "speed-up of native over the best maxflow row at K=5 (goal >= 10x at 16 blocks).", "",
             "| blocks per side | solver | workers / threads | K=1 | K=3 | K=5 | maxflow best / this, K=5 |",
             "|---|---|---|---|---|---|---|"]
    ks = (1, 3, 5)
    for block_num in (4, 8, 16):
        best = {(s, w, k): float("inf") for s, w in solvers for k in ks}
        lams = {k: torch.sort(torch.rand(args.batch, k, generator=g), 1).values for k in ks}
        mixers = {(s, w): PuzzleMix(solver=s, workers=w if s != "native" else 1, mean=MEAN, std=STD)
                  for s, w in solvers}
        pixels = mixers[solvers[0]].pixels(x)
        for s, w in solvers:  # warm-up (worker processes start, library loads)
            mixers[s, w].masks(saliency, pixels, partners, lams[1], block_num)
        for _ in range(args.repeats):
            for k in ks:
                for s, w in solvers:
                    t0 = time.perf_counter()
                    mixers[s, w].masks(saliency, pixels, partners, lams[k], block_num)
                    best[s, w, k] = min(best[s, w, k], time.perf_counter() - t0)
        ref = min(best[s, w, 5] for s, w in solvers if s == "maxflow")
        for s, w in solvers:
            row = [1e3 * best[s, w, k] for k in ks]
            lines.append(f"| {block_num} | {s} | {w} | " + " | ".join(f"{t:.1f}" for t in row)
                         + f" | {ref / best[s, w, 5]:.1f}x |")
            print(lines[-1], flush=True)
    lines += ["", "One SGD step of the small CNN (B*K rows), ms: for each block count (2, 4, 8, 16 "
              f"per side) the best of {args.repeats}, then their mean (the original draws them "
              "uniformly); feeds interleaved. Limit: the multi-mix input-mixup K=5 step of the same "
              "model (goal: multi-mix Puzzle Mix K=5 <= 1.5x of it). Breakdown: saliency pass (the "
              "extra forward/backward), masks (energies + cuts), transport + mix, then the training "
              "forward/backward/SGD. Feeds: `native` = the library's graph cuts and its block transport "
              "on CPU tensors (on CUDA tensors the transport rounds replayed as CUDA graphs); "
              "`maxflow` = PyMaxflow in worker processes and the transport rounds in torch "
              "operations (the path without the library; CUDA graphs on a GPU too).", "",
              "| feed | step ms | / mixup K=5 step | saliency | masks | transport + mix | fwd/bwd/SGD |"
              + "".join(f" step, {b} blocks |" for b in BLOCK_NUMS),
              "|---|---|---|---|---|---|---|" + "---|" * len(BLOCK_NUMS)]
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    solver = "native" if native_available() else "exact"
    puzzle = {f"Puzzle Mix K=1 ({solver})": PuzzleMix(1, generator=g, mean=MEAN, std=STD, solver=solver),
              f"multi-mix Puzzle Mix K=5 ({solver})": PuzzleMix(5, generator=g, mean=MEAN, std=STD, solver=solver),
              f"multi-mix Puzzle Mix K=5 (maxflow, {args.threads} workers)": PuzzleMix(5, generator=g, mean=MEAN, std=STD,
                                                                          solver="maxflow", workers=args.threads)}
    names = ["multi-mix input mixup K=5 (multimix_batch)"] + list(puzzle)
    best = {(n, b): [float("inf")] * 5 for n in names for b in BLOCK_NUMS}
    gen = torch.Generator().manual_seed(0)  # multimix_batch draws on the CPU whatever the device
    for rep in range(args.repeats + 1):  # the first round warms up
        for block_num in BLOCK_NUMS:
            for name in names:
                parts = [0.0] * 4
                t0 = now()
                if name in puzzle:
                    pm = puzzle[name]
                    s = input_saliency(model, x, y)
                    t1 = now()
                    _, prt, lam = pm.sample(args.batch, 32, g)
                    with torch.no_grad():
                        mask = pm.masks(s, pm.pixels(x), prt, lam, block_num)
                    t2 = now()
                    mixed = pm.compose(x, s, prt, mask)
                    k = pm.k
                    images, weights = mixed.images.flatten(0, 1), mixed.weights.reshape(-1)
                    prt = prt.to(device)
                    own, partner = y.repeat_interleave(k), y[prt].repeat_interleave(k)
                    t3 = now()
                    parts[:3] = [t1 - t0, t2 - t1, t3 - t2]
                else:
                    r = multimix_batch(x, y, k=5, generator=gen)
                    images, weights = r.images.flatten(0, 1), r.weights.reshape(-1)
                    own, partner = y.repeat_interleave(5), r.partner_labels.repeat_interleave(5)
                    t3 = now()
                    parts[2] = t3 - t0
                loss = mixed_cross_entropy(model(images), own, partner, weights)
                opt.zero_grad()
                loss.backward()
                opt.step()
                t4 = now()
                parts[3] = t4 - t3
                if rep and t4 - t0 < best[name, block_num][0]:
                    best[name, block_num] = [t4 - t0] + parts
    mean = {n: [sum(best[n, b][i] for b in BLOCK_NUMS) / len(BLOCK_NUMS) for i in range(5)] for n in names}
    ref = mean[names[0]][0]
    for name in names:
        total, *parts = mean[name]
        lines.append(f"| {name} | {1e3 * total:.0f} | {total / ref:.2f}x | "
                     + " | ".join(f"{1e3 * p:.0f}" for p in parts) + " |"
                     + "".join(f" {1e3 * best[name, b][0]:.0f} |" for b in BLOCK_NUMS))
        print(lines[-1], flush=True)
    RESULTS = RESULTS_DIR / f"puzzle_{device.type}.md"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
