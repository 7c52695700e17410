"""GPU checks that need numpy, cupy and torch only (no DALI): run on any GPU machine with
`make gpu-check` or `python -m pytest tests/gpu`."""
