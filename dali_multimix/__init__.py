"""dali-multimix: multi-mix augmentation as a native NVIDIA DALI operator.

Implements "Mixup Augmentation with Multiple Interpolations" (Shen, Yu, Yang, Kwok): from each
sample pair, K > 1 ordered interpolations (lambda_1 <= ... <= lambda_K) for mixup, cutmix and fmix,
inside the data pipeline, on CPU and GPU.

Importing this package needs neither DALI nor the compiled plugin: the torch side
(:mod:`dali_multimix.torch`) works on its own. The operator plugin is loaded into DALI on first
use of the operator (:func:`dali_multimix.multimix`, :func:`dali_multimix.add_multimix`, or
:func:`load_plugin` before calling ``fn.multimix`` directly); a missing DALI, a DALI of another
version than the plugin was built against, or a missing plugin raise an ImportError that says how
to fix it. :func:`build_info` and :func:`has_cuda` describe the build without loading anything.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Dict

try:
    from importlib.metadata import PackageNotFoundError, distribution, version as _dist_version
    __version__ = _dist_version("dali-multimix")
except Exception:  # running from a checkout that was never installed
    __version__ = "0.1.0"

PLUGIN_NAME = "libdali_multimix.so"
BUILD_INFO_NAME = "_build_info.json"
REBUILD = ("rebuild the plugin against the installed DALI: `pip install --no-build-isolation "
           "--no-deps --force-reinstall .` in the dali-multimix checkout (or `make setup`)")
_FIX = "run `make setup` in the dali-multimix checkout (or `pip install --no-build-isolation .`)"


def _installed_file(name: str) -> Path:
    """`name` next to this file, else the one of the installed distribution (when the source tree
    shadows the installed package, e.g. `python -m train` or pytest in the checkout)."""
    local = Path(__file__).with_name(name)
    if local.is_file():
        return local
    try:
        for f in distribution("dali-multimix").files or []:
            if f.name == name and f.parent.name == "dali_multimix":
                return Path(f.locate())
    except PackageNotFoundError:
        pass
    return local


def _plugin_path() -> Path:
    override = os.environ.get("DALI_MULTIMIX_PLUGIN")
    return Path(override) if override else _installed_file(PLUGIN_NAME)


def build_info() -> Dict[str, Any]:
    """What the plugin was built for, recorded by CMake at build time (no DALI import).

    Returns a dict: ``version`` (this package), ``dali_version`` and ``dali_package`` (the DALI
    the plugin was compiled against, e.g. "2.4.0", "nvidia-dali-cuda130"), ``cuda`` (True when the
    CUDA backend was compiled), ``cuda_version`` (the CUDA toolkit of that backend, or None),
    ``cuda_architectures``, ``plugin`` (the shared library's path). Raises ImportError when the
    plugin was never built.
    """
    path = _plugin_path().with_name(BUILD_INFO_NAME)  # the plugin's own record first
    if not path.is_file():
        path = _installed_file(BUILD_INFO_NAME)
    if not path.is_file():
        raise ImportError(f"dali_multimix's operator plugin is not built (no {path}): {_FIX}")
    info = json.loads(path.read_text())
    info["version"] = __version__
    info["plugin"] = str(_plugin_path())
    return info


def has_cuda() -> bool:
    """True when the plugin has the CUDA backend (GPU pipelines), False for a CPU-only build."""
    return bool(build_info()["cuda"])


_lock = threading.Lock()
_loaded: Dict[str, Path] = {}


def load_plugin() -> Path:
    """Loads the operator plugin into DALI once (thread-safe) and returns its path.

    Raises ImportError, saying how to fix it, when DALI is missing, when the installed DALI is not
    the version the plugin was built against, or when the plugin is missing or cannot be loaded.
    """
    with _lock:
        if "path" in _loaded:
            return _loaded["path"]
        info = build_info()
        built = info["dali_version"]
        package = info.get("dali_package") or "nvidia-dali-cuda130"
        try:
            import nvidia.dali as dali
            from nvidia.dali import plugin_manager
        except ImportError as e:
            raise ImportError(
                f"dali_multimix's DALI operator needs NVIDIA DALI {built} (the plugin was built "
                f"against it): pip install {package}=={built}. The torch side "
                f"(dali_multimix.torch) works without DALI.") from e
        if dali.__version__ != built:
            raise ImportError(
                f"dali_multimix's plugin is built for DALI {built} ({package}) but DALI "
                f"{dali.__version__} is installed (a plugin only loads in the DALI it was built "
                f"against): either pip install {package}=={built}, or {REBUILD}")
        path = _plugin_path()
        if not path.is_file():
            raise ImportError(f"dali_multimix's operator plugin {path} is not built: {_FIX}")
        try:
            plugin_manager.load_library(str(path))
        except RuntimeError as e:
            raise ImportError(f"dali_multimix could not load its operator plugin {path}: {e}. "
                              f"{_FIX}") from e
        _loaded["path"] = path
        return path


_OPS_NAMES = ("multimix", "add_multimix", "MultimixOutputs", "MODES", "LAMBDA_SAMPLINGS",
              "LAMBDA_SCOPES", "MAX_K")


def __getattr__(name: str):
    """The operator's names load DALI and the plugin on first access (PEP 562)."""
    if name in _OPS_NAMES:
        from . import ops
        return getattr(ops, name)
    if name == "PLUGIN_PATH":
        return load_plugin()
    raise AttributeError(f"module 'dali_multimix' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_OPS_NAMES) + ["PLUGIN_PATH"])


__all__ = ["multimix", "add_multimix", "MultimixOutputs", "MODES", "LAMBDA_SAMPLINGS",
           "LAMBDA_SCOPES", "MAX_K", "PLUGIN_PATH", "load_plugin", "build_info", "has_cuda",
           "__version__"]
