"""The one attention entry point of vidrt.

``attention(q, k, v, rope_q=, rope_k=, mask=, backend=)`` on (B, L, H, D) tensors. Backends:

- ``sdpa``: torch scaled_dot_product_attention on RoPE-rotated q/k with the mask materialised;
  the reference every other backend is tested against. Always available.
- ``triton``: vidrt's spacetime flash attention (fused RoPE, masks from the spec), see
  ``vidrt.kernels``. Imported on first use.
- ``flash_attn``: the flash-attn package when installed (full mask only).
"""
from __future__ import annotations

import importlib.util
import math
from typing import Callable, Optional

import torch

from vidrt.errors import BackendUnavailableError, ConfigError, ShapeError
from vidrt.kernels.reference import MaskSpec, Rope3D, apply_rope, attention_reference

__all__ = ["attention", "MaskSpec", "Rope3D", "BACKENDS", "available_backends", "check_backend"]

BACKENDS = ("sdpa", "triton", "flash_attn")


def _sdpa(q, k, v, rope_q, rope_k, mask, kv_lens, scale):
    # the reference semantics of vidrt.kernels (one implementation of exact attention)
    return attention_reference(q, k, v, rope_q=rope_q, rope_k=rope_k, mask=mask, kv_lens=kv_lens, scale=scale)


def _triton(q, k, v, rope_q, rope_k, mask, kv_lens, scale):
    from vidrt.kernels import spacetime_attention  # lazy: imports triton

    try:
        spacetime_attention.check_inputs(q, k, v, rope_q=rope_q, rope_k=rope_k, mask=mask, kv_lens=kv_lens)
    except (ValueError, TypeError) as e:  # kernels are leaves: they raise plain errors, the runtime names them
        raise ShapeError(str(e)) from None
    return spacetime_attention.attention(q, k, v, rope_q=rope_q, rope_k=rope_k, mask=mask, kv_lens=kv_lens, scale=scale)


def _flash_attn(q, k, v, rope_q, rope_k, mask, kv_lens, scale):
    if (mask is not None and mask.kind != "full") or kv_lens is not None:
        raise ConfigError("attention='flash_attn' supports full masks only; use attention='triton' for "
                          "block-causal / window masks")
    from flash_attn import flash_attn_func  # type: ignore[import-not-found]

    if rope_q is not None:
        q = apply_rope(q, *rope_q.dense())
    if rope_k is not None:
        k = apply_rope(k, *rope_k.dense())
    return flash_attn_func(q, k, v, softmax_scale=scale)


_IMPLS: dict[str, Callable] = {"sdpa": _sdpa, "triton": _triton, "flash_attn": _flash_attn}


def available_backends() -> dict[str, str]:
    """Backend name -> "ok" or the reason it cannot run here."""
    out = {"sdpa": "ok"}
    if importlib.util.find_spec("triton") is None:
        out["triton"] = "triton is not installed (pip install 'vidrt[triton]')"
    elif not torch.cuda.is_available():
        import os

        out["triton"] = "ok" if os.environ.get("TRITON_INTERPRET") == "1" else (
            "no CUDA GPU; set TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter (slow, for testing)")
    else:
        out["triton"] = "ok"
    if importlib.util.find_spec("flash_attn") is None:
        out["flash_attn"] = "flash-attn is not installed (pip install 'vidrt[flash]', needs a CUDA GPU)"
    elif not torch.cuda.is_available():
        out["flash_attn"] = "flash-attn needs a CUDA GPU"
    else:
        out["flash_attn"] = "ok"
    return out


def check_backend(name: str) -> str:
    """Validate a backend name and that it can run here; returns the name."""
    if name not in _IMPLS:
        raise ConfigError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    status = available_backends()[name]
    if status != "ok":
        raise BackendUnavailableError(f"attention backend {name!r} cannot run here: {status}. Use attention='sdpa'.")
    return name


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    rope_q: Optional[Rope3D] = None,
    rope_k: Optional[Rope3D] = None,
    mask: Optional[MaskSpec] = None,
    kv_lens: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    backend: str = "sdpa",
) -> torch.Tensor:
    """Attention of q (B, Lq, H, D) over k, v (B, Lk, H, D) -> (B, Lq, H, D).

    rope_q / rope_k rotate q / k by their token grids first; ``mask`` restricts which pairs attend
    (full when None); ``kv_lens`` (B,) ignores padded keys of shorter sequences.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ShapeError(f"attention expects (batch, tokens, heads, head_dim) tensors, got q{tuple(q.shape)} "
                         f"k{tuple(k.shape)} v{tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ShapeError(f"attention shapes disagree: q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}; "
                         "k and v must match and share batch, heads and head_dim with q")
    for name, rope, n in (("rope_q", rope_q, q.shape[1]), ("rope_k", rope_k, k.shape[1])):
        if rope is not None and (rope.num_tokens != n or rope.head_dim != q.shape[-1]):
            raise ShapeError(f"{name} covers a grid {rope.grid} of {rope.num_tokens} tokens x head_dim "
                             f"{rope.head_dim} but the tensor has {n} tokens x head_dim {q.shape[-1]}")
    if mask is not None:
        try:
            mask.check(q.shape[1], k.shape[1])
        except ValueError as e:
            raise ShapeError(str(e)) from None
        if mask.kind == "full":
            mask = None
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    impl = _IMPLS.get(backend)
    if impl is None:
        raise ConfigError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return impl(q, k, v, rope_q, rope_k, mask, kv_lens, scale)
