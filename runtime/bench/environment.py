"""The environment a benchmark ran in: versions, device, threads, host."""
from __future__ import annotations

import os
import platform
from typing import Optional

import torch


def _version(module: str) -> Optional[str]:
    try:
        return str(__import__(module).__version__)
    except Exception:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Versions of the stack, the device (GPU name for CUDA), CPU model, cores and torch threads."""
    import vidrt

    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {
        "device": str(dev), "device_name": gpu or f"CPU ({_cpu_name()})", "gpu": gpu,
        "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        "vidrt": vidrt.__version__, "torch": torch.__version__, "diffusers": _version("diffusers"),
        "transformers": _version("transformers"), "triton": _version("triton"), "numpy": _version("numpy"),
        "git_commit": _git_commit(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _git_commit() -> Optional[str]:
    """Commit of the vidrt source tree when run from a git checkout (editable install), else None."""
    import subprocess
    from pathlib import Path

    import vidrt

    root = Path(vidrt.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
