"""Precision modes: names, dtypes, and what a device can run.

Plain modes set the DiT's dtype: ``fp32`` (the exact path), ``bf16``, ``fp16``. Quantized modes
(``fp8``, ``int8``, ``int8_dynamic``; see :mod:`vidrt.quant`) quantize the DiT's block linears and run
the rest in bf16 (the compute dtype), keeping the fp32 set of the precision policy. The VAE and the
text encoder have their own (plain) precision settings.
"""
from __future__ import annotations

import torch

from vidrt.errors import ConfigError, DeviceError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANT_MODES = ("fp8", "int8", "int8_dynamic")
PRECISIONS = tuple(DTYPES) + QUANT_MODES
QUANT_COMPUTE_DTYPE = torch.bfloat16


def dtype_of(precision: str) -> torch.dtype:
    """torch dtype of a precision name (the compute dtype for quantized modes); a clear error for unknown names."""
    if precision in QUANT_MODES:
        return QUANT_COMPUTE_DTYPE
    try:
        return DTYPES[precision]
    except KeyError:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}") from None


def is_quantized(precision: str) -> bool:
    """Whether ``precision`` is a quantized mode (fp8 / int8 / int8_dynamic) rather than a plain dtype."""
    return precision in QUANT_MODES


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A usable torch device, or a DeviceError naming what is available."""
    try:
        dev = torch.device(device or "cpu")
    except (RuntimeError, TypeError, ValueError):  # 'tpu', 'gpu', 'cuda:-1'
        raise DeviceError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
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


def device_precisions(device: torch.device) -> dict[str, str]:
    """Every precision mode -> "ok" or why ``device`` cannot run it.

    CPU runs all modes (fp8 through vidrt's exact emulation, int8 with int8 kernels); a CUDA GPU needs
    bf16 support for bf16 and the quantized modes, and compute capability >= 8.9 for fp8
    (``torch._scaled_mm``); MPS runs the plain modes only.
    """
    out = {p: "ok" for p in PRECISIONS}
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        cap = torch.cuda.get_device_capability(device)
        for p in ("bf16",) + QUANT_MODES:
            if not bf16:
                out[p] = "this GPU has no bf16 support"
        if out["fp8"] == "ok" and cap < (8, 9):
            out["fp8"] = f"fp8 matmuls need compute capability >= 8.9 (this GPU is {cap[0]}.{cap[1]})"
    elif device.type == "mps":
        for p in QUANT_MODES:
            out[p] = "quantized modes run on CPU or CUDA only"
    return out


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """dtype for ``precision`` on ``device``; a DeviceError naming the modes the device can run."""
    dtype = dtype_of(precision)
    status = device_precisions(device)
    if status[precision] != "ok":
        ok = [p for p, s in status.items() if s == "ok"]
        raise DeviceError(f"{device} cannot run precision={precision!r}: {status[precision]}; "
                          f"choose one of {', '.join(ok)}")
    return dtype


def check_plain_precision(precision: str, device: torch.device, what: str) -> torch.dtype:
    """Like check_precision for components that take plain dtypes only (VAE, text encoder)."""
    if precision not in DTYPES and precision not in QUANT_MODES:
        raise ConfigError(f"unknown {what} precision {precision!r}; the {what} takes one of {', '.join(DTYPES)}")
    if precision in QUANT_MODES:
        raise ConfigError(f"{what} precision {precision!r} is a quantized DiT mode; the {what} takes one of "
                          f"{', '.join(DTYPES)}")
    return check_precision(precision, device)
