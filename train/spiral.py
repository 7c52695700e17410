"""The spiral experiment (multi-mix paper, Sec. IV-A, Fig. 4): two interleaved spirals, 1,000
points, 40% for training with 20% of the training labels flipped; an MLP of 8 hidden layers of 6
units; manifold mixup at layer 1 or 2 (drawn per batch) with K=1 and K=5 against no mixup; Adam,
lr 0.01, L2 regularisation, 3,000 epochs, batch 256. Writes the decision boundaries of the three
and a table over seeds (mean +- std of test accuracy).

    python -m train.spiral [--seeds 5] [--epochs 3000] [--out outputs/spiral]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dali_multimix.torch import ManifoldMultiMix, mixed_cross_entropy

from .models import SpiralMLP

METHODS = {"no mixup": None, "manifold mixup (K=1)": 1, "multi-mix (K=5)": 5}


def make_spirals(n: int = 1000, noise: float = 0.5, seed: int = 0):
    """Two interleaved spirals, n points, labels 0/1; (x (n, 2) float32, y (n,) int64)."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.random(n // 2)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], 1)
    x = np.concatenate([arm, -arm]) + rng.normal(scale=noise, size=(n // 2 * 2, 2))
    y = np.concatenate([np.zeros(n // 2), np.ones(n // 2)]).astype(np.int64)
    return (x / 5).astype(np.float32), y


def split(x, y, seed: int, train_fraction: float = 0.4, flip: float = 0.2):
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(y))
    n_train = int(train_fraction * len(y))
    tr, te = order[:n_train], order[n_train:]
    y_train = y[tr].copy()
    flipped = rng.choice(n_train, int(flip * n_train), replace=False)
    y_train[flipped] = 1 - y_train[flipped]
    return (torch.from_numpy(x[tr]), torch.from_numpy(y_train)), (torch.from_numpy(x[te]), torch.from_numpy(y[te]))


def fit(train, k, seed: int, epochs: int, batch: int = 256, lr: float = 0.01, l2: float = 1e-4,
        alpha: float = 2.0):
    torch.manual_seed(seed)
    model = SpiralMLP()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=l2)
    g = torch.Generator().manual_seed(seed)
    x, y = train
    hooks = ManifoldMultiMix(model, ["layer1", "layer2"], k=k, alpha=alpha, generator=g) if k else None
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for start in range(0, len(y), batch):
            idx = order[start:start + batch]
            if hooks is None:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            else:
                with hooks:
                    logits = model(x[idx])
                    loss = mixed_cross_entropy(logits, *hooks.targets(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model, data) -> float:
    x, y = data
    return (model(x).argmax(1) == y).double().mean().item()


def run(seeds: int = 5, epochs: int = 3000, out: Path = Path("outputs/spiral"), progress: bool = True):
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    x, y = make_spirals()
    results = {name: [] for name in METHODS}
    boundaries = {}
    jobs = [(seed, name, k) for seed in range(seeds) for name, k in METHODS.items()]
    for seed, name, k in tqdm(jobs, desc="spiral", disable=not progress):
        train, test = split(x, y, seed)
        model = fit(train, k, seed, epochs)
        results[name].append(accuracy(model, test))
        if seed == 0:
            boundaries[name] = (model, train, test)
    plot(boundaries, results, out / "spiral.png")
    lines = ["| method | test accuracy (mean ± std over %d seeds) |" % seeds, "|---|---|"]
    for name, accs in results.items():
        lines.append(f"| {name} | {100 * np.mean(accs):.2f} ± {100 * np.std(accs):.2f} % |")
    (out / "spiral.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'spiral.png'} and {out / 'spiral.md'}")
    return results


def plot(boundaries: dict, results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.stack(torch.meshgrid(torch.linspace(-2.2, 2.2, 300), torch.linspace(-2.2, 2.2, 300),
                                      indexing="xy"), -1).reshape(-1, 2)
    fig, axes = plt.subplots(1, len(boundaries), figsize=(4.2 * len(boundaries), 4.2))
    for ax, (name, (model, (xtr, ytr), _)) in zip(np.atleast_1d(axes), boundaries.items()):
        with torch.no_grad():
            p = F.softmax(model(grid), 1)[:, 1].reshape(300, 300)
        ax.contourf(np.linspace(-2.2, 2.2, 300), np.linspace(-2.2, 2.2, 300), p.numpy(),
                    levels=20, cmap="RdBu_r", alpha=0.7)
        ax.scatter(xtr[:, 0], xtr[:, 1], c=ytr, cmap="RdBu_r", s=8, edgecolors="k", linewidths=0.3)
        ax.set_title(f"{name}\ntest acc {100 * np.mean(results[name]):.1f}% (mean over seeds)")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.spiral", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs per method (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3000, help="(default: %(default)s, the paper's)")
    parser.add_argument("--out", type=Path, default=Path("outputs/spiral"), help="(default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run(args.seeds, args.epochs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
