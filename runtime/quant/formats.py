"""Quantize / dequantize tensors: fp8 e4m3 and int8, symmetric, one scale per row.

Weights get one scale per output channel (row of a Linear weight), activations one per token
(row of the flattened input), computed at run time. The same functions feed the GPU kernels and
the CPU emulation, so both see bit-identical quantized values.
"""
from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
INT8_MAX = 127.0
_TINY = 1e-12


def row_scale(x: torch.Tensor, qmax: float) -> torch.Tensor:
    """(N, 1) fp32 scales: each row's absolute max mapped to ``qmax`` (all-zero rows get a tiny scale)."""
    return (x.detach().float().abs().amax(dim=-1, keepdim=True) / qmax).clamp_min(_TINY)


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of x (N, K) -> e4m3 values (N, K) and fp32 scales (N, 1) with x ~= q * scale.

    Rounding: x / scale in fp32, clamped to +-448, then the round-to-nearest-even cast of torch
    (the cast _scaled_mm's callers use), so CPU emulation and GPU see the same codes.
    """
    scale = row_scale(x, FP8_MAX)
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of x (N, K) -> int8 codes in [-127, 127] (round half to even) and fp32 scales (N, 1)."""
    scale = row_scale(x, INT8_MAX)
    q = torch.round(x.float() / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q * scale in fp32 (exact for e4m3 and int8 codes), then cast to ``dtype``."""
    return (q.float() * scale).to(dtype)
