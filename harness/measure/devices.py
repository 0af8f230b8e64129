"""Which devices this machine has, found without importing a framework (so `list` stays fast)."""
from __future__ import annotations

import shutil
from pathlib import Path


def cuda_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def available_devices() -> list[str]:
    return ["cpu", "cuda"] if cuda_present() else ["cpu"]
