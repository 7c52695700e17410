"""Training harness for multi-mix and its baselines: `python -m train --help`."""
