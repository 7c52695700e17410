"""Benchmark (not a test): samples per second of the ready pipelines on this machine, without
multimix and with it at K=1 and K=5, in one run: the image-folder pipeline over JPEGs written from
scikit-image's photos, and the array pipeline over Fashion-MNIST. Writes
bench/results/pipelines_<device>.md (quoted by the README).

    python bench/bench_pipelines.py [--device cpu|gpu] [--batches 20]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import pipelines

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_jpegs(root: Path, per_class: int = 64) -> Path:
    from skimage import data
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        img = getattr(data, name)()
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            Image.fromarray(np.roll(img, 3 * j, axis=1)).save(root / name / f"{j}.jpg", quality=90)
    return root


def samples_per_second(pipe, batches: int, batch_size: int) -> float:
    pipe.build()
    for _ in range(3):
        pipe.run()
    t0 = time.perf_counter()
    for _ in range(batches):
        pipe.run()
    return batches * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = pipelines.list_image_folder(write_jpegs(Path(tmp)), verify=False)
        fmnist = pipelines.fashion_mnist("train")
        cases = {
            "image folder (JPEG -> 224x224)": (
                lambda **kw: pipelines.image_folder_train_pipeline(
                    files, batch_size=64, size=224, num_threads=args.threads, device=args.device, **kw), 64),
            "arrays (Fashion-MNIST 28x28)": (
                lambda **kw: pipelines.array_train_pipeline(
                    fmnist, batch_size=256, num_threads=args.threads, device=args.device, **kw), 256),
        }
        for name, (make, batch) in cases.items():
            base = samples_per_second(make(mix=False), args.batches, batch)
            row = [name, base]
            for k in (1, 5):
                row.append(samples_per_second(make(k=k), args.batches, batch))
            rows.append(row)
            print(f"{name:32s} " + "  ".join(f"{v:9.0f}/s" for v in row[1:]), flush=True)
    lines = [f"Input samples per second ({args.device}, {args.threads} threads, {args.batches} "
             "batches after warm-up); K=5 emits 5 mixed images per input sample. Limit: the same "
             "pipeline without the operator (reading, decoding, augmenting); time / limit = limit "
             "samples/s over the pipeline's.", "",
             "| pipeline | limit: no multimix | K=1 | K=5 | K=1 time / limit | K=5 time / limit |",
             "|---|---|---|---|---|---|"]
    for name, base, k1, k5 in rows:
        lines.append(f"| {name} | {base:.0f} | {k1:.0f} | {k5:.0f} | {base / k1:.2f}x | {base / k5:.2f}x |")
    path = RESULTS_DIR / f"pipelines_{args.device}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
