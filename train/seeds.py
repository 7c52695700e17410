"""python -m train.seeds --config train/configs/NAME.yaml --seeds 0 1 2 [key=value ...]

Runs one config once per seed (out_dir/seed<N>) and reports each metric as mean ± standard
deviation over the seeds (the paper: "repeated three times with different random seeds", Table I;
mean ± std in Tables I and II), in out_dir/seeds_summary.json and on stdout."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from .config import load_config

# the metrics summarised: the last epoch's, and with a validation set the test error of the
# epoch of the lowest validation error (metrics.summarise)
METRICS = ("test_error", "ece", "noisy_test_error", "test_error_at_best_val")


def metric_values(summary: dict) -> dict:
    values = {k: summary["final"][k] for k in METRICS if k in summary.get("final", {})}
    if "test_error_at_best_val" in summary:
        values["test_error_at_best_val"] = summary["test_error_at_best_val"]
    return values


def mean_std(per_seed: dict) -> dict:
    """{metric: {"mean", "std", "values"}} over the seeds; std is the sample standard deviation
    (n - 1), 0 for a single seed."""
    metrics = [m for m in METRICS if all(m in v for v in per_seed.values())]
    out = {}
    for m in metrics:
        values = [per_seed[s][m] for s in per_seed]
        out[m] = {"mean": statistics.fmean(values),
                  "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file of options (train/configs/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="options over the config")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: each seed once; got {args.seeds}")
    try:
        base = load_config(args.config, tuple(args.overrides))
        configs = {s: load_config(args.config, tuple(args.overrides) + (f"seed={s}", f"out_dir={base.out_dir}/seed{s}"))
                   for s in args.seeds}
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    from .loop import train  # imports DALI and torch: after the arguments are known to be good

    per_seed = {}
    for seed, cfg in configs.items():
        print(f"--- seed {seed} ---", flush=True)
        per_seed[seed] = metric_values(train(cfg)["summary"])
    summary = {"config": args.config, "overrides": list(args.overrides), "method": base.method,
               "seeds": args.seeds, "per_seed": per_seed, "metrics": mean_std(per_seed)}
    path = Path(base.out_dir) / "seeds_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    print(f"\n{base.method} over seeds {args.seeds}:")
    for name, m in summary["metrics"].items():
        print(f"  {name:24s} {100 * m['mean']:.2f} ± {100 * m['std']:.2f} %")
    print(f"summary: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
