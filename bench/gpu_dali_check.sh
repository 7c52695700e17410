#!/usr/bin/env bash
# The DALI GPU operator itself on a GPU machine that has no DALI (run bench/gpu_check.sh first):
# DALI's wheels installed offline from a folder, the plugin built on another machine against the
# same DALI (with CUDA), then
#   1. tests/test_gpu.py (the GPU operator against the CPU operator, bit for bit) and tests/gpu;
#   2. bench/bench_op.py --device gpu -> bench/results/op_gpu.md.
#     WHEELS=dir-of-wheels PLUGIN=path/to/libdali_multimix.so bash bench/gpu_dali_check.sh
# WHEELS holds nvidia-dali-cuda130, nvidia-nvimgcodec-cu13, nvidia-libnvcomp-cu13 and the
# dependencies the machine lacks (astunparse, gast, libcst, makefun, nvtx, optree); PLUGIN's folder
# holds the plugin's _build_info.json too. PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/dali-site}
: "${WHEELS:?set WHEELS to the folder of wheels}" "${PLUGIN:?set PLUGIN to libdali_multimix.so}"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl || exit 1
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" DALI_MULTIMIX_PLUGIN="$PLUGIN"
"$PY" -c "
import nvidia.dali, dali_multimix
dali_multimix.load_plugin()
print('DALI', nvidia.dali.__version__, '| plugin', dali_multimix.build_info())" || exit 1
timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/gpu
tests=$?
timeout 240 "$PY" bench/bench_op.py --device gpu --repeats "${REPEATS:-7}"
bench=$?
echo "gpu-dali-check: tests exit $tests, benchmark exit $bench"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
