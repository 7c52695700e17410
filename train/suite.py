"""python -m train.suite [--seeds 0 1 2] [--only NAME ...] [--report-only] [key=value ...]

The evidence suite (issue "Evidence", part 2): on clean Fashion-MNIST at CPU scale, every method
of the paper's Table I that runs here with K=1 (the original) and K=5 (multi-mix, Shen et al.),
large-batch mixup and batch augmentation with mixup at multi-mix's compute (Table II), and the
K ablation of input mixup (Fig. 6: K in 1, 2, 3, 5, 7) with the time per epoch (Fig. 7).
Table II's comparisons have K*B rows per step as multi-mix: large-batch mixup (batch K*B, so K
times fewer steps per epoch) and batch augmentation with mixup (K mixed copies of each image:
multi-mix's compute per epoch).

Each run trains train/configs/fashion_mnist_suite.yaml with the run's method and K, once per
seed, into outputs/suite/<run>/seed<N>; a run already finished is read, not repeated, and an
interrupted one resumes from its checkpoint (resume_if_exists), so the suite can be stopped and
started again. Runs go seed by seed (all runs of seed 0 first), so a partial suite is usable.
The report (mean ± std over seeds; differences paired by seed with a 95% t interval; curves;
the K ablation and time per epoch) goes to docs/evidence/suite.{md,json} and PNGs beside them.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

from .config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "train" / "configs" / "fashion_mnist_suite.yaml"
REPORT = REPO / "docs" / "evidence" / "suite"
METRICS = ("test_error", "ece", "noisy_test_error")
# two-sided 95% Student t quantiles by degrees of freedom (n - 1 seeds)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


class Run(NamedTuple):
    name: str
    method: str
    k: int
    family: str       # the K=1 method this run extends (its row in the paired table)
    overrides: tuple = ()


RUNS: List[Run] = [
    Run("none", "none", 1, "none"),
    Run("mixup", "mixup", 1, "mixup"),
    Run("multimix K=5", "multimix", 5, "mixup"),
    Run("manifold mixup", "manifold_mixup", 1, "manifold mixup"),
    Run("multimix manifold K=5", "multimix_manifold", 5, "manifold mixup"),
    Run("cutmix", "cutmix", 1, "cutmix"),
    Run("multimix cutmix K=5", "multimix_cutmix", 5, "cutmix"),
    Run("fmix", "fmix", 1, "fmix"),
    Run("multimix fmix K=5", "multimix_fmix", 5, "fmix"),
    Run("puzzle mix", "puzzle_mix", 1, "puzzle mix"),
    Run("multimix puzzle K=5", "multimix_puzzle", 5, "puzzle mix"),
    Run("large-batch mixup (5B pairs)", "large_batch_mixup", 5, "table II"),
    Run("batch augmentation + mixup (5 copies)", "batch_augmentation_mixup", 5, "table II"),
    Run("multimix K=2", "multimix", 2, "K ablation"),
    Run("multimix K=3", "multimix", 3, "K ablation"),
    Run("multimix K=7", "multimix", 7, "K ablation"),
]
# multi-mix-paper.txt lines 169-178 (Table I, PreActResNet18) and 203-207 (Table II, ResNeXt29-4-24)
PAPER = [("no mixup", "23.53 ± 0.39"), ("input mixup", "22.49 ± 0.21"), ("manifold mixup", "21.62 ± 0.29"),
         ("cutmix", "21.29 ± 0.26"), ("fmix", "21.52 ± 0.24"), ("puzzle mix", "20.61 ± 0.29"),
         ("multi-mix (on Puzzle Mix, K=5)", "19.19 ± 0.27"),
         ("Table II: large-batch mixup", "26.54 ± 0.07"), ("Table II: batch augmentation with mixup", "19.41 ± 0.08"),
         ("Table II: multi-mix", "18.23 ± 0.06")]
K_ABLATION = {1: "mixup", 2: "multimix K=2", 3: "multimix K=3", 5: "multimix K=5", 7: "multimix K=7"}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def run_dir(out: Path, run: Run, seed: int) -> Path:
    return out / slug(run.name) / f"seed{seed}"


def read_history(folder: Path) -> Optional[List[dict]]:
    """The per-epoch metrics of a run (metrics.csv), or None where it has not started."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return None
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def mean_std(values: List[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def over_seeds(entry: dict, metric: str) -> dict:
    """mean_std of one metric of a collected run over its seeds."""
    return mean_std([v[metric] for v in entry["seeds"].values()])


def fastest_epoch(entry: dict) -> float:
    """The run's fastest epoch in seconds (other jobs on the machine only slow epochs down)."""
    return min(entry["epoch_seconds"]) if entry["epoch_seconds"] else math.nan


def paired(a: Dict[int, float], b: Dict[int, float]) -> Optional[dict]:
    """b - a over the seeds both have: mean difference and a two-sided 95% t interval."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [b[s] - a[s] for s in seeds]
    mean = statistics.fmean(diffs)
    half = T95.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(diffs)}


def collect(out: Path, seeds: List[int], epochs: int) -> dict:
    """{run name: {"seeds": {seed: final metrics}, "curves": {seed: [test_error per epoch]},
    "epoch_seconds": [...]}} over the runs that finished all epochs."""
    results = {}
    for run in RUNS:
        entry = {"method": run.method, "k": run.k, "family": run.family, "seeds": {}, "curves": {},
                 "epoch_seconds": []}
        for seed in seeds:
            history = read_history(run_dir(out, run, seed))
            if not history or len(history) < epochs:
                continue
            entry["seeds"][seed] = {m: history[-1][m] for m in METRICS}
            entry["curves"][seed] = [row["test_error"] for row in history]
            entry["epoch_seconds"] += [row["epoch_seconds"] for row in history[1:] or history]  # epoch 1 warms up
        if entry["seeds"]:
            results[run.name] = entry
    return results


def pct(m: dict) -> str:
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def ci(d: Optional[dict]) -> str:
    if d is None:
        return "-"
    if math.isnan(d["lo"]):
        return f"{100 * d['mean']:+.2f}"
    return f"{100 * d['mean']:+.2f} [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}]"


def report(results: dict, cfg, seeds: List[int], wall_minutes: float, path: Path) -> str:
    """The markdown report; also writes its JSON and figures beside `path`."""
    def metric(name, m):
        return {s: v[m] for s, v in results[name]["seeds"].items()} if name in results else {}

    scale = (f"Fashion-MNIST (Debian's dataset-fashion-mnist, clean labels), {cfg.model}, "
             f"{cfg.train_subset} training images, the first {cfg.test_subset} test images, {cfg.epochs} "
             f"epochs, batch {cfg.batch_size} (multi-mix: K·{cfg.batch_size} rows per step), SGD lr "
             f"{cfg.lr} {cfg.schedule}, α={cfg.alpha}, seeds {seeds}; noisy error: the test images plus "
             f"Gaussian noise of std {cfg.noise_std} (normalised units); ECE with M=10 bins. Compute: "
             f"{wall_minutes:.0f} min of training on 2 CPU cores; s / epoch is the fastest epoch after "
             f"the first (other jobs shared the cores at times).")
    lines = ["**Evidence suite: accuracy, calibration and robustness at CPU scale.** "
             f"`python -m train.suite` ({scale})", "",
             "**All runs** (mean ± std over seeds, %):", "",
             "| run | K | seeds | test error | ECE | noisy error | s / epoch (fastest) |", "|---|---|---|---|---|---|---|"]
    for run in RUNS:
        if run.name not in results:
            continue
        r = results[run.name]
        cols = [pct(over_seeds(r, m)) for m in METRICS]
        sec = fastest_epoch(r)
        lines.append(f"| {run.name} | {run.k} | {len(r['seeds'])} | " + " | ".join(cols) + f" | {sec:.1f} |")
    lines += ["", "**Multi-mix (K=5) minus the original (K=1)**, paired by seed (percentage points, "
              "mean [95% t interval]; negative = multi-mix lower):", "",
              "| method | test error | ECE | noisy error |", "|---|---|---|---|"]
    for k1, k5 in [("mixup", "multimix K=5"), ("manifold mixup", "multimix manifold K=5"),
                   ("cutmix", "multimix cutmix K=5"), ("fmix", "multimix fmix K=5"),
                   ("puzzle mix", "multimix puzzle K=5"), ("none", "multimix K=5"),
                   ("large-batch mixup (5B pairs)", "multimix K=5"),
                   ("batch augmentation + mixup (5 copies)", "multimix K=5")]:
        if k1 in results and k5 in results:
            cells = [ci(paired(metric(k1, m), metric(k5, m))) for m in METRICS]
            lines.append(f"| {k5} vs {k1} | " + " | ".join(cells) + " |")
    lines += ["", "**K ablation of input mixup** (paper Fig. 6, 7):", "",
              "| K | test error | ECE | noisy error | s / epoch (fastest) | time vs K=1 |", "|---|---|---|---|---|---|"]
    base_sec = None
    for k, name in K_ABLATION.items():
        if name not in results:
            continue
        r = results[name]
        sec = fastest_epoch(r)
        base_sec = sec if k == 1 else base_sec
        rel = f"{sec / base_sec:.2f}x" if base_sec else "-"
        lines.append(f"| {k} | " + " | ".join(pct(over_seeds(r, m)) for m in METRICS)
                     + f" | {sec:.1f} | {rel} |")
    lines += ["", "**The paper, for orientation** (not comparable in scale): test error (%), CIFAR-100, "
              "300 epochs, mean ± std of 3 seeds (Table I, PreActResNet18 column; Table II, "
              "ResNeXt29-4-24):", "",
              "| method | paper |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in PAPER]
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = plot(results, cfg, path)
    lines += ["", "Figures: " + ", ".join(f"`{f.name}` (beside this file)" for f in figures), ""]
    text = "\n".join(lines)
    path.with_suffix(".md").write_text(text)
    path.with_suffix(".json").write_text(json.dumps(
        {"scale": scale, "seeds": seeds, "wall_minutes": wall_minutes, "results": results}, indent=1))
    return text


def plot(results: dict, cfg, path: Path) -> List[Path]:
    """Test-error curves (mean over seeds) of each K=1 / K=5 pair; the K ablation with time per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    pairs = [("mixup", "multimix K=5"), ("manifold mixup", "multimix manifold K=5"), ("cutmix", "multimix cutmix K=5"),
             ("fmix", "multimix fmix K=5"), ("puzzle mix", "multimix puzzle K=5")]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 3.6), sharey=True)
    for ax, (k1, k5) in zip(axes, pairs):
        for name, style in (("none", ":"), (k1, "--"), (k5, "-")):
            if name not in results:
                continue
            curves = list(results[name]["curves"].values())
            mean = [100 * statistics.fmean(c[e] for c in curves) for e in range(len(curves[0]))]
            ax.plot(range(1, len(mean) + 1), mean, style, label=f"{name} ({len(curves)} seeds)")
        ax.set_title(k1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test error (%)")
    fig.suptitle(f"Fashion-MNIST, {cfg.model}, {cfg.train_subset} images: K=1 (dashed) vs multi-mix K=5 (solid)")
    fig.tight_layout()
    curves_png = path.with_name(path.name + "_curves.png")
    fig.savefig(curves_png, dpi=110)
    plt.close(fig)

    ks = [k for k, name in K_ABLATION.items() if name in results]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    if ks:
        errs = [over_seeds(results[K_ABLATION[k]], "test_error") for k in ks]
        a1.errorbar(ks, [100 * e["mean"] for e in errs], [100 * e["std"] for e in errs], marker="o", capsize=3,
                    label="multi-mix on input mixup (K=1: mixup)")
        if "none" in results:
            none = over_seeds(results["none"], "test_error")
            a1.axhline(100 * none["mean"], linestyle=":", color="gray", label="no mixup")
        secs = [fastest_epoch(results[K_ABLATION[k]]) for k in ks]
        a2.plot(ks, [100 * (s / secs[0] - 1) for s in secs], marker="o", label="measured")
        a2.plot(ks, [100 * (k - 1) for k in ks], color="orange", label="linear in K")
    a1.set(xlabel="K", ylabel="test error (%)", title="Test error vs K (paper Fig. 6)")
    a2.set(xlabel="K", ylabel="increase in time per epoch (%)", title="Time per epoch vs K (paper Fig. 7)")
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.tight_layout()
    k_png = path.with_name(path.name + "_k_ablation.png")
    fig.savefig(k_png, dpi=110)
    plt.close(fig)
    return [curves_png, k_png]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.suite", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--only", nargs="+", metavar="RUN", help=f"run only these (of: {[r.name for r in RUNS]})")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    parser.add_argument("--report", default=str(REPORT), help="report path without suffix (default docs/evidence/suite)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="options over fashion_mnist_suite.yaml")
    args = parser.parse_args(argv)
    names = {r.name for r in RUNS}
    if args.only and not set(args.only) <= names:
        parser.error(f"--only: unknown run(s) {sorted(set(args.only) - names)}; runs: {[r.name for r in RUNS]}")
    try:
        cfg = load_config(str(CONFIG), tuple(args.overrides))
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    out = Path(cfg.out_dir)
    start = time.monotonic()
    if not args.report_only:
        from .loop import train  # imports DALI and torch: after the arguments are known to be good

        todo = [(seed, run) for seed in args.seeds for run in RUNS if not args.only or run.name in args.only]
        for i, (seed, run) in enumerate(todo, 1):
            folder = run_dir(out, run, seed)
            history = read_history(folder)
            if history and len(history) >= cfg.epochs:
                continue
            print(f"--- [{i}/{len(todo)}] {run.name}, seed {seed} ---", flush=True)
            run_cfg = load_config(str(CONFIG), tuple(args.overrides) + (
                f"method={run.method}", f"k={run.k}", f"seed={seed}", f"out_dir={folder}",
                "resume_if_exists=true") + run.overrides + (() if sys.stdout.isatty() else ("progress=false",)))
            train(run_cfg)
    wall = total_minutes(out, args.seeds)
    text = report(collect(out, args.seeds, cfg.epochs), cfg, args.seeds, wall, Path(args.report))
    print(text)
    print(f"\nreport: {Path(args.report).with_suffix('.md')} (this call: {(time.monotonic() - start) / 60:.1f} min)")
    return 0


def total_minutes(out: Path, seeds: List[int]) -> float:
    """The training compute of the suite: the sum of every finished epoch's seconds."""
    total = 0.0
    for run in RUNS:
        for seed in seeds:
            for row in read_history(run_dir(out, run, seed)) or []:
                total += row["epoch_seconds"]
    return total / 60


if __name__ == "__main__":
    sys.exit(main())
