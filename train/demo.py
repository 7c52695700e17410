"""The main job's training part: a small CNN on Fashion-MNIST with 20% label noise, trained with
no mixing, mixup and multi-mix (K=5) through the DALI pipeline; prints a results table and the
paths of the plots. `python -m train.demo --help`."""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import load_config
from .loop import train

CONFIG = Path(__file__).resolve().parent / "configs" / "fashion_mnist_demo.yaml"
METHODS = ("none", "mixup", "multimix")


def compare(histories: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [100 * h["test_error"] for h in history], marker="o", label=name)
        axes[1].plot(epochs, [100 * h["ece"] for h in history], marker="o", label=name)
    axes[0].set(title="test error (%)", xlabel="epoch")
    axes[1].set(title="expected calibration error (%)", xlabel="epoch")
    axes[0].legend()
    fig.suptitle("Fashion-MNIST, 20% label noise")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"options over {CONFIG.name} (see python -m train --help)")
    args = parser.parse_args(argv)
    base = load_config(str(CONFIG), tuple(args.overrides))
    histories = {}
    for method in METHODS:
        cfg = load_config(str(CONFIG), tuple(args.overrides) + (f"method={method}",
                                                                f"out_dir={base.out_dir}/{method}"))
        print(f"--- {method} ---", flush=True)
        histories[method] = train(cfg)["history"]
    out = Path(base.out_dir)
    compare(histories, out / "comparison.png")
    print(f"\nFashion-MNIST, {int(100 * base.label_noise)}% label noise, {base.epochs} epochs, "
          f"{base.train_subset or 'all'} training images, K={base.k}")
    print("| method | test error | ECE | error under Gaussian noise | seconds / epoch |")
    print("|---|---|---|---|---|")
    for method, history in histories.items():
        last = history[-1]
        seconds = sum(h["epoch_seconds"] for h in history) / len(history)
        print(f"| {method} | {100 * last['test_error']:.2f}% | {100 * last['ece']:.2f}% | "
              f"{100 * last['noisy_test_error']:.2f}% | {seconds:.1f} |")
    print(f"\nplots: {(out / 'comparison.png').resolve()}")
    for method in METHODS:
        print(f"       {(out / method / 'curves.png').resolve()}  {(out / method / 'reliability.png').resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
