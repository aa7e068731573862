"""Gated residual of the DiT block: ``x + gate * y`` in one pass (fp32 math, result in x's dtype).

Matches diffusers' Wan ``(x.float() + y * gate).type_as(x)`` with gate (B, 1, C) per batch or
(B, L, C) per token.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from vidrt.kernels._rows import check_channels, check_device, check_float, interpreting, modulation

__all__ = ["gated_residual", "gated_residual_reference"]


def gated_residual_reference(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Pure-torch definition."""
    return (x.float() + y.float() * gate.float()).to(x.dtype)


@triton.jit
def _gated_kernel(X, Y, G, OUT, n_rows, L, C, sxb, sxl, syb, syl, sgb, sgl, sob, sol,
                  BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    b = rows // L
    l = rows % L
    m = (rows < n_rows)[:, None] & (cols < C)
    x = tl.load(X + (b * sxb + l * sxl)[:, None] + cols, mask=m, other=0.0).to(tl.float32)
    y = tl.load(Y + (b * syb + l * syl)[:, None] + cols, mask=m, other=0.0).to(tl.float32)
    g = tl.load(G + (b * sgb + l * sgl)[:, None] + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(OUT + (b * sob + l * sol)[:, None] + cols, (x + g * y).to(OUT.dtype.element_ty), mask=m)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + gate * y`` for x, y (B, L, C) and gate (B, 1, C) or (B, L, C); new tensor in x's dtype."""
    check_float("x", x)
    check_float("y", y)
    if x.ndim != 3 or y.shape != x.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must both be (batch, tokens, channels) of one shape")
    bsz, n, c = x.shape
    check_channels(c)
    gate = modulation("gate", gate, bsz, n, c)
    check_device(x, y, gate)
    out = torch.empty((bsz, n, c), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = y if y.stride(-1) == 1 else y.contiguous()
    if interpreting():
        block_c, rows, warps = min(256, triton.next_power_of_2(c)), 8, 1
    else:
        block_c, rows, warps = min(1024, triton.next_power_of_2(c)), 4, 4
    grid = (triton.cdiv(bsz * n, rows), triton.cdiv(c, block_c))
    _gated_kernel[grid](x, y, gate, out, bsz * n, n, c, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
                        gate.stride(0), gate.stride(1), out.stride(0), out.stride(1),
                        BLOCK_C=block_c, ROWS=rows, num_warps=warps)
    return out
