"""Shared host-side helpers of the row-wise kernels (adaln, rmsnorm, gated_residual): validation, launch sizes."""
from __future__ import annotations

import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_CHANNELS = 65536


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_float(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}; cast it first")


def check_device(*tensors: torch.Tensor) -> None:
    dev = tensors[0].device
    if any(t.device != dev for t in tensors):
        raise ValueError(f"tensors are on different devices ({', '.join(str(t.device) for t in tensors)}); move them to one")
    if dev.type != "cuda" and not interpreting():
        raise ValueError(f"Triton kernels need CUDA tensors, got {dev}; use the torch reference on CPU, or set "
                         "TRITON_INTERPRET=1 (before importing triton) to interpret on CPU")


def check_channels(c: int) -> None:
    if not 1 <= c <= MAX_CHANNELS:
        raise ValueError(f"channel count {c} is outside [1, {MAX_CHANNELS}] that the fused row kernels take; "
                         "use the torch reference")


def modulation(name: str, t: torch.Tensor, b: int, l: int, c: int) -> torch.Tensor:
    """View a per-batch (B, 1, C) or per-token (B, L, C) modulation tensor as (B, L, C) (stride 0 where broadcast)."""
    check_float(name, t)
    if t.ndim != 3 or t.shape[-1] != c or t.shape[0] not in (1, b) or t.shape[1] not in (1, l):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected ({b}, 1, {c}) per batch or ({b}, {l}, {c}) per "
                         "token (a leading 1 broadcasts over the batch)")
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t.expand(b, l, c)


def row_launch(c: int, interp: bool) -> tuple[int, int, int]:
    """(BLOCK_C, ROWS per program, num_warps): whole rows in registers, ~4K-8K elements per program."""
    block_c = 1 << max(0, (c - 1).bit_length())
    if interp:
        return block_c, max(1, min(16, 1024 // block_c)), 1
    rows = max(1, 4096 // block_c)
    warps = 4 if block_c * rows <= 4096 else 8 if block_c <= 8192 else 16
    return block_c, rows, warps
