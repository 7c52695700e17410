"""Benchmark (not a test): one training step (forward + backward + SGD, a small CNN on the CPU)
fed by (a) the multimix DALI operator in the pipeline, (b) ``multimix_batch`` on tensors, (c) timm's
Mixup applied K times, (d) no mixing at the same B*K rows, all in one run. Time per step; writes
bench/results/train_step_cpu.md (quoted by the README).

    python bench/bench_train_step.py [--batch 64] [--k 5] [--steps 20]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator
from torch import nn

import dali_multimix
from dali_multimix.torch import MultimixIterator, mixed_cross_entropy, multimix_batch

RESULTS = Path(__file__).resolve().parent / "results" / "train_step_cpu.md"
MEAN, STD = [125.3, 123.0, 113.9], [63.0, 62.1, 66.7]


def small_cnn(classes: int = 10) -> nn.Module:
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))
    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(128, classes))


def dali_batches(images: np.ndarray, labels: np.ndarray, k: int, threads: int):
    samples, targets = list(images), [np.array([v], np.int64) for v in labels]

    @pipeline_def(batch_size=len(images), num_threads=threads, device_id=None, seed=0)
    def pipe():
        x = fn.external_source(source=lambda: samples, batch=True, layout="HWC")
        y = fn.external_source(source=lambda: targets, batch=True)
        x = fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout="CHW", mean=MEAN, std=STD,
                                     mirror=fn.random.coin_flip())
        out = dali_multimix.multimix(x, y, k=k)
        return out.images, y, out.partner_labels, out.weights

    p = pipe()
    p.build()
    with warnings.catch_warnings():  # an endless external source has no reader to name
        warnings.simplefilter("ignore")
        it = DALIGenericIterator(p, ["images", "labels", "partner_labels", "weights"], size=1 << 30)
    return iter(MultimixIterator(it))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.batch)
    normalised = ((torch.from_numpy(images).float() - torch.tensor(MEAN)) / torch.tensor(STD))
    normalised = normalised.permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(0)

    from timm.data import Mixup
    timm_mixup = Mixup(mixup_alpha=1.0, num_classes=10)
    dali_iter = dali_batches(images, labels, args.k, args.threads)

    def feed_dali():
        b = next(dali_iter)
        return b.images, lambda logits: mixed_cross_entropy(logits, b.labels, b.partner_labels, b.weights)

    def feed_tensor():
        r = multimix_batch(normalised, y, k=args.k, generator=gen)
        w = r.weights.reshape(-1)
        own, partner = y.repeat_interleave(args.k), r.partner_labels.repeat_interleave(args.k)
        return r.images.flatten(0, 1), lambda logits: mixed_cross_entropy(logits, own, partner, w)

    def feed_timm():
        pairs = [timm_mixup(normalised.clone(), y.clone()) for _ in range(args.k)]
        x = torch.cat([p[0] for p in pairs])
        target = torch.cat([p[1] for p in pairs])
        return x, lambda logits: F.cross_entropy(logits, target)

    def feed_none():
        x = normalised.repeat_interleave(args.k, dim=0)
        target = y.repeat_interleave(args.k)
        return x, lambda logits: F.cross_entropy(logits, target)

    feeds = {"DALI multimix op (in the pipeline)": feed_dali, "multimix_batch (torch)": feed_tensor,
             "timm Mixup x K": feed_timm, "no mixing (same B*K rows)": feed_none}
    # one model per feed; the feeds take turns step by step, so that the machine's state (other
    # jobs, clocks) weighs on all of them alike
    runs = {}
    for name in feeds:
        torch.manual_seed(0)
        model = small_cnn()
        runs[name] = (model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), [], [])
    for step in range(args.steps + 2):
        for name, feed in feeds.items():
            model, opt, times, mix_times = runs[name]
            t0 = time.perf_counter()
            x, loss_fn = feed()
            t1 = time.perf_counter()
            loss = loss_fn(model(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if step >= 2:  # warm-up
                times.append(t2 - t0)
                mix_times.append(t1 - t0)
    rows = [(name, 1e3 * np.median(t), 1e3 * np.median(m)) for name, (_, _, t, m) in runs.items()]
    limit = dict((n, t) for n, t, _ in rows)["no mixing (same B*K rows)"]
    for name, t, m in rows:
        print(f"{name:38s} step {t:8.2f} ms   of which data + mixing {m:7.2f} ms   {t / limit:.2f}x limit",
              flush=True)
    lines = [f"One SGD step of a small CNN (3 conv blocks) on 32x32x3, B={args.batch}, K={args.k} "
             f"(B*K={args.batch * args.k} rows), CPU, {args.threads} threads, median of "
             f"{args.steps} steps, the feeds taking turns step by step. Limit: the step of the same "
             f"B*K rows with no mixing (the model's own forward, backward and update).", "",
             "| feed | step ms | of which data + mixing ms | step / limit |", "|---|---|---|---|"]
    lines += [f"| {n} | {t:.2f} | {m:.2f} | {t / limit:.2f}x |" for n, t, m in rows]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
