"""The main job's training part (`make demo`): what multi-mix does and why, in a few minutes.

1. Why: the gradient variance of multi-mix against K at fixed weights (Shen et al., Prop. III.1)
   and against large-batch mixup at equal compute (Prop. III.2), measured with
   ``python -m train.evidence variance --quick`` (the spiral MLP, under a minute).
2. What it does to training: a small CNN on Fashion-MNIST with 20% label noise, trained with no
   mixing, mixup and multi-mix (K=5) for the same epochs, and mixup for K times the epochs (the same
   compute as multi-mix: as many rows through the network); a table and one comparison plot.

`python -m train.demo --help`; `key=value` overrides go to the training config.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import load_config
from .loop import train

CONFIG = Path(__file__).resolve().parent / "configs" / "fashion_mnist_demo.yaml"


def runs(k: int, equal_compute: bool) -> list:
    """(label, method, epoch factor, rows per image per epoch) of the comparison."""
    out = [("none", "none", 1, 1), ("mixup", "mixup", 1, 1), (f"multi-mix K={k}", "multimix", 1, k)]
    if equal_compute and k > 1:
        out.append((f"mixup, equal compute ({k}x epochs)", "mixup", k, 1))
    return out


def compare(histories: dict, path: Path, title: str) -> None:
    """Test error (clean and under Gaussian input noise), ECE and the surrogate E||g||^2 against the
    training compute, in epochs of plain training (rows through the network / training images)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    panels = (("test_error", "clean test error (%)", 100), ("noisy_test_error", "test error under Gaussian input noise (%)", 100),
              ("ece", "expected calibration error (%)", 100), ("mean_sq_grad_norm", "E||g||² per step (paper Fig. 8)", 1))
    for name, (history, rows) in histories.items():
        compute = [(i + 1) * rows for i in range(len(history))]
        for ax, (key, label, scale) in zip(axes, panels):
            style = dict(ls="--", marker="s") if "equal compute" in name else dict(ls="-", marker="o")
            ax.plot(compute, [scale * h[key] for h in history], ms=4, label=name, **style)
    for ax, (key, label, _) in zip(axes, panels):
        ax.set(title=label, xlabel="compute (epochs of plain training)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[3].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(histories: dict, seconds: dict, header: str) -> str:
    """The results table (markdown), as the README quotes it."""
    lines = [header, "",
             "| method | epochs | compute (x plain epoch) | test error | ECE | error under Gaussian noise | seconds |",
             "|---|---|---|---|---|---|---|"]
    for name, (history, rows) in histories.items():
        last = history[-1]
        lines.append(f"| {name} | {len(history)} | {len(history) * rows} | {100 * last['test_error']:.2f}% | "
                     f"{100 * last['ece']:.2f}% | {100 * last['noisy_test_error']:.2f}% | {seconds[name]:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"options over {CONFIG.name} (see python -m train --help)")
    parser.add_argument("--no-variance", action="store_true", help="skip the gradient-variance part")
    parser.add_argument("--no-equal-compute", action="store_true",
                        help="skip the mixup run with K times the epochs")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tty = sys.stderr.isatty()
    # a demo reruns from scratch (overwrite its own out_dir); no progress bars in a log file
    overrides = ("overwrite=true",) + tuple(args.overrides) + (() if tty else ("progress=false",))
    base = load_config(str(CONFIG), overrides)
    out = Path(base.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    variance_paths = []
    if not args.no_variance:
        from .evidence import VarianceConfig, run_variance

        print("=== 1. why: gradient variance at fixed weights (spiral MLP, python -m train.evidence "
              "variance --quick) ===", flush=True)
        res = run_variance(VarianceConfig.quick(), out / "evidence", progress=tty)
        spiral = res["tasks"]["spiral"]
        for mode, v in spiral["prop_III_1"].items():
            r = v["ratio_to_k1"]["9"]
            print(f"  {mode}: Var(K=9) / Var(K=1) = {r[0]:.2f} [95% CI {r[1]:.2f}, {r[2]:.2f}]")
        for mode, c in spiral["prop_III_2"].items():
            ratios = ", ".join(f"B={b}: {r[0]:.2f}" for b, r in zip(c["batches"], c["ratio"]))
            print(f"  {mode}, multi-mix / large-batch mixup at equal compute (K={c['k']}): {ratios}; "
                  f"crossing B0: {'none in range' if c['b0_crossing'] is None else round(c['b0_crossing'])}"
                  f" (Eq. 11 fit: B0 ~ {c['fit']['B0']:.0f})")
        variance_paths = sorted((out / "evidence").glob("*.png"))

    print(f"\n=== 2. what it does: Fashion-MNIST, small CNN, {int(100 * base.label_noise)}% label noise ===",
          flush=True)
    histories, seconds = {}, {}
    for label, method, factor, rows in runs(base.k, not args.no_equal_compute):
        tag = method if factor == 1 else f"{method}_x{factor}"
        cfg = load_config(str(CONFIG), overrides + (f"method={method}", f"epochs={base.epochs * factor}",
                                                    f"out_dir={out}/{tag}"))
        print(f"--- {label}: {cfg.epochs} epochs ---", flush=True)
        t0 = time.perf_counter()
        histories[label] = (train(cfg)["history"], rows)
        seconds[label] = time.perf_counter() - t0
    n_train = base.train_subset or "all"
    header = (f"Fashion-MNIST, {n_train} training images with {int(100 * base.label_noise)}% of the labels "
              f"flipped, {base.test_subset or 'all'} test images, small CNN, batch {base.batch_size}, "
              f"{base.optimizer} lr {base.lr} {base.schedule}, seed {base.seed}, one run each. Equal epochs "
              f"({base.epochs}) for none / mixup / multi-mix K={base.k} (multi-mix does {base.k}x the "
              f"gradient computations); the last row is mixup at multi-mix's compute. "
              f"Generated by `make demo` (`python -m train.demo`).")
    text = table(histories, seconds, header)
    (out / "results.md").write_text(text)
    title = (f"Fashion-MNIST ({n_train} images, {int(100 * base.label_noise)}% label noise), small CNN: none, mixup, "
             f"multi-mix K={base.k} for {base.epochs} epochs"
             + (f"; mixup for {base.k * base.epochs} epochs (equal compute)" if not args.no_equal_compute else ""))
    compare(histories, out / "comparison.png", title)
    print("\n" + text)
    print(f"Caveat: one seed and {base.epochs} epochs on {n_train} images; differences of a point or two are within "
          "seed-to-seed noise (not measured here). Equal epochs give multi-mix K times the compute; "
          "compare it with the equal-compute mixup row for the cost-fair reading.")
    print(f"\nOutputs went to {out.resolve()} ({(time.perf_counter() - started) / 60:.1f} min):")
    print(f"  results table    {(out / 'results.md').resolve()}")
    print(f"  comparison plot  {(out / 'comparison.png').resolve()}")
    for p in variance_paths:
        print(f"  variance plot    {p.resolve()}")
    for label, method, factor, _ in runs(base.k, not args.no_equal_compute):
        tag = method if factor == 1 else f"{method}_x{factor}"
        print(f"  {label:<34} {(out / tag / 'curves.png').resolve()}  reliability.png, metrics.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
