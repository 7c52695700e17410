"""Is there a CUDA GPU? Asked without cupy (so that a broken cupy on a GPU machine is a failure,
not a skip): torch.cuda, then the driver's device files, then nvidia-smi."""
from __future__ import annotations

import glob
import shutil
import subprocess


def gpu_present() -> tuple[bool, str]:
    """(present, how it was seen or why none was)."""
    try:
        import torch
        if torch.cuda.is_available():
            return True, f"torch.cuda sees {torch.cuda.device_count()} device(s)"
    except ImportError:
        pass
    devices = sorted(glob.glob("/dev/nvidia[0-9]*"))
    if devices:
        return True, f"device files {devices}"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            listed = ""
        if "GPU" in listed:
            return True, f"nvidia-smi -L: {listed.strip().splitlines()[0]}"
    return False, "no GPU (torch.cuda.is_available() is False, no /dev/nvidia*, no GPU in nvidia-smi -L)"
