"""Benchmark (not a test): the harness's training pipeline rebuilt every epoch (before: a new
DALI pipeline per epoch, seeded from (seed, epoch, rank)) against one pipeline reused across
epochs (after: train.data.TrainLoader, built once with DALI checkpointing, reset at each epoch's
end, its state saved after each epoch as a checkpoint does). Data only, no model: the epoch
start-up time (start of the epoch to its first batch, the build included where there is one),
the steps/s over the whole epoch, and the time of TrainLoader.state(). The two are interleaved,
epoch by epoch, on a synthetic CIFAR-sized array set and a small JPEG image folder; medians.
Writes bench/results/pipeline_reuse_cpu.md.

    python bench/bench_pipeline_reuse.py [--epochs 8] [--samples 4096] [--images 512]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy  # noqa: E402

import pipelines  # noqa: E402
from dali_multimix.torch import MultimixIterator  # noqa: E402
from train.config import load_config  # noqa: E402
from train.data import MIXED_NAMES, TrainLoader, epoch_seed, load_data  # noqa: E402
from train.methods import METHODS, make_mixer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline_reuse_cpu.md"


def rebuilt(cfg, method, data, epoch: int):
    """The loader as train.data built it before the pipeline was reused: a new pipeline per epoch."""
    shape = data.sample_shape if data.arrays else (3, cfg.image_size, cfg.image_size)
    mixer = make_mixer(method, k=cfg.k, alpha=cfg.alpha, lambda_sampling=cfg.lambda_sampling,
                       lambda_scope=cfg.lambda_scope, cutout=cfg.cutout, sample_shape=shape)
    common = dict(batch_size=cfg.batch_size, seed=epoch_seed(cfg, epoch, 0), num_threads=cfg.num_threads,
                  mixer=mixer)
    if data.arrays:
        pipe = pipelines.array_train_pipeline(data.train, pad=cfg.pad, mean=data.mean, std=data.std,
                                              first_epoch=epoch, drop_last=True, **common)
        pipe.build()
        return MultimixIterator(DALIGenericIterator(pipe, MIXED_NAMES))
    pipe = pipelines.image_folder_train_pipeline(data.train, size=cfg.image_size, mean=data.mean,
                                                 std=data.std, crop=cfg.image_crop, pad=cfg.pad, **common)
    pipe.build()
    return MultimixIterator(DALIGenericIterator(pipe, MIXED_NAMES, reader_name="Reader",
                                                last_batch_policy=LastBatchPolicy.DROP))


def timed_epoch(make) -> tuple[float, float, int]:
    """(seconds to the first batch, seconds for the epoch, steps) of the loader `make()` returns."""
    t0 = time.perf_counter()
    first, steps = None, 0
    for _ in make():
        steps += 1
        if first is None:
            first = time.perf_counter() - t0
    return first, time.perf_counter() - t0, steps


def compare(name: str, cfg, epochs: int) -> list:
    method, data = METHODS["multimix"], load_data(cfg)
    reused = TrainLoader(cfg, method, data, 0)  # built before the first timed epoch: see the note
    rows = {"before": [], "after": []}
    state_s = []
    for epoch in range(epochs):  # interleaved: a rebuilt epoch, then a reused one
        rows["before"].append(timed_epoch(lambda: rebuilt(cfg, method, data, epoch)))
        rows["after"].append(timed_epoch(lambda: reused))
        t0 = time.perf_counter()
        reused.state()
        state_s.append(time.perf_counter() - t0)
    build = timed_epoch(lambda: TrainLoader(cfg, method, data, 0))[0]
    out = []
    for key, label in (("before", "rebuilt every epoch (before)"), ("after", "reused (after)")):
        first = statistics.median(r[0] for r in rows[key][1:])  # epoch 0 warms caches in both
        steps = statistics.median(r[2] / r[1] for r in rows[key][1:])
        out.append(f"| {name} | {label} | {1000 * first:.1f} | {steps:.1f} | {rows[key][0][2]} |")
    out.append(f"| {name} | TrainLoader.state() per epoch | {1000 * statistics.median(state_s):.2f} | | |")
    out.append(f"| {name} | one TrainLoader build + first batch | {1000 * build:.1f} | | |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    common = ("model=small_cnn", "k=5", "batch_size=64", "pad=4", "progress=false",
              f"num_threads={args.threads}", "method=multimix")
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        labels = rng.integers(0, 10, args.samples)
        np.savez(root / "train.npz", images=rng.integers(0, 256, (args.samples, 32, 32, 3), dtype=np.uint8),
                 labels=labels)
        np.savez(root / "test.npz", images=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
                 labels=labels[:64])
        lines += compare("arrays 32x32", load_config(None, ("dataset=npz", f"data_path={root}",
                                                            *common)), args.epochs)
        folder = root / "folder"
        for split, n in (("train", args.images), ("val", 8)):
            for i in range(n):
                (folder / split / f"c{i % 4}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                    folder / split / f"c{i % 4}" / f"{i}.jpg")
        lines += compare("JPEG folder 64x64", load_config(None, (
            "dataset=image_folder", f"data_path={folder}", "image_size=56", "image_crop=pad",
            "batch_size=16", *common[:2], *common[3:])), args.epochs)
    text = "\n".join([
        f"The harness's multimix training pipeline (k=5, CPU, {args.threads} DALI threads), data only: "
        f"rebuilt every epoch against one pipeline reused across epochs, interleaved epoch by epoch, "
        f"median of epochs 2..{args.epochs} (the first warms caches). `python bench/bench_pipeline_reuse.py`.",
        "",
        "| data | loader | epoch start-up ms (to the first batch) | steps/s over the epoch | steps/epoch |",
        "|---|---|---|---|---|",
        *lines, "",
        "Caveat: a shared 2-core machine; other jobs ran at the same time, so single numbers vary by "
        "tens of percent; the interleaving spreads that load over both loaders alike.", ""])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
