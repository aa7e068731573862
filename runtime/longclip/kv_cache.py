"""Self-attention KV cache of a causal (chunk-autoregressive) DiT: a preallocated ring buffer per layer.

Layout of every layer's buffer, in tokens (one latent frame = ``frame_tokens`` tokens)::

    [ sinks: sink_chunks | ring: window_chunks (rolling) | scratch: 1 chunk ]

- **Sinks** hold the first chunks of the clip for ever (attention sinks: the anchor of identity
  and style in a long rollout).
- **Ring** holds the most recent ``window_chunks`` committed chunks; when full, a new chunk
  overwrites the oldest slot in place (``copy_`` into a preallocated tensor, gpt-fast style: no
  concatenation, no reallocation), so memory is the same for a 5 s and a 60 s clip.
- **Scratch** takes the keys/values of the chunk being denoised once the ring is full.

Keys are stored already RoPE-rotated at their absolute frame positions, so attention over the
buffer needs no position bookkeeping and is order-independent: the current chunk attends to
every visible past token (all earlier chunks) plus all of its own tokens, i.e. the block-causal
mask restricted to one query chunk is full. Slots are therefore visited in any order.

While the ring is not yet full the current chunk is written where it will be committed (right
after the valid prefix), so ``visible`` is always the contiguous prefix ``[0, end)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from vidrt.errors import ConfigError, ShapeError
from vidrt.models.dit import COMMIT_CONTEXTS

__all__ = ["KVCacheConfig", "KVCache", "LayerCache"]


@dataclass(frozen=True)
class KVCacheConfig:
    """Shape of a cache. Sizes are in latent frames; sinks and window are whole chunks."""

    chunk_frames: int  # latent frames per causal chunk (the model's num_frame_per_block)
    frame_tokens: int  # tokens per latent frame (H'/ph * W'/pw)
    sink_frames: int = 0  # first frames kept for ever
    window_frames: int = 0  # most recent past frames kept (rolling)
    # What a finished chunk attends to when its keys/values are written (the commit forward):
    # "window": the sinks and the rolling window, as CausVid / Self-Forcing roll out (their training saw it);
    # "sinks": the sinks and itself only, the [sink | previous | current] layout of a causal DiT fine-tuned
    # on short windows (the embedded one): each past chunk's keys/values are then what that training saw.
    commit_context: str = "window"

    def __post_init__(self) -> None:
        if self.chunk_frames < 1 or self.frame_tokens < 1:
            raise ConfigError(f"KV cache needs chunk_frames >= 1 and frame_tokens >= 1, got "
                              f"{self.chunk_frames} and {self.frame_tokens}")
        for name in ("sink_frames", "window_frames"):
            n = getattr(self, name)
            if n < 0 or n % self.chunk_frames:
                c = self.chunk_frames
                raise ConfigError(f"{name}={n} must be a non-negative multiple of the chunk size ({c} latent "
                                  f"frames); use {c * max(0, round(n / c))} or {c * (max(0, round(n / c)) + 1)}")
        if self.commit_context not in COMMIT_CONTEXTS:
            raise ConfigError(f"commit_context={self.commit_context!r}; use one of {', '.join(COMMIT_CONTEXTS)} "
                              "(what a finished chunk attends to when its keys/values are written)")
        if self.sink_frames + self.window_frames == 0:
            raise ConfigError("a KV cache with no sink and no window frames keeps nothing; "
                              "give window_frames > 0 (e.g. 3 chunks' worth)")

    @property
    def chunk_tokens(self) -> int:
        return self.chunk_frames * self.frame_tokens

    @property
    def sink_tokens(self) -> int:
        return self.sink_frames * self.frame_tokens

    @property
    def sink_chunks(self) -> int:
        return self.sink_frames // self.chunk_frames

    @property
    def window_chunks(self) -> int:
        return self.window_frames // self.chunk_frames

    @property
    def past_tokens(self) -> int:
        """Most committed tokens kept (sinks + ring)."""
        return (self.sink_frames + self.window_frames) * self.frame_tokens

    @property
    def capacity_tokens(self) -> int:
        return self.past_tokens + self.chunk_tokens


class KVCache:
    """Preallocated keys/values (layers, B, capacity, H, D) for the past chunks of a causal clip.

    Use: ``begin_chunk(n_tokens, commit=False)`` before each denoising forward of a chunk (its
    keys/values are written, attended to, and forgotten), ``begin_chunk(n, commit=True)`` before the
    one forward over the finished clean chunk (its keys/values become part of the past), then
    ``end_chunk()`` after a commit forward. :meth:`layer` hands each attention layer its view.
    """

    def __init__(self, config: KVCacheConfig, *, num_layers: int, batch: int, heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.config = config
        shape = (num_layers, batch, config.capacity_tokens, heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.filled = 0  # valid past tokens in [0, past_tokens)
        self.ring_next = 0  # ring slot (in chunks) the next commit overwrites once the ring is full
        self.committed_chunks = 0
        self.evicted_chunks = 0
        self._cur: Optional[tuple[int, int, int]] = None  # (write start, n tokens, visible end)
        self._commit = False
        self._rows = 0
        self._layers = [LayerCache(self, i) for i in range(num_layers)]

    @classmethod
    def for_model(cls, dit, config: KVCacheConfig, batch: int, *, dtype=None, device=None) -> "KVCache":
        """A cache sized for a WanDiT's layers, heads and head dim."""
        c = dit.config
        w = dit.patch_embedding.weight
        return cls(config, num_layers=c.num_layers, batch=batch, heads=c.num_attention_heads,
                   head_dim=c.attention_head_dim, dtype=dtype or w.dtype, device=device or w.device)

    # ---- sizes
    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    @property
    def full(self) -> bool:
        return self.filled >= self.config.past_tokens

    def layer(self, index: int) -> "LayerCache":
        return self._layers[index]

    # ---- chunk protocol
    def begin_chunk(self, num_tokens: int, commit: bool = False, rows: Optional[int] = None) -> None:
        """Place the next forward's ``num_tokens`` current tokens (at most one chunk).

        ``rows``: the forward's batch when it is the leading part of the cache's batch (e.g. the cond
        branch alone of a [cond, uncond] cache on a CFG-cache step); a commit writes every row.
        """
        cfg = self.config
        if not 0 < num_tokens <= cfg.chunk_tokens:
            raise ShapeError(f"a KV-cached forward takes one chunk of at most {cfg.chunk_tokens} tokens "
                             f"({cfg.chunk_frames} latent frames), got {num_tokens}")
        if commit and num_tokens != cfg.chunk_tokens:
            raise ShapeError(f"only whole chunks ({cfg.chunk_tokens} tokens) can be committed to the cache, got "
                             f"{num_tokens}; a shorter last chunk needs no commit")
        if self.full:
            start = cfg.past_tokens  # scratch; a commit copies it into the ring afterwards
        else:
            start = self.filled
        batch = self.k.shape[1]
        rows = batch if rows is None else int(rows)
        if not 0 < rows <= batch or (commit and rows != batch):
            raise ShapeError(f"KV cache holds a batch of {batch}; a forward may use its first 1..{batch} rows "
                             f"(a commit all {batch}), got {rows}")
        self._cur = (start, num_tokens, start + num_tokens)
        self._rows = rows
        self._commit = commit

    def end_chunk(self) -> None:
        """After a commit forward: the chunk's keys/values join the past (evicting the oldest if full)."""
        if not self._commit or self._cur is None:
            raise ConfigError("end_chunk() follows a begin_chunk(..., commit=True) forward")
        cfg = self.config
        start, n, _ = self._cur
        if self.full:
            dst = cfg.sink_tokens + self.ring_next * cfg.chunk_tokens
            self.k[:, :, dst:dst + n].copy_(self.k[:, :, start:start + n])
            self.v[:, :, dst:dst + n].copy_(self.v[:, :, start:start + n])
            self.ring_next = (self.ring_next + 1) % max(1, cfg.window_chunks)
            self.evicted_chunks += 1
        else:
            self.filled += n
        self.committed_chunks += 1
        self._cur = None
        self._commit = False

    def drop_window(self) -> None:
        """Forget the rolling window (a hard cut), keep the sinks."""
        self.filled = min(self.filled, self.config.sink_tokens)
        self.ring_next = 0

    def reset(self) -> None:
        self.filled = self.ring_next = self.committed_chunks = self.evicted_chunks = 0
        self._cur = None

    def _slot(self) -> tuple[int, int, int]:
        if self._cur is None:
            raise ConfigError("KV cache used outside begin_chunk(); call cache.begin_chunk(tokens) before the forward")
        return self._cur


