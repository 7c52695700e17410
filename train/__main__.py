"""python -m train --config train/configs/NAME.yaml [key=value ...]"""
from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--resume", action="store_true",
                        help="continue out_dir's checkpoint exactly (an error where there is none, or "
                             "where the config differs in any key but epochs, progress, out_dir)")
    parser.add_argument("--resume-if-exists", action="store_true",
                        help="as --resume where out_dir holds a checkpoint, else start afresh")
    parser.add_argument("--overwrite", action="store_true",
                        help="without --resume: replace the results already in out_dir")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="options over the config")
    args = parser.parse_args(argv)
    overrides = tuple(args.overrides) + tuple(
        f"{key}=true" for key, flag in (("resume", args.resume), ("resume_if_exists", args.resume_if_exists),
                                        ("overwrite", args.overwrite)) if flag)
    try:
        cfg = load_config(args.config, overrides)
    except (ValueError, TypeError, FileNotFoundError) as e:
        parser.error(str(e))
    from .loop import train  # imports DALI and torch: after the arguments are known to be good
    try:
        train(cfg)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        if os.environ.get("TRAIN_TRACEBACK"):
            raise
        print(f"{parser.prog}: error: {e}\n(TRAIN_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
