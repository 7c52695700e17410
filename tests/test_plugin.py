"""The operator (first use of dali_multimix.multimix) loads the plugin, or fails with an ImportError
that says why and how to fix it; `import dali_multimix` alone needs neither DALI nor the plugin."""
from __future__ import annotations

import os
import subprocess
import sys

import dali_multimix


def import_in_subprocess(plugin_path: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DALI_MULTIMIX_PLUGIN=plugin_path)
    return subprocess.run([sys.executable, "-c", "import dali_multimix; dali_multimix.multimix"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_plugin_is_loaded():
    from nvidia.dali import fn
    assert dali_multimix.PLUGIN_PATH.is_file()
    assert dali_multimix.load_plugin() == dali_multimix.PLUGIN_PATH  # loaded once
    assert callable(fn.multimix)


def test_missing_plugin_says_how_to_build_it(tmp_path):
    result = import_in_subprocess(str(tmp_path / "missing.so"))
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "is not built" in result.stderr and "make setup" in result.stderr


def test_broken_plugin_is_an_import_error(tmp_path):
    broken = tmp_path / "libdali_multimix.so"
    broken.write_text("not a shared library")
    result = import_in_subprocess(str(broken))
    assert result.returncode != 0
    assert "ImportError: dali_multimix could not load its operator plugin" in result.stderr


def test_import_alone_loads_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import sys, dali_multimix, dali_multimix.torch; "
                             "print('nvidia.dali' in sys.modules)"], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, DALI_MULTIMIX_PLUGIN=str(tmp_path / "x.so")))
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
