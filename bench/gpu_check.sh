#!/usr/bin/env bash
# The GPU check, in one short run (under 4 minutes) on a GPU machine that may have no DALI and no
# .venv: only python3 with numpy, cupy, torch and pytest (timm / torchvision used where present).
#   1. tests/gpu: the plugin's CUDA kernels compiled with NVRTC from the sources the plugin
#      compiles, against the reference; multimix_batch, ManifoldMultiMix and Puzzle Mix on CUDA
#      tensors against their CPU results. tests/test_kernels_compile.py (NVRTC only) and
#      tests/test_gpu.py (DALI's GPU operator against its CPU operator: skipped without DALI).
#   2. bench/bench_kernels_gpu.py -> bench/results/kernels_gpu.md.
# No GPU: the tests skip with "no GPU" and the benchmark is left out (exit 0). A GPU that cupy,
# NVRTC or torch cannot use: the tests fail (exit 1).
#     bash bench/gpu_check.sh            (or: make gpu-check;  PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF'
import importlib, sys
for name in ("numpy", "pytest", "torch", "cupy", "nvidia.dali", "timm", "torchvision", "maxflow"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:12s} {getattr(module, '__version__', 'present')}")
    except Exception as e:  # noqa: BLE001 - a report, not a check
        print(f"  {name:12s} missing ({type(e).__name__})")
PYEOF
timeout 210 "$PY" -m pytest -q -p no:cacheprovider tests/gpu tests/test_gpu.py tests/test_kernels_compile.py
tests=$?
if "$PY" -c "import sys; sys.path.insert(0, 'tests'); from gpu.gpu_detect import gpu_present; sys.exit(0 if gpu_present()[0] else 1)"; then
    timeout 120 "$PY" bench/bench_kernels_gpu.py
    bench=$?
else
    echo "gpu-check: no GPU, the kernel benchmark is left out"
    bench=0
fi
echo "gpu-check: tests exit $tests, benchmark exit $bench"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
