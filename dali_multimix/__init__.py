"""dali-multimix: multi-mix augmentation as a native NVIDIA DALI operator.

Implements "Mixup Augmentation with Multiple Interpolations" (Shen, Yu, Yang, Kwok): from each
sample pair, K > 1 ordered interpolations (lambda_1 <= ... <= lambda_K) for mixup, cutmix and fmix,
inside the data pipeline, on CPU and GPU.

Importing this package loads the operator plugin into DALI (``fn.multimix``); use it through
:func:`dali_multimix.multimix` inside any ``@pipeline_def``.
"""
from __future__ import annotations

import os
from pathlib import Path

REQUIRED_DALI_VERSION = "2.4.0"
_FIX = "run `make setup` in the dali-multimix checkout (or `pip install --no-build-isolation .`)"


def _plugin_path() -> Path:
    """The plugin next to this file, else the one of the installed distribution (when the source
    tree shadows the installed package, e.g. `python -m train` in the checkout)."""
    override = os.environ.get("DALI_MULTIMIX_PLUGIN")
    if override:
        return Path(override)
    local = Path(__file__).with_name("libdali_multimix.so")
    if local.is_file():
        return local
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        for f in distribution("dali-multimix").files or []:
            if f.name == "libdali_multimix.so":
                return Path(f.locate())
    except PackageNotFoundError:
        pass
    return local


def _load_plugin() -> Path:
    try:
        import nvidia.dali as dali
        from nvidia.dali import plugin_manager
    except ImportError as e:  # pragma: no cover - DALI is a hard dependency
        raise ImportError(
            f"dali_multimix needs NVIDIA DALI: pip install nvidia-dali-cuda130=={REQUIRED_DALI_VERSION}"
        ) from e
    if dali.__version__ != REQUIRED_DALI_VERSION:
        raise ImportError(
            f"dali_multimix's plugin is built for DALI {REQUIRED_DALI_VERSION} but DALI "
            f"{dali.__version__} is installed (a plugin only loads in the DALI it was built "
            f"against): pip install nvidia-dali-cuda130=={REQUIRED_DALI_VERSION}, then {_FIX}"
        )
    path = _plugin_path()
    if not path.is_file():
        raise ImportError(f"dali_multimix's operator plugin {path} is not built: {_FIX}")
    try:
        plugin_manager.load_library(str(path))
    except RuntimeError as e:
        raise ImportError(f"dali_multimix could not load its operator plugin {path}: {e}. {_FIX}") from e
    return path


PLUGIN_PATH = _load_plugin()

from .ops import (  # noqa: E402
    LAMBDA_SAMPLINGS, LAMBDA_SCOPES, MAX_K, MODES, MultimixOutputs, add_multimix, multimix,
)

__all__ = ["multimix", "add_multimix", "MultimixOutputs", "MODES", "LAMBDA_SAMPLINGS",
           "LAMBDA_SCOPES", "MAX_K", "PLUGIN_PATH"]
