"""Pure-torch references of the attention kernels: 3D RoPE tables, mask specs, exact attention.

These define the semantics every backend (sdpa in the runtime, the Triton kernels here) must
reproduce; kernel tests compare against them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F

MaskKind = Literal["full", "block_causal", "window"]


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Wan's split of head_dim over (t, h, w): h and w get 2*(D//6) each, t the rest."""
    h = w = 2 * (head_dim // 6)
    return head_dim - h - w, h, w


@dataclass(frozen=True)
class Rope3D:
    """3D rotary embedding of a (T, H, W) token grid in t-major order, as per-axis tables.

    ``cos[a]`` / ``sin[a]`` are fp32 tables of shape (grid[a], dims[a] // 2) for axis a in
    (t, h, w); channel pairs (2i, 2i+1) rotate by the same angle (Wan / diffusers layout).
    Kernels gather rows by token coordinate instead of materialising (L, D) tables.
    """

    grid: tuple[int, int, int]
    cos: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    sin: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @property
    def head_dim(self) -> int:
        return 2 * sum(c.shape[1] for c in self.cos)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, D/2) cos and sin, one row per token (built once per table object, then reused)."""
        cached = self.__dict__.get("_dense")
        if cached is None:
            cached = self._build_dense()
            self.__dict__["_dense"] = cached  # frozen dataclass: cache outside the fields
        return cached

    def _build_dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        t, h, w = self.grid
        parts_c, parts_s = [], []
        for axis, (c, s) in enumerate(zip(self.cos, self.sin)):
            shape = [1, 1, 1, c.shape[1]]
            shape[axis] = self.grid[axis]
            parts_c.append(c.view(shape).expand(t, h, w, -1))
            parts_s.append(s.view(shape).expand(t, h, w, -1))
        return (torch.cat(parts_c, -1).reshape(t * h * w, -1), torch.cat(parts_s, -1).reshape(t * h * w, -1))

    def to(self, device: torch.device | str) -> "Rope3D":
        return Rope3D(self.grid, tuple(c.to(device) for c in self.cos), tuple(s.to(device) for s in self.sin))


def build_rope_3d(
    head_dim: int,
    grid: Sequence[int],
    theta: float = 10000.0,
    start: Sequence[int] = (0, 0, 0),
    device: torch.device | str | None = None,
) -> Rope3D:
    """Tables for positions start[a] .. start[a]+grid[a]-1 on each axis (angles in fp64, stored fp32)."""
    tables_c, tables_s = [], []
    for dim, n, s0 in zip(rope_axis_dims(head_dim), grid, start):
        inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
        pos = torch.arange(s0, s0 + n, dtype=torch.float64)
        ang = torch.outer(pos, inv)
        tables_c.append(ang.cos().float().to(device))
        tables_s.append(ang.sin().float().to(device))
    return Rope3D(tuple(int(g) for g in grid), tuple(tables_c), tuple(tables_s))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, L, H, D) by per-token angles; math in fp32, result in x.dtype."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
    return out.to(x.dtype)


@dataclass(frozen=True)
class MaskSpec:
    """Which (query, key) pairs attend, described by structure, never as a dense matrix.

    - ``full``: every pair.
    - ``block_causal``: tokens come in chunks of ``chunk_tokens`` (one or more latent frames);
      a query in chunk c sees keys of chunks <= c. Keys are indexed from the start of the
      key sequence; queries start at key index ``q_offset`` (a KV-cache prefix of past chunks).
      With ``sink_chunks`` >= 0, every chunk before the last sees only the first ``sink_chunks``
      chunks and itself (a past cached against its sinks alone: a causal DiT's commit context
      "sinks"); the last chunk still sees every earlier one.
    - ``window``: self-attention over a (T, H, W) ``grid`` cut into tiles of ``tile`` tokens;
      a query sees keys whose tile is within ``window`` tiles on every axis (STA-style).
    """

    kind: MaskKind = "full"
    chunk_tokens: int = 0
    q_offset: int = 0
    grid: Optional[tuple[int, int, int]] = None
    tile: tuple[int, int, int] = (1, 1, 1)
    window: tuple[int, int, int] = (0, 0, 0)
    sink_chunks: int = -1

    @staticmethod
    def full() -> "MaskSpec":
        return MaskSpec("full")

    @staticmethod
    def block_causal(chunk_tokens: int, q_offset: int = 0, sink_chunks: int = -1) -> "MaskSpec":
        if chunk_tokens <= 0:
            raise ValueError(f"block_causal needs chunk_tokens > 0, got {chunk_tokens}")
        return MaskSpec("block_causal", chunk_tokens=int(chunk_tokens), q_offset=int(q_offset),
                        sink_chunks=int(sink_chunks))

    @staticmethod
    def tile_window(grid: Sequence[int], window: Sequence[int], tile: Sequence[int] = (1, 1, 1)) -> "MaskSpec":
        if len(grid) != 3 or len(window) != 3 or len(tile) != 3:
            raise ValueError("tile_window needs 3-tuples for grid, window and tile (t, h, w)")
        if min(tile) <= 0 or min(window) < 0 or min(grid) <= 0:
            raise ValueError(f"tile_window needs positive grid/tile and non-negative window, got {grid}, {tile}, {window}")
        return MaskSpec("window", grid=tuple(map(int, grid)), tile=tuple(map(int, tile)), window=tuple(map(int, window)))

    def check(self, lq: int, lk: int) -> None:
        """Raise ValueError if this spec cannot describe a (lq, lk) attention."""
        if self.kind == "full":
            return
        if self.kind == "block_causal":
            if self.q_offset + lq > lk:
                raise ValueError(
                    f"block_causal mask: q_offset {self.q_offset} + {lq} queries exceeds {lk} keys; "
                    "keys must hold the cached prefix followed by the current tokens")
            return
        if self.kind == "window":
            n = self.grid[0] * self.grid[1] * self.grid[2]
            if lq != n or lk != n:
                raise ValueError(
                    f"window mask grid {self.grid} has {n} tokens but attention has {lq} queries and {lk} keys; "
                    "pass the token grid (latent frames / patch, height / patch, width / patch) of this sequence")
            return
        raise ValueError(f"unknown mask kind {self.kind!r}; use full, block_causal or window")

    def dense(self, lq: int, lk: int, device: torch.device | str | None = None) -> Optional[torch.Tensor]:
        """Boolean (lq, lk) matrix, True where a pair attends; None for ``full``. Reference only."""
        self.check(lq, lk)
        if self.kind == "full":
            return None
        if self.kind == "block_causal":
            qc = (torch.arange(lq, device=device) + self.q_offset) // self.chunk_tokens
            kc = torch.arange(lk, device=device) // self.chunk_tokens
            allowed = kc[None, :] <= qc[:, None]
            if self.sink_chunks >= 0:
                last = (lk - 1) // self.chunk_tokens
                allowed &= (qc[:, None] == last) | (kc[None, :] < self.sink_chunks) | (kc[None, :] == qc[:, None])
            return allowed
        t, h, w = self.grid
        idx = torch.arange(t * h * w, device=device)
        coords = torch.stack((idx // (h * w), (idx // w) % h, idx % w), -1)
        tiles = coords // torch.tensor(self.tile, device=device)
        diff = (tiles[:, None, :] - tiles[None, :, :]).abs()
        return (diff <= torch.tensor(self.window, device=device)).all(-1)

    def attended_fraction(self, lq: int, lk: int) -> float:
        """Share of (query, key) pairs that attend: for FLOP counts of sparse masks."""
        m = self.dense(lq, lk)
        return 1.0 if m is None else float(m.float().mean())


def attention_reference(
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
) -> torch.Tensor:
    """Exact attention on (B, L, H, D) tensors: RoPE, structural mask, per-sequence lengths.

    Query rows at or past ``q_lens[b]`` come out as zeros; keys at or past ``kv_lens[b]`` are ignored.
    """
    b, lq, _, d = q.shape
    lk = k.shape[1]
    if rope_q is not None:
        q = apply_rope(q, *(t.to(q.device) for t in rope_q.dense()))
    if rope_k is not None:
        k = apply_rope(k, *(t.to(k.device) for t in rope_k.dense()))
    allowed = (mask or MaskSpec.full()).dense(lq, lk, q.device)
    if kv_lens is not None:
        keep = torch.arange(lk, device=q.device)[None, :] < kv_lens.to(q.device)[:, None]  # (B, lk)
        keep = keep[:, None, None, :]
        allowed = keep if allowed is None else (allowed[None, None] & keep)
    elif allowed is not None:
        allowed = allowed[None, None]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed,
        scale=scale if scale is not None else 1.0 / math.sqrt(d),
    ).transpose(1, 2)
    if allowed is not None:
        out = torch.nan_to_num(out, nan=0.0)  # rows with no key at all
    if q_lens is not None:
        valid = torch.arange(lq, device=q.device)[None, :] < q_lens.to(q.device)[:, None]
        out = out * valid[:, :, None, None].to(out.dtype)
    return out