class LayerCache:
    """One layer's view: write the current rotated keys/values, return what the chunk attends to."""

    def __init__(self, cache: KVCache, index: int):
        self.cache = cache
        self.index = index

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k (RoPE-rotated), v (B, n, H, D) of the current chunk -> visible keys, values (B, end, H, D)."""
        start, n, end = self.cache._slot()
        if k.shape[1] != n:
            raise ShapeError(f"KV cache expected {n} current tokens (begin_chunk), got {k.shape[1]}")
        rows = self.cache._rows
        if k.shape[0] != rows:
            raise ShapeError(f"KV cache expected a batch of {rows} (begin_chunk rows), got {k.shape[0]}")
        kb, vb = self.cache.k[self.index, :rows], self.cache.v[self.index, :rows]
        kb[:, start:end].copy_(k)
        vb[:, start:end].copy_(v)
        sinks = self.cache.config.sink_tokens
        if self.cache._commit and self.cache.config.commit_context == "sinks" and start > sinks:
            # once per chunk: [sinks | this chunk], the ring skipped (keys carry their RoPE, so order is free)
            return torch.cat([kb[:, :sinks], kb[:, start:end]], 1), torch.cat([vb[:, :sinks], vb[:, start:end]], 1)
        return kb[:, :end], vb[:, :end]
