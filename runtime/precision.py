"""Precision modes: names, dtypes, and what a device can run."""
from __future__ import annotations

import torch

from vidrt.errors import ConfigError, DeviceError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = tuple(DTYPES)


def dtype_of(precision: str) -> torch.dtype:
    """torch dtype of a precision name; a clear error for unknown names."""
    try:
        return DTYPES[precision]
    except KeyError:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A usable torch device, or a DeviceError naming what is available."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {str(dev)!r} requested but CUDA is not available here (torch "
                          f"{torch.__version__}, no GPU visible); use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device {str(dev)!r} does not exist: {torch.cuda.device_count()} GPU(s) visible; "
                          "use device='cuda:0'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' requested but MPS is not available here; use device='cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device type {dev.type!r} is not supported; use 'cpu' or 'cuda'")
    return dev


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """dtype for ``precision`` on ``device``; a DeviceError naming the modes the device can run."""
    dtype = dtype_of(precision)
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        ok = [p for p in PRECISIONS if p != "bf16"]
        raise DeviceError(f"this GPU cannot run bf16; choose one of {', '.join(ok)}")
    return dtype
