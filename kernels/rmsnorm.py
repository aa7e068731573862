"""RMSNorm with a weight over the last dim (Wan's q/k norm across all heads, before the head split).

fp32 statistics, ``x * rsqrt(mean(x^2) + eps) * weight``, output in x's dtype -- the semantics of
``torch.nn.functional.rms_norm`` that Wan's ``torch.nn.RMSNorm(dim * heads)`` uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from vidrt.kernels._rows import check_channels, check_device, check_float, interpreting, row_launch

__all__ = ["rms_norm", "rms_norm_reference"]


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pure-torch definition (fp32 math, result in x's dtype)."""
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)


@triton.jit
def _rmsnorm_kernel(X, W, OUT, n_rows, C, eps, sx, so, BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)[None, :]
    m = (rows < n_rows)[:, None] & (cols < C)
    x = tl.load(X + rows[:, None].to(tl.int64) * sx + cols, mask=m, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 1) / C + eps)
    w = tl.load(W + cols, mask=cols < C, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w
    tl.store(OUT + rows[:, None].to(tl.int64) * so + cols, y.to(OUT.dtype.element_ty), mask=m)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm of x (..., C) with weight (C,); returns a new tensor of x's shape and dtype."""
    check_float("x", x)
    check_float("weight", weight)
    if x.ndim < 1 or weight.ndim != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight shape {tuple(weight.shape)} does not match the last dim of x {tuple(x.shape)}; "
                         "rms_norm normalises the last dim with a weight of that size")
    c = x.shape[-1]
    check_channels(c)
    check_device(x, weight)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    x2 = x.reshape(-1, c)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    weight = weight.contiguous()
    n_rows = x2.shape[0]
    block_c, rows, warps = row_launch(c, interpreting())
    _rmsnorm_kernel[(triton.cdiv(n_rows, rows),)](x2, weight, out, n_rows, c, float(eps), x2.stride(0), c,
                                                   BLOCK_C=block_c, ROWS=rows, num_warps=warps)
    return out
