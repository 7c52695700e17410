"""Benchmark (not a test): steps/s of the training loop (train/loop.py) with its statistics kept on
the device and read once per logging interval, against the old per-step host reads (config
`sync_every_step=true`: loss.item() and every parameter's gradient norm read back each step), in one
run, interleaved, on the same synthetic data. Writes bench/results/train_loop_<device>.md.

    python bench/bench_loop_sync.py [--device cpu] [--steps 16] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train.config import load_config  # noqa: E402
from train.loop import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=16, help="training steps per run (one epoch)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="small_cnn")
    args = parser.parse_args()
    rates = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        n = args.steps * args.batch
        for name, size in (("train", n), ("test", 64)):
            labels = np.arange(size) % 10
            np.savez(root / f"{name}.npz", labels=labels,
                     images=rng.integers(0, 256, (size, 32, 32, 3)).astype(np.uint8))
        for rep in range(args.repeats):
            for sync in (False, True):
                cfg = load_config(None, (f"data_path={root}", "dataset=npz", f"model={args.model}",
                                         "epochs=1", f"batch_size={args.batch}", "k=2", "method=multimix",
                                         f"device={args.device}", f"out_dir={root}/run{rep}{sync}",
                                         "progress=false", f"sync_every_step={str(sync).lower()}",
                                         "num_threads=2"))
                row = train(cfg)["history"][0]
                rates[sync].append(row["steps"] / row["epoch_seconds"])
                print(f"sync_every_step={sync}: {rates[sync][-1]:.2f} steps/s", flush=True)
    fast, slow = np.median(rates[False]), np.median(rates[True])
    lines = [f"Training loop (train/loop.py), method multimix K=2, {args.model} on 32x32x3, batch "
             f"{args.batch}, {args.steps} steps per run, device {args.device}, median of {args.repeats} "
             f"interleaved runs (one process; the machine is shared, so compare the ratio).", "",
             "| statistics | steps/s |", "|---|---|",
             f"| read every step (old loop, sync_every_step=true) | {slow:.2f} |",
             f"| on the device, read once per interval (now) | {fast:.2f} |", "",
             f"Ratio now / old: {fast / slow:.3f}."]
    out = REPO / "bench" / "results" / f"train_loop_{args.device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
