"""python -m train --config train/configs/NAME.yaml [key=value ...]"""
from __future__ import annotations

import argparse
import sys

from .config import help_text, load_config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a model with multi-mix or one of its baselines (Shen et al., 'Mixup "
                    "Augmentation with Multiple Interpolations'). Data comes through DALI pipelines "
                    "with the multimix operator; manifold mixing through hooks. Results (metrics.csv, "
                    "TensorBoard logs, curves.png, reliability.png, the resolved config.yaml and "
                    "atomic checkpoints) go to out_dir. Data-parallel: torchrun --nproc_per_node N "
                    "-m train ...",
        epilog="options (key=value; lists as a,b,c), with their defaults:\n" + help_text())
    parser.add_argument("--config", help="YAML file of options (train/configs/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from out_dir's checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="options over the config")
    args = parser.parse_args(argv)
    overrides = tuple(args.overrides) + (("resume=true",) if args.resume else ())
    try:
        cfg = load_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    from .loop import train  # imports DALI and torch: after the arguments are known to be good
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
