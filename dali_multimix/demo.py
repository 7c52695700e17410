"""The main job: render multi-mix's K ordered interpolations between pairs of real photos.

Real photos (shipped with scikit-image) go through a real DALI pipeline that uses the multimix
operator; one row per mode (mixup, cutmix, fmix) shows x, x_hat_1 ... x_hat_K, x' with the weight
of each step, like Figure 3 of the multi-mix paper. Run `multimix-demo --help`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from nvidia.dali import fn, pipeline_def

from . import MAX_K, MODES, multimix

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def load_photos(size: int) -> np.ndarray:
    """scikit-image's sample photos, centre-cropped and resized: (4, size, size, 3) uint8."""
    from PIL import Image
    from skimage import data

    out = []
    for name in PHOTOS:
        img = getattr(data, name)()
        h, w = img.shape[:2]
        s = min(h, w)
        crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC)))
    return np.stack(out)


def mix_photos(photos: np.ndarray, *, mode: str, k: int, alpha: float, seed: int):
    """Runs the DALI pipeline once: photo i is mixed with photo i+1 (mod 4)."""
    batch = len(photos)
    partners = [np.array((i + 1) % batch, np.int32) for i in range(batch)]

    @pipeline_def(batch_size=batch, num_threads=2, device_id=None, seed=seed)
    def pipeline():
        images = fn.external_source(source=lambda: list(photos), batch=True, layout="HWC")
        labels = fn.external_source(source=lambda: [np.array(i, np.int32) for i in range(batch)],
                                    batch=True)
        given_partners = fn.external_source(source=lambda: partners, batch=True)
        out = multimix(images, labels, k=k, alpha=alpha, mode=mode, partners=given_partners)
        return out.images, out.weights

    pipe = pipeline()
    pipe.build()
    mixed, weights = pipe.run()
    return np.array(mixed.as_tensor()), np.array(weights.as_tensor())


def render_grid(rows: dict, photos: np.ndarray, pair: int, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = next(iter(rows.values()))[0].shape[1]
    own, partner = photos[pair], photos[(pair + 1) % len(photos)]
    fig, axes = plt.subplots(len(rows), k + 2, figsize=(1.9 * (k + 2), 2.1 * len(rows)),
                             squeeze=False)
    for r, (mode, (mixed, weights)) in enumerate(rows.items()):
        panels = [(own, "x")] + [(mixed[pair, s], f"w={weights[pair, s]:.2f}") for s in range(k)]
        panels.append((partner, "x'"))
        for c, (img, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(mode, fontsize=11)
    fig.suptitle(f"multi-mix: K={k} ordered interpolations (DALI operator, CPU)", fontsize=12)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Render multi-mix's K ordered interpolations of real photos (one row per "
                    "mode: mixup, cutmix, fmix) through a DALI pipeline with the multimix operator.")
    parser.add_argument("--output", type=Path, default=Path("outputs/interpolations.png"),
                        help="PNG file to write (default: %(default)s)")
    parser.add_argument("--k", type=int, default=5, help=f"interpolations per pair, 1..{MAX_K} "
                        "(default: %(default)s, the paper's)")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="mixing ratios ~ Beta(alpha, alpha) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=3, help="random seed (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="photo side in pixels (default: %(default)s)")
    parser.add_argument("--pair", type=int, default=0, choices=range(len(PHOTOS)),
                        help="which photo pair to show, 0..3 (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.k <= MAX_K:
        parser.error(f"--k must be from 1 to {MAX_K}; got {args.k}")

    photos = load_photos(args.size)
    rows = {mode: mix_photos(photos, mode=mode, k=args.k, alpha=args.alpha, seed=args.seed)
            for mode in MODES}
    render_grid(rows, photos, args.pair, args.output)
    for mode, (_, weights) in rows.items():
        print(f"{mode:>6}: weights {np.array2string(weights[args.pair], precision=3)}")
    print(f"wrote {args.output.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
