"""Spacetime flash attention (forward) in Triton: fused 3D RoPE, structural masks, varlen.

One kernel computes ``softmax(q k^T * scale + mask) v`` on (B, L, H, D) tensors with online
softmax and fp32 accumulation, and never materialises anything of size L x L or L x D besides
the inputs and the output:

- **RoPE** (``Rope3D`` per-axis tables) is applied to q once per program and to each k tile as it
  is loaded, gathering cos/sin rows by the token's (t, h, w) coordinate from a packed
  (T + H + W, D/2) table. Channel pairs (2i, 2i+1) rotate together, as in ``reference.apply_rope``.
- **Masks** come from the ``MaskSpec`` fields: ``block_causal`` bounds each query block's key
  range (key blocks past the last chunk it may see are never visited, blocks every row sees run
  unmasked); ``window`` (STA-style tile window) walks the tokens in tile-major order -- the
  kernel computes each token's source row from its tile-major position, so the permutation is a
  gather inside the loads and a scatter inside the store, with no extra copy -- and visits only
  the contiguous runs of key tiles inside the query tile's window, so empty tiles cost nothing.
- **Lengths**: separate Lq / Lk (cross-attention), ``kv_lens`` (B,) ignores padded keys,
  ``q_lens`` (B,) zeroes padded query rows (same semantics as ``attention_reference``).

Block sizes, warps and stages are autotuned on GPU with a key of (head_dim, mask kind, rope,
tile shape, sequence-length bucket, dtypes). Under ``TRITON_INTERPRET=1`` (CPU tests) a single
small configuration runs instead.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import Optional

import torch
import triton
import triton.language as tl

from vidrt.kernels.reference import MaskSpec, Rope3D, attention_reference, rope_axis_dims

__all__ = ["attention", "attention_reference", "check_inputs", "supported_head_dim", "padded_head_dim"]

_MASK_CODES = {"full": 0, "block_causal": 1, "window": 2}
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def padded_head_dim(head_dim: int) -> int:
    """Head dim the kernel computes with: the next power of two, at least 32 (tl.dot needs K >= 16 per half)."""
    return max(32, triton.next_power_of_2(head_dim))


def supported_head_dim(head_dim: int) -> bool:
    """True for multiples of 8 in [16, 256]; 64 and 128 run unpadded, others pad to a power of two."""
    return head_dim % 8 == 0 and MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM


# ----------------------------------------------------------------------------------------------
# Triton device code
# ----------------------------------------------------------------------------------------------


@triton.jit
def _tile_major(p, gT, gH, gW, nH, nW, TILE_T: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """Tile-major position p -> (tile coords, token coords, in-grid flag, t-major source row)."""
    TS: tl.constexpr = TILE_T * TILE_H * TILE_W
    tile = p // TS
    within = p % TS
    tt = tile // (nH * nW)
    th = (tile // nW) % nH
    tw = tile % nW
    t = tt * TILE_T + within // (TILE_H * TILE_W)
    h = th * TILE_H + (within // TILE_W) % TILE_H
    w = tw * TILE_W + within % TILE_W
    valid = (t < gT) & (h < gH) & (w < gW)
    row = (t * gH + h) * gW + w
    return tt, th, tw, t, h, w, valid, row


@triton.jit
def _rope_halves(xe, xo, t, h, w, valid, TAB, gT, gH, gW,
                 HALF: tl.constexpr, D2T: tl.constexpr, D2H: tl.constexpr, DH: tl.constexpr):
    """Rotate channel pairs (xe[i], xo[i]) of each row by its (t, h, w) angles from the packed table.

    TAB is (2, gT + gH + gW, DH) fp32: cos then sin; pair i < D2T reads row t, the next D2H pairs
    read row gT + h, the rest row gT + gH + w.
    """
    i = tl.arange(0, DH)[None, :]
    row = tl.where(i < D2T, t[:, None], tl.where(i < D2T + D2H, gT + h[:, None], gT + gH + w[:, None]))
    m = valid[:, None] & (i < HALF)
    off = row * DH + i
    c = tl.load(TAB + off, mask=m, other=1.0)
    s = tl.load(TAB + (gT + gH + gW) * DH + off, mask=m, other=0.0)
    return xe * c - xo * s, xe * s + xo * c


@triton.jit
def _attn_block_range(acc, l_i, m_i, q, qe, qo, k_base, v_base, stride_kn, stride_vn, start, end, kv_len,
                      qk_scale, q_chunk, chunk, qtt, qth, qtw, wT, wH, wW,
                      gT, gH, gW, nH, nW, RK, rkT, rkH, rkW,
                      HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, D2T: tl.constexpr, D2H: tl.constexpr,
                      MASK: tl.constexpr, BOUND: tl.constexpr, PAIR: tl.constexpr, KEYCHECK: tl.constexpr,
                      ROPE_K: tl.constexpr, SPLIT: tl.constexpr, DOT_F32: tl.constexpr, PREC: tl.constexpr,
                      TILE_T: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online-softmax update of (acc, l_i, m_i) over key positions [start, end) in BLOCK_N steps.

    BOUND: mask keys at or past ``end``; PAIR: apply the per-pair mask of MASK (block-causal chunk
    test or tile-window test); KEYCHECK (window only): drop padded / out-of-length keys.
    """
    DH: tl.constexpr = D_PAD // 2
    offs_d = tl.arange(0, D_PAD)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        if MASK == 2:
            ktt, kth, ktw, kt, kh, kw, k_ok, k_row = _tile_major(offs_n, gT, gH, gW, nH, nW, TILE_T, TILE_H, TILE_W)
            if KEYCHECK:
                k_ok = k_ok & (k_row < kv_len)
            if BOUND:
                k_ok = k_ok & (offs_n < end)
        else:
            k_row = offs_n
            k_ok = offs_n < end
            if ROPE_K:
                kt = k_row // (rkH * rkW)
                kh = (k_row // rkW) % rkH
                kw = k_row % rkW
        ld_mask = offs_d[None, :] < HEAD_DIM
        if BOUND or KEYCHECK:
            ld_mask = ld_mask & k_ok[:, None]
        k = tl.load(k_base + k_row[:, None] * stride_kn + offs_d[None, :], mask=ld_mask, other=0.0)
        v = tl.load(v_base + k_row[:, None] * stride_vn + offs_d[None, :], mask=ld_mask, other=0.0)
        if DOT_F32:
            v = v.to(tl.float32)
        if SPLIT:
            ke, ko = tl.split(tl.reshape(k.to(tl.float32), (BLOCK_N, DH, 2)))
            if ROPE_K:
                ke, ko = _rope_halves(ke, ko, kt, kh, kw, k_ok, RK, rkT, rkH, rkW, HEAD_DIM // 2, D2T, D2H, DH)
                ke = ke.to(k.dtype)  # rotated k rounds to the input dtype, as in the reference
                ko = ko.to(k.dtype)
            s = tl.dot(qe, tl.trans(ke.to(qe.dtype)), input_precision=PREC)
            s = tl.dot(qo, tl.trans(ko.to(qo.dtype)), s, input_precision=PREC)
        else:
            s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=PREC)
        s = s * qk_scale
        if BOUND or KEYCHECK:
            s = tl.where(k_ok[None, :], s, float("-inf"))
        if PAIR:
            if MASK == 1:
                s = tl.where((offs_n // chunk)[None, :] <= q_chunk[:, None], s, float("-inf"))
            else:
                near = (tl.abs(ktt[None, :] - qtt[:, None]) <= wT) & (tl.abs(kth[None, :] - qth[:, None]) <= wH) \
                    & (tl.abs(ktw[None, :] - qtw[:, None]) <= wW)
                s = tl.where(near, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows without any key yet
        alpha = tl.math.exp2(m_i - m_safe)
        p = tl.math.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, Out,
              stride_qb, stride_qm, stride_qh, stride_kb, stride_kn, stride_kh,
              stride_vb, stride_vn, stride_vh, stride_ob, stride_om, stride_oh,
              Lq, Lk, H, Lq_eff, qk_scale,
              KV_LENS, Q_LENS, RQ, RK, rqT, rqH, rqW, rkT, rkH, rkW,
              chunk, q_offset, gT, gH, gW, nT, nH, nW, wT, wH, wW, seq_bucket,
              HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, D2T: tl.constexpr, D2H: tl.constexpr,
              MASK: tl.constexpr, ROPE_Q: tl.constexpr, ROPE_K: tl.constexpr,
              HAS_KV_LENS: tl.constexpr, HAS_Q_LENS: tl.constexpr, HAS_PAD: tl.constexpr,
              TILE_T: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
              DOT_F32: tl.constexpr, PREC: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    DH: tl.constexpr = D_PAD // 2
    SPLIT: tl.constexpr = ROPE_K
    TS: tl.constexpr = TILE_T * TILE_H * TILE_W
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if MASK == 1:  # longest query blocks (most keys) first
        pid_m = tl.num_programs(0) - 1 - pid_m
    b = pid_bh // H
    hd = pid_bh % H
    b64 = b.to(tl.int64)  # batch / head offsets in 64 bits: B * L * H * D may exceed 2^31
    h64 = hd.to(tl.int64)
    kv_len = Lk
    if HAS_KV_LENS:
        kv_len = tl.maximum(tl.minimum(tl.load(KV_LENS + b).to(tl.int32), Lk), 0)
    q_len = Lq
    if HAS_Q_LENS:
        q_len = tl.maximum(tl.minimum(tl.load(Q_LENS + b).to(tl.int32), Lq), 0)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    qtt = offs_m
    qth = offs_m
    qtw = offs_m
    if MASK == 2:
        qtt, qth, qtw, qt, qh, qw, q_ok, q_row = _tile_major(offs_m, gT, gH, gW, nH, nW, TILE_T, TILE_H, TILE_W)
    else:
        q_row = offs_m
        q_ok = offs_m < Lq
        if ROPE_Q:
            qt = q_row // (rqH * rqW)
            qh = (q_row // rqW) % rqH
            qw = q_row % rqW
    q_keep = q_ok & (q_row < q_len)

    q_ptrs = Q + b64 * stride_qb + h64 * stride_qh + q_row[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=q_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    qe = tl.zeros((BLOCK_M, DH), dtype=tl.float32)  # placeholders when not SPLIT
    qo = tl.zeros((BLOCK_M, DH), dtype=tl.float32)
    if ROPE_Q or SPLIT:
        xe, xo = tl.split(tl.reshape(q.to(tl.float32), (BLOCK_M, DH, 2)))
        if ROPE_Q:
            xe, xo = _rope_halves(xe, xo, qt, qh, qw, q_ok, RQ, rqT, rqH, rqW, HEAD_DIM // 2, D2T, D2H, DH)
            # round to the input dtype as the reference does, then compute in the dot dtype
            xe = xe.to(q.dtype)
            xo = xo.to(q.dtype)
        if SPLIT:
            qe = xe.to(tl.float32) if DOT_F32 else xe.to(q.dtype)
            qo = xo.to(tl.float32) if DOT_F32 else xo.to(q.dtype)
        else:
            q = tl.reshape(tl.join(xe, xo), (BLOCK_M, D_PAD)).to(q.dtype)
    if DOT_F32:
        q = q.to(tl.float32)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, D_PAD), dtype=tl.float32)
    k_base = K + b64 * stride_kb + h64 * stride_kh
    v_base = V + b64 * stride_vb + h64 * stride_vh
    any_row = tl.max(q_keep.to(tl.int32), 0) > 0
    q_chunk = (offs_m + q_offset) // tl.maximum(chunk, 1)

    if MASK == 2:
        # bounding box, in tile coordinates, of the query tiles of this block
        last = tl.minimum(pid_m * BLOCK_M + BLOCK_M, Lq_eff) - 1
        ta = (pid_m * BLOCK_M) // TS
        tb = last // TS
        a_t = ta // (nH * nW)
        a_h = (ta // nW) % nH
        a_w = ta % nW
        b_t = tb // (nH * nW)
        b_h = (tb // nW) % nH
        b_w = tb % nW
        same_t = a_t == b_t
        same_th = same_t & (a_h == b_h)
        h_lo = tl.where(same_t, a_h, 0)
        h_hi = tl.where(same_t, b_h, nH - 1)
        w_lo = tl.where(same_th, a_w, 0)
        w_hi = tl.where(same_th, b_w, nW - 1)
        kt_lo = tl.maximum(a_t - wT, 0)
        kt_hi = tl.where(any_row, tl.minimum(b_t + wT, nT - 1), kt_lo - 1)
        kh_lo = tl.maximum(h_lo - wH, 0)
        kh_hi = tl.minimum(h_hi + wH, nH - 1)
        kw_lo = tl.maximum(w_lo - wW, 0)
        kw_hi = tl.minimum(w_hi + wW, nW - 1)
        for kt_ in range(kt_lo, kt_hi + 1):
            for kh_ in range(kh_lo, kh_hi + 1):
                seg = (kt_ * nH + kh_) * nW
                acc, l_i, m_i = _attn_block_range(
                    acc, l_i, m_i, q, qe, qo, k_base, v_base, stride_kn, stride_vn,
                    (seg + kw_lo) * TS, (seg + kw_hi + 1) * TS, kv_len, qk_scale, q_chunk, chunk,
                    qtt, qth, qtw, wT, wH, wW, gT, gH, gW, nH, nW, RK, rkT, rkH, rkW,
                    HEAD_DIM, D_PAD, D2T, D2H, MASK, TS % BLOCK_N != 0, TS % BLOCK_M != 0,
                    HAS_PAD or HAS_KV_LENS, ROPE_K, SPLIT, DOT_F32, PREC, TILE_T, TILE_H, TILE_W, BLOCK_M, BLOCK_N)
    else:
        hi = tl.where(any_row, kv_len, 0)
        full_hi = hi
        if MASK == 1:
            first_q = pid_m * BLOCK_M + q_offset
            last_q = tl.minimum(pid_m * BLOCK_M + BLOCK_M, q_len) - 1 + q_offset
            full_hi = tl.minimum((first_q // chunk + 1) * chunk, hi)
            hi = tl.minimum((last_q // chunk + 1) * chunk, hi)
        full_end = (full_hi // BLOCK_N) * BLOCK_N
        # key blocks every row sees, all in bounds: no masking at all
        acc, l_i, m_i = _attn_block_range(
            acc, l_i, m_i, q, qe, qo, k_base, v_base, stride_kn, stride_vn, 0, full_end, kv_len, qk_scale,
            q_chunk, chunk, qtt, qth, qtw, wT, wH, wW, gT, gH, gW, nH, nW, RK, rkT, rkH, rkW,
            HEAD_DIM, D_PAD, D2T, D2H, MASK, False, False, False, ROPE_K, SPLIT, DOT_F32, PREC,
            TILE_T, TILE_H, TILE_W, BLOCK_M, BLOCK_N)
        # the rest: ragged end and (block-causal) the diagonal chunk blocks
        acc, l_i, m_i = _attn_block_range(
            acc, l_i, m_i, q, qe, qo, k_base, v_base, stride_kn, stride_vn, full_end, hi, kv_len, qk_scale,
            q_chunk, chunk, qtt, qth, qtw, wT, wH, wW, gT, gH, gW, nH, nW, RK, rkT, rkH, rkW,
            HEAD_DIM, D_PAD, D2T, D2H, MASK, True, MASK == 1, False, ROPE_K, SPLIT, DOT_F32, PREC,
            TILE_T, TILE_H, TILE_W, BLOCK_M, BLOCK_N)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    out = tl.where(q_keep[:, None] & (l_i[:, None] > 0.0), out, 0.0)
    o_ptrs = Out + b64 * stride_ob + h64 * stride_oh + q_row[:, None] * stride_om + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=q_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


# ----------------------------------------------------------------------------------------------
# Autotuning
# ----------------------------------------------------------------------------------------------

_AUTOTUNE_KEY = ["HEAD_DIM", "MASK", "ROPE_Q", "ROPE_K", "TILE_T", "TILE_H", "TILE_W", "seq_bucket"]


def _gpu_configs() -> list:
    # Chosen from sm_90 compiles of this kernel (cuobjdump, no GPU at hand): with fused RoPE on k,
    # 8 warps x BLOCK_M 128 and BLOCK_N <= 64 compile without register spills at head_dim 128;
    # 4-warp configs spill there but not at head_dim 64 / without RoPE, so a few stay in the set.
    out = []
    for bm, bn, warps, stages in [
        (128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 2), (128, 32, 8, 3),
        (128, 128, 8, 2), (64, 64, 4, 3), (64, 32, 4, 4), (128, 128, 8, 3),
    ]:
        out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages))
    return out


def _prune_configs(configs, named_args, **kwargs):
    """Drop configs that do not fit the head dim; for tile windows prefer blocks that tile-align."""
    d_pad = named_args.get("D_PAD", kwargs.get("D_PAD", 128))
    kept = [c for c in configs if d_pad <= 128 or c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 128]
    mask = named_args.get("MASK", kwargs.get("MASK", 0))
    if mask == 2:
        ts = kwargs.get("TILE_T", 1) * kwargs.get("TILE_H", 1) * kwargs.get("TILE_W", 1)
        aligned = [c for c in kept if ts % c.kwargs["BLOCK_M"] == 0 and ts % c.kwargs["BLOCK_N"] == 0]
        kept = aligned or kept
    seq = named_args.get("seq_bucket", kwargs.get("seq_bucket", 1 << 20))
    if seq <= 256:
        kept = [c for c in kept if c.kwargs["BLOCK_M"] <= 64] or kept
    return kept or configs[:1]


_attn_fwd_tuned = triton.autotune(configs=_gpu_configs(), key=_AUTOTUNE_KEY,
                                  prune_configs_by={"early_config_prune": _prune_configs})(_attn_fwd)

# Interpreter: one small configuration (the interpreter is numpy, block sizes only cost time).
INTERPRET_BLOCK_M = 16
INTERPRET_BLOCK_N = 16


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------

_ROPE_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()


def _packed_rope(rope: Rope3D, d_pad: int, device: torch.device) -> torch.Tensor:
    """(2, T + H + W, d_pad/2) fp32: cos rows then sin rows, each pair column filled for its own axis."""
    key = (tuple(id(t) for t in rope.cos + rope.sin), d_pad, str(device))
    hit = _ROPE_CACHE.get(key)
    if hit is not None:
        _ROPE_CACHE.move_to_end(key)
        return hit[0]
    t, h, w = rope.grid
    dh = d_pad // 2
    tab = torch.zeros(2, t + h + w, dh, dtype=torch.float32, device=device)
    row0, col0 = 0, 0
    for axis, n in enumerate(rope.grid):
        c, s = rope.cos[axis], rope.sin[axis]
        tab[0, row0:row0 + n, col0:col0 + c.shape[1]] = c.to(device=device, dtype=torch.float32)
        tab[1, row0:row0 + n, col0:col0 + s.shape[1]] = s.to(device=device, dtype=torch.float32)
        row0 += n
        col0 += c.shape[1]
    _ROPE_CACHE[key] = (tab, rope.cos + rope.sin)  # hold the source tensors so their ids stay unique
    if len(_ROPE_CACHE) > 32:
        _ROPE_CACHE.popitem(last=False)
    return tab


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, rope_q: Optional[Rope3D] = None,
                 rope_k: Optional[Rope3D] = None, mask: Optional[MaskSpec] = None,
                 q_lens: Optional[torch.Tensor] = None, kv_lens: Optional[torch.Tensor] = None) -> None:
    """Raise ValueError / TypeError describing the first input the kernel cannot take. Launches nothing."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"{name} must be a (batch, tokens, heads, head_dim) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if q.dtype not in _DTYPES:
        raise TypeError(f"Triton attention takes float16, bfloat16 or float32 tensors, got {q.dtype}; cast q/k/v first")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}); cast them to one dtype")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention shapes disagree: q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}; "
                         "k and v must match and share batch, heads and head_dim with q")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v are on different devices ({q.device}, {k.device}, {v.device}); move them to one")
    if q.device.type != "cuda" and not _interpreting():
        raise ValueError(f"Triton attention needs CUDA tensors, got {q.device}; move them to a GPU, use "
                         "backend='sdpa', or set TRITON_INTERPRET=1 (before importing triton) to interpret on CPU")
    d = q.shape[-1]
    if not supported_head_dim(d):
        raise ValueError(f"head_dim {d} is not supported by the Triton attention: it takes multiples of 8 in "
                         f"[{MIN_HEAD_DIM}, {MAX_HEAD_DIM}] (64 and 128 unpadded, others padded to a power of two); "
                         "use backend='sdpa' for this model")
    lq, lk = q.shape[1], k.shape[1]
    for name, rope, n in (("rope_q", rope_q, lq), ("rope_k", rope_k, lk)):
        if rope is None:
            continue
        if rope.num_tokens != n or rope.head_dim != d:
            raise ValueError(f"{name} covers a grid {rope.grid} of {rope.num_tokens} tokens x head_dim {rope.head_dim} "
                             f"but the tensor has {n} tokens x head_dim {d}; build it with build_rope_3d({d}, grid)")
        for axis, (c, s, g) in enumerate(zip(rope.cos, rope.sin, rope.grid)):
            if c.shape != s.shape or c.shape[0] != g:
                raise ValueError(f"{name} axis {axis} tables have shapes {tuple(c.shape)} / {tuple(s.shape)} "
                                 f"for a grid size {g}; rebuild the tables with build_rope_3d")
    if mask is not None:
        mask.check(lq, lk)  # ValueError naming the grid / length problem
        if mask.kind == "block_causal" and mask.sink_chunks >= 0:
            raise ValueError("the Triton attention has no block-causal mask with sink-only context chunks "
                             "(sink_chunks, the recompute reference of commit_context='sinks'); use backend='sdpa'")
        if mask.kind == "window":
            for name, rope in (("rope_q", rope_q), ("rope_k", rope_k)):
                if rope is not None and tuple(rope.grid) != tuple(mask.grid):
                    raise ValueError(f"window mask grid {mask.grid} differs from {name} grid {rope.grid}; "
                                     "both must describe the same token grid")
    for name, lens in (("q_lens", q_lens), ("kv_lens", kv_lens)):
        if lens is None:
            continue
        if not isinstance(lens, torch.Tensor) or lens.shape != (q.shape[0],) or lens.dtype.is_floating_point:
            raise ValueError(f"{name} must be an integer tensor of shape ({q.shape[0]},) (one length per sequence), got "
                             f"{tuple(lens.shape) if isinstance(lens, torch.Tensor) else type(lens).__name__}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    rope_q: Optional[Rope3D] = None,
    rope_k: Optional[Rope3D] = None,
    mask: Optional[MaskSpec] = None,
    q_lens: Optional[torch.Tensor] = None,
    kv_lens: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    block_m: Optional[int] = None,
    block_n: Optional[int] = None,
) -> torch.Tensor:
    """Flash attention of q (B, Lq, H, D) over k, v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype.

    Same semantics as ``reference.attention_reference``. ``block_m`` / ``block_n`` pin a block
    configuration instead of autotuning (both or neither; powers of two >= 16).
    """
    check_inputs(q, k, v, rope_q=rope_q, rope_k=rope_k, mask=mask, q_lens=q_lens, kv_lens=kv_lens)
    if (block_m is None) != (block_n is None):
        raise ValueError("pass both block_m and block_n, or neither (autotune)")
    for name, blk in (("block_m", block_m), ("block_n", block_n)):
        if blk is not None and (blk < 16 or blk & (blk - 1)):
            raise ValueError(f"{name} must be a power of two >= 16, got {blk}")
    bsz, lq, nh, d = q.shape
    lk = k.shape[1]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    if lk == 0:
        return out.zero_()
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    d_pad = padded_head_dim(d)
    d2t, d2h, _ = (x // 2 for x in rope_axis_dims(d))
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(d)
    mask = mask if mask is not None and mask.kind != "full" else None
    code = _MASK_CODES[mask.kind] if mask is not None else 0

    dev = q.device
    dummy = torch.zeros(1, dtype=torch.float32, device=dev)
    rq = _packed_rope(rope_q, d_pad, dev) if rope_q is not None else dummy
    rk = _packed_rope(rope_k, d_pad, dev) if rope_k is not None else dummy
    rq_grid = rope_q.grid if rope_q is not None else (1, 1, 1)
    rk_grid = rope_k.grid if rope_k is not None else (1, 1, 1)
    kvl = kv_lens.to(device=dev, dtype=torch.int32) if kv_lens is not None else dummy
    ql = q_lens.to(device=dev, dtype=torch.int32) if q_lens is not None else dummy

    chunk, q_offset = 1, 0
    grid3, ntiles3, win3, tile3 = (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1)
    lq_eff, has_pad = lq, False
    if code == 1:
        chunk, q_offset = mask.chunk_tokens, mask.q_offset
    elif code == 2:
        grid3, win3, tile3 = mask.grid, mask.window, mask.tile
        ntiles3 = tuple(-(-g // t) for g, t in zip(grid3, tile3))
        lq_eff = math.prod(ntiles3) * math.prod(tile3)
        has_pad = any(g % t for g, t in zip(grid3, tile3))

    interp = _interpreting()
    args = (q, k, v, out, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
            lq, lk, nh, lq_eff, scale * 1.4426950408889634,
            kvl, ql, rq, rk, *rq_grid, *rk_grid, chunk, q_offset, *grid3, *ntiles3, *win3,
            triton.next_power_of_2(max(lq, lk)))
    consts = dict(HEAD_DIM=d, D_PAD=d_pad, D2T=d2t, D2H=d2h, MASK=code,
                  ROPE_Q=rope_q is not None, ROPE_K=rope_k is not None,
                  HAS_KV_LENS=kv_lens is not None, HAS_Q_LENS=q_lens is not None, HAS_PAD=has_pad,
                  TILE_T=tile3[0], TILE_H=tile3[1], TILE_W=tile3[2],
                  # the interpreter mis-handles bf16 tl.dot: round to bf16, multiply in fp32 (same products)
                  DOT_F32=q.dtype == torch.float32 or (interp and q.dtype == torch.bfloat16),
                  PREC="ieee" if q.dtype == torch.float32 else None)
    if interp or block_m is not None:
        bm = block_m or INTERPRET_BLOCK_M
        bn = block_n or INTERPRET_BLOCK_N
        grid = (triton.cdiv(lq_eff, bm), bsz * nh)
        _attn_fwd[grid](*args, **consts, BLOCK_M=bm, BLOCK_N=bn, num_warps=4 if bm * bn <= 64 * 64 else 8)
    else:
        grid = lambda meta: (triton.cdiv(lq_eff, meta["BLOCK_M"]), bsz * nh)  # noqa: E731
        _attn_fwd_tuned[grid](*args, **consts)
    return out
