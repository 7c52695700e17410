"""The GPU check on a machine without DALI (as the lent GPU machines are): simulated by running
pytest in a child process whose imports of nvidia.dali fail. It must collect every GPU test and
skip them with "no GPU" where there is none; where a GPU is seen but cupy cannot run, the tests
must fail (not skip), saying so."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu.gpu_detect import gpu_present

REPO = Path(__file__).resolve().parents[1]
GPU_TESTS = ["tests/gpu", "tests/test_gpu.py"]

# Runs pytest with `blocked` modules unimportable (and torch.cuda.is_available() forced to True
# when `fake_gpu`), as on a machine without them.
CHILD = r"""
import sys
blocked, fake_gpu, args = sys.argv[1].split(","), sys.argv[2] == "1", sys.argv[3:]

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"{name} is blocked (simulating a machine without it)")
        return None

sys.meta_path.insert(0, Blocker())
if fake_gpu:
    import torch
    torch.cuda.is_available = lambda: True
import pytest
sys.exit(pytest.main(args))
"""


def run_child(blocked: list, fake_gpu: bool, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, ",".join(blocked), "1" if fake_gpu else "0",
                           "-q", "-rs", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(gpu_present()[0], reason="a GPU is present: the check runs for real here")
def test_without_dali_the_gpu_tests_collect_and_skip_as_no_gpu():
    out = run_child(["nvidia.dali"], False, *GPU_TESTS)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "error" not in text.lower(), text[-3000:]  # no collection error
    skipped = int(text.strip().splitlines()[-1].split(" skipped")[0].split()[-1])
    assert skipped >= 50, text[-3000:]  # kernels x modes x dtypes x layouts, the torch side, DALI's
    assert "passed" not in text and "failed" not in text, text[-3000:]
    assert text.count("SKIPPED") >= 3 and all("no GPU" in line for line in text.splitlines()
                                              if line.startswith("SKIPPED")), text[-3000:]


def test_a_gpu_with_a_broken_cupy_fails_instead_of_skipping():
    out = run_child(["nvidia.dali", "cupy"], True, "tests/gpu/test_kernels_gpu.py")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]  # failures, not a clean run of skips
    assert "GPU present" in text and "cupy/NVRTC cannot run a kernel" in text, text[-3000:]
    assert "cupy is blocked" in text and "no GPU" not in text, text[-3000:]


IMPORT_TORCH_SIDE = r"""
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "nvidia.dali" or name.startswith("nvidia.dali."):
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Blocker())
sys.path[:0] = [sys.argv[1]]
from gpu.conftest import import_torch_side
import_torch_side()
from dali_multimix.torch import ManifoldMultiMix, multimix_batch
from dali_multimix.torch.puzzle import PuzzleMix
import dali_multimix.torch.mixing as mixing
assert "nvidia.dali" not in sys.modules
print(mixing.__file__)
"""


def test_without_dali_the_torch_side_imports_from_the_source_tree():
    """What the torch GPU tests import, in a process where nvidia.dali cannot be imported."""
    out = subprocess.run([sys.executable, "-c", IMPORT_TORCH_SIDE, str(REPO / "tests")], cwd="/",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == str(REPO / "dali_multimix" / "torch" / "mixing.py"), out.stdout


@pytest.mark.parametrize("env, missing", [({}, "WHEELS"), ({"WHEELS": "/nonexistent"}, "PLUGIN")])
def test_the_dali_gpu_check_names_what_it_needs(env, missing):
    """bench/gpu_dali_check.sh (DALI carried to a GPU machine as wheels) stops before installing
    anything when the wheels' folder or the plugin is not given, and says which."""
    clean = {k: v for k, v in os.environ.items() if k not in ("WHEELS", "PLUGIN")}
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu_dali_check.sh")], env={**clean, **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"set {missing}" in out.stderr, out.stderr
