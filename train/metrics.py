"""Evaluation metrics and plots: top-1 error, expected calibration error with its reliability
diagram (M equal-width confidence bins, as in the multi-mix paper), training curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10):
    """ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)| over `bins` equal-width bins of the top-1
    confidence (Guo et al. 2017), bin m being I_m = ((m-1)/M, m/M] as in the multi-mix paper
    (Sec. IV-H): a confidence on an edge belongs to the bin below it. Returns (ece, per-bin
    accuracy, confidence, count)."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    conf = conf.double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # bucketize (right=False): index i with edges[i] < conf <= edges[i+1], i.e. (lo, hi]
    index = torch.clamp(torch.bucketize(conf, edges[1:-1], right=False), 0, bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    acc = torch.bincount(index, weights=correct, minlength=bins) / count.clamp(min=1)
    mean_conf = torch.bincount(index, weights=conf, minlength=bins) / count.clamp(min=1)
    ece = (count / len(labels) * (acc - mean_conf).abs()).sum().item()
    return ece, acc.numpy(), mean_conf.numpy(), count.numpy()


def summarise(history: list) -> dict:
    """The run's result: the last epoch's metrics and, with a validation set, the epoch of the
    lowest validation error and its test metrics (the model selected by validation, as the
    paper's speech experiment, Sec. IV-G)."""
    if not history:
        return {}
    last = history[-1]
    out = {"epochs": last["epoch"], "final": {k: v for k, v in last.items() if k != "epoch"}}
    if "val_error" in last:  # the first epoch of the lowest validation error
        best = min(history, key=lambda row: (row["val_error"], row["epoch"]))
        out.update(best_val_epoch=best["epoch"], best_val_error=best["val_error"],
                   test_error_at_best_val=best["test_error"], ece_at_best_val=best["ece"])
    return out


def reliability_diagram(acc, conf, count, ece: float, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = len(acc)
    centres = (np.arange(bins) + 0.5) / bins
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    has = count > 0
    ax.bar(centres[has], acc[has], width=1 / bins, edgecolor="black", color="#4c72b0", label="accuracy")
    # the gap between accuracy and mean confidence, above (over-) or below (under-confident)
    ax.bar(centres[has], (conf - acc)[has], bottom=acc[has], width=1 / bins, facecolor="none",
           edgecolor="#c44e52", hatch="//", linewidth=1.2, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"{title}\nECE = {100 * ece:.2f}%")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(history: list, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].plot(epochs, [100 * h["test_error"] for h in history], marker="o", label="clean")
    axes[1].plot(epochs, [100 * h["noisy_test_error"] for h in history], marker="o", label="Gaussian noise")
    axes[1].set(title="test error (%)", xlabel="epoch")
    axes[1].legend()
    axes[2].plot(epochs, [100 * h["ece"] for h in history], marker="o")
    axes[2].set(title="ECE (%)", xlabel="epoch")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
