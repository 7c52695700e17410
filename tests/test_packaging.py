"""Packaging: the torch side without DALI, build info, the DALI-version and CPU-only-build refusals,
and a wheel built from a clean copy of the checkout (only dali_multimix, the plugin, the metadata).

Each check runs in a subprocess (a fresh interpreter: DALI hidden, or another plugin path)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import dali_multimix

ROOT = Path(__file__).resolve().parents[1]

HIDE_DALI = '''
import sys
class HideDali:
    def find_spec(self, name, path=None, target=None):
        if name == "nvidia.dali" or name.startswith("nvidia.dali."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return None
sys.meta_path.insert(0, HideDali())
'''


def python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=str(ROOT), env=dict(os.environ, **env))


def test_torch_side_works_without_dali():
    result = python(HIDE_DALI + '''
import torch
import dali_multimix, dali_multimix.torch
from dali_multimix.torch import (multimix_batch, ManifoldMultiMix, mixed_cross_entropy,
                                 MultimixCrossEntropy, MultimixIterator)
from dali_multimix.torch.puzzle import PuzzleMix
assert "nvidia.dali" not in sys.modules
g = torch.Generator().manual_seed(0)
out = multimix_batch(torch.rand(4, 3, 8, 8), torch.arange(4), k=3, generator=g)
assert out.images.shape == (4, 3, 3, 8, 8)
print("build", dali_multimix.build_info()["dali_version"], dali_multimix.has_cuda())
for name in ("multimix", "add_multimix"):
    try:
        getattr(dali_multimix, name)
    except ImportError as e:
        print("refused", name, e)
try:
    dali_multimix.torch.MultimixClassificationIterator
except ImportError as e:
    print("iterator refused", e)
''')
    assert result.returncode == 0, result.stderr
    assert "build 2.4.0" in result.stdout or "build " in result.stdout
    assert result.stdout.count("refused multimix") == 1
    assert "needs NVIDIA DALI" in result.stdout and "pip install nvidia-dali-" in result.stdout
    assert "iterator refused" in result.stdout


def plugin_copy(tmp_path: Path, **info) -> Path:
    """The installed plugin copied with an edited build record."""
    plugin = dali_multimix.load_plugin()
    record = dict(json.loads(plugin.with_name("_build_info.json").read_text()), **info)
    target = tmp_path / plugin.name
    shutil.copy(plugin, target)
    (tmp_path / "_build_info.json").write_text(json.dumps(record))
    return target


def test_build_info_describes_the_installed_plugin():
    import nvidia.dali
    info = dali_multimix.build_info()
    assert info["dali_version"] == nvidia.dali.__version__
    assert info["dali_package"].startswith("nvidia-dali")
    assert isinstance(info["cuda"], bool) and dali_multimix.has_cuda() is info["cuda"]
    assert (info["cuda_version"] is None) is (not info["cuda"])
    assert Path(info["plugin"]).is_file()
    if info["cuda"]:  # every GPU generation CUDA 13 supports, not just the compiler's default
        archs = info["cuda_architectures"].split(";")
        assert archs == ["75-real", "80-real", "86-real", "89-real", "90"], archs


def test_another_dali_version_is_refused_with_the_fix(tmp_path):
    plugin = plugin_copy(tmp_path, dali_version="1.0.0")
    result = python("import dali_multimix; dali_multimix.multimix",
                    DALI_MULTIMIX_PLUGIN=str(plugin))
    assert result.returncode != 0
    assert "ImportError: dali_multimix's plugin is built for DALI 1.0.0" in result.stderr
    assert "pip install nvidia-dali-" in result.stderr and "--no-build-isolation" in result.stderr


def test_gpu_pipeline_on_a_cpu_only_build_fails_at_build_with_the_rebuild_message(tmp_path):
    plugin = plugin_copy(tmp_path, cuda=False, cuda_version=None)
    result = python('''
import numpy as np
from nvidia.dali import fn, pipeline_def, types
import dali_multimix
assert not dali_multimix.has_cuda()

@pipeline_def(batch_size=2, num_threads=1, device_id=0)
def pipe():
    x = fn.external_source(source=lambda: [np.zeros((4, 4, 3), np.uint8)] * 2, layout="HWC")
    y = fn.external_source(source=lambda: [np.zeros(1, np.int32)] * 2)
    return dali_multimix.add_multimix(x.gpu(), y, k=2)

try:
    p = pipe()
    p.build()
except ValueError as e:
    print("refused:", e)
''', DALI_MULTIMIX_PLUGIN=str(plugin))
    assert result.returncode == 0, result.stderr
    assert "refused: multimix: `images` is a GPU DataNode but this dali_multimix plugin was " \
           "built without its CUDA backend" in result.stdout
    assert "Rebuild with CUDA" in result.stdout and "nvcc" in result.stdout


@pytest.fixture(scope="module")
def cpu_wheel(tmp_path_factory) -> Path:
    """A wheel built (CPU backend only, to keep it short) from a clean copy of the files git
    would commit (tracked and untracked-not-ignored), as `git clone` of a commit would see."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout.split("\n")
    src = tmp / "src"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
         "-C", "cmake.define.MULTIMIX_WITH_CUDA=OFF", "-C", f"build-dir={tmp / 'build'}",
         "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    [wheel] = (tmp / "dist").glob("dali_multimix-*.whl")
    return wheel


def test_wheel_holds_only_dali_multimix_with_plugin_and_metadata(cpu_wheel):
    with zipfile.ZipFile(cpu_wheel) as wheel:
        names = wheel.namelist()
        meta = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        record = json.loads(wheel.read("dali_multimix/_build_info.json"))
    top = {n.split("/")[0] for n in names}
    assert all(t == "dali_multimix" or t.startswith("dali_multimix-") for t in top), top
    assert "dali_multimix/libdali_multimix.so" in names
    assert "dali_multimix/torch/classification.py" in names
    assert not any(n.startswith(("train/", "pipelines/", "tests/")) for n in names)
    assert record["cuda"] is False and record["cuda_version"] is None
    for requirement in ("numpy>=1.24", "scipy>=1.10"):
        assert f"Requires-Dist: {requirement}" in meta
    for name, extra in (("nvidia-dali-cuda130", "cuda13"), ("nvidia-dali-cuda120", "cuda12"),
                        ("PyMaxflow", "puzzle"), ("gco-wrapper", "puzzle"), ("torch", "torch")):
        assert any(line.startswith(f"Requires-Dist: {name}") and f'extra == "{extra}"' in line
                   for line in meta.splitlines()), (name, extra)
    assert not any(line.startswith("Requires-Dist: nvidia-dali") and "extra ==" not in line
                   for line in meta.splitlines())  # DALI only through an extra
    assert "License: Apache-2.0" in meta or "License-Expression: Apache-2.0" in meta
