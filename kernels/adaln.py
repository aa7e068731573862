"""Fused LayerNorm (no affine) + adaLN modulation: ``LN(x) * (1 + scale) + shift`` in one pass.

The DiT block's ``norm1`` / ``norm3`` + modulate (Wan: FP32LayerNorm without affine, then the
(B, 1, C) per-batch or (B, L, C) per-token scale/shift of the timestep embedding). Statistics and
arithmetic in fp32, output in x's dtype, like diffusers' ``(norm(x.float()) * (1 + s) + sh).type_as(x)``.
One read of x and one write of the output instead of the 4-5 passes of the unfused torch ops.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from vidrt.kernels._rows import check_channels, check_device, check_float, interpreting, modulation, row_launch

__all__ = ["layernorm_modulate", "layernorm_modulate_reference"]


def layernorm_modulate_reference(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6,
                                 out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Pure-torch definition: fp32 LayerNorm without affine over the last dim, then modulate."""
    y = F.layer_norm(x.float(), (x.shape[-1],), eps=eps) * (1 + scale.float()) + shift.float()
    return y.to(out_dtype or x.dtype)


@triton.jit
def _adaln_kernel(X, SCALE, SHIFT, OUT, n_rows, L, C, eps,
                  sxb, sxl, ssb, ssl, shb, shl, sob, sol,
                  BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    b = rows // L
    l = rows % L
    cols = tl.arange(0, BLOCK_C)[None, :]
    m = (rows < n_rows)[:, None] & (cols < C)
    x = tl.load(X + (b * sxb + l * sxl)[:, None] + cols, mask=m, other=0.0).to(tl.float32)
    mean = tl.sum(x, 1) / C
    xc = tl.where(m, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / C + eps)
    sc = tl.load(SCALE + (b * ssb + l * ssl)[:, None] + cols, mask=m, other=0.0).to(tl.float32)
    sh = tl.load(SHIFT + (b * shb + l * shl)[:, None] + cols, mask=m, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * (1.0 + sc) + sh
    tl.store(OUT + (b * sob + l * sol)[:, None] + cols, y.to(OUT.dtype.element_ty), mask=m)


def layernorm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6,
                       out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``LayerNorm(x) * (1 + scale) + shift`` for x (B, L, C); shift/scale (B, 1, C) or (B, L, C).

    Argument order follows Wan's modulation chunks (shift, scale, gate).

    Returns a new contiguous (B, L, C) tensor in ``out_dtype`` (default x's dtype).
    """
    check_float("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, tokens, channels), got shape {tuple(x.shape)}")
    bsz, n, c = x.shape
    check_channels(c)
    scale = modulation("scale", scale, bsz, n, c)
    shift = modulation("shift", shift, bsz, n, c)
    check_device(x, scale, shift)
    if out_dtype is not None and out_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"out_dtype must be float16, bfloat16 or float32, got {out_dtype}")
    out = torch.empty((bsz, n, c), dtype=out_dtype or x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    if x.stride(-1) != 1:
        x = x.contiguous()
    block_c, rows, warps = row_launch(c, interpreting())
    grid = (triton.cdiv(bsz * n, rows),)
    _adaln_kernel[grid](x, scale, shift, out, bsz * n, n, c, float(eps),
                        x.stride(0), x.stride(1), scale.stride(0), scale.stride(1), shift.stride(0), shift.stride(1),
                        out.stride(0), out.stride(1), BLOCK_C=block_c, ROWS=rows, num_warps=warps)
    return out
