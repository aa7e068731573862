"""Spacetime diffusion transformer of the Wan 2.1 family.

Latent video (B, C, T, H, W) -> Conv3d patch embed -> tokens with 3D RoPE -> blocks of
[adaLN self-attention, cross-attention to text, adaLN FFN] -> adaLN head -> unpatchify.
Parameter names equal diffusers' ``WanTransformer3DModel`` so its state dicts load as they are.

Speed switches live on the one path: ``attention_backend`` (sdpa / triton / flash_attn),
``fused_ops`` (Triton norm+modulate kernels), and precomputed cross-attention K/V
(``prepare_context``), each checked against the exact path in tests.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidrt.attention import MaskSpec, attention
from vidrt.errors import CheckpointError, ShapeError
from vidrt.kernels.reference import Rope3D, apply_rope, build_rope_3d
from vidrt.models.config_types import check_config, field_types

logger = logging.getLogger(__name__)


# what a causal DiT's cached chunk attended to when its keys/values were made (DiTConfig.commit_context)
COMMIT_CONTEXTS = ("window", "sinks")


@dataclass
class DiTConfig:
    """Architecture of a Wan-style DiT; field names follow diffusers' transformer/config.json."""

    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) latent voxels per token
    num_attention_heads: int = 12
    attention_head_dim: int = 128
    in_channels: int = 16  # latent channels in
    out_channels: int = 16  # velocity channels out
    text_dim: int = 4096  # width of the text encoder's hidden states
    freq_dim: int = 256  # sinusoidal timestep embedding width
    ffn_dim: int = 8960
    num_layers: int = 30
    cross_attn_norm: bool = True  # affine LayerNorm before cross-attention
    qk_norm: Optional[str] = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024  # largest position per axis the RoPE tables cover
    rope_theta: float = 10000.0
    # Causal (chunk-autoregressive) variants: latent frames per block-causal chunk; 0 = bidirectional.
    num_frame_per_block: int = 0
    # Causal variants: what a finished chunk attended to when training made its keys/values -- "window"
    # (sinks + rolling window: CausVid / Self-Forcing rollouts) or "sinks" (sinks + itself: a fine-tune on
    # [sink | previous | current] windows, the embedded causal DiT). The stream's KV commit follows it.
    commit_context: str = "window"

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "transformer config") -> "DiTConfig":
        """From a diffusers or original-Wan config dict; unknown keys are logged and ignored.

        ``where`` (the file it came from) names the source in errors about wrong value types."""
        check_config(d, {}, where)
        d = dict(d)
        if "dim" in d and "num_heads" in d:  # original Wan layout (wan/modules/model.py)
            check_config(d, _ORIGINAL_TYPES, where)
            d = _config_from_original(d)
        if d.get("image_dim") or d.get("added_kv_proj_dim"):
            raise CheckpointError("this is an image-to-video Wan transformer (image_dim / added_kv_proj_dim set); "
                                  "vidrt runs text-to-video checkpoints: use a T2V transformer folder")
        if d.get("qk_norm") not in (None, "rms_norm_across_heads"):
            raise CheckpointError(f"qk_norm={d['qk_norm']!r} is not supported; vidrt implements "
                                  "'rms_norm_across_heads' (Wan 2.1)")
        if d.get("commit_context", "window") not in COMMIT_CONTEXTS:
            raise CheckpointError(f"commit_context={d['commit_context']!r} in the transformer config; a causal DiT "
                                  "declares 'window' (CausVid / Self-Forcing) or 'sinks' (trained on [sink | previous "
                                  "| current] windows)")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names and not k.startswith("_"))
        if unknown:
            logger.debug("DiTConfig ignores keys %s", unknown)
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("patch_size") is None and "num_attention_heads" not in kw:
            raise CheckpointError(f"{where} is not a transformer config (it has no patch_size or "
                                  "num_attention_heads); pass a transformer folder (a diffusers transformer/ or an "
                                  "original Wan folder), not a VAE or text encoder folder")
        if kw.get("out_channels") is None:
            kw["out_channels"] = kw.get("in_channels", cls.in_channels)
        check_config(kw, field_types(cls), where)
        if "patch_size" in kw:
            kw["patch_size"] = tuple(kw["patch_size"])
        return cls(**kw)

    @classmethod
    def from_json(cls, path: str | Path) -> "DiTConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d


# Keys of an original Wan config.json read before conversion (the rest are checked as DiTConfig fields).
_ORIGINAL_TYPES = {"dim": int, "num_heads": int, "ffn_dim": int, "num_layers": int}


def _config_from_original(d: dict[str, Any]) -> dict[str, Any]:
    """Original Wan config.json (dim, num_heads, ...) -> diffusers names."""
    # "ti2v" (Wan 2.2 TI2V-5B): text-to-video is its image-free mode, every token at the step's timestep
    if d.get("model_type", "t2v") not in ("t2v", "ti2v"):
        raise CheckpointError(f"original Wan model_type {d['model_type']!r} is not text-to-video; "
                              "vidrt runs t2v checkpoints")
    dim, heads = int(d["dim"]), int(d["num_heads"])
    return {
        "patch_size": d.get("patch_size", (1, 2, 2)),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": d.get("in_dim", 16),
        "out_channels": d.get("out_dim", 16),
        "text_dim": d.get("text_dim", 4096),
        "freq_dim": d.get("freq_dim", 256),
        "ffn_dim": d["ffn_dim"],
        "num_layers": d["num_layers"],
        "cross_attn_norm": d.get("cross_attn_norm", True),
        "qk_norm": "rms_norm_across_heads" if d.get("qk_norm", True) else None,
        "eps": d.get("eps", 1e-6),
        "num_frame_per_block": d.get("num_frame_per_block", 0),
        "commit_context": d.get("commit_context", "window"),
    }


# ----------------------------------------------------------------------------- building blocks


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the activation dtype (precision policy: norms stay fp32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learned scale, fp32 math (used for q/k across heads)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos, sin] of (N,) timesteps -> (N, dim) fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class MLP2(nn.Module):
    """linear_1 -> activation -> linear_2 (diffusers' TimestepEmbedding / PixArtAlphaTextProjection)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, act: nn.Module):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_hidden)
        self.act = act
        self.linear_2 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class ConditionEmbedder(nn.Module):
    """Timestep -> (temb, 6-way adaLN modulation); text hidden states -> model width."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.freq_dim = cfg.freq_dim
        self.time_embedder = MLP2(cfg.freq_dim, cfg.dim, cfg.dim, nn.SiLU())
        self.time_proj = nn.Linear(cfg.dim, cfg.dim * 6)
        self.text_embedder = MLP2(cfg.text_dim, cfg.dim, cfg.dim, nn.GELU(approximate="tanh"))

    def time(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep (N,) -> temb (N, dim), modulation (N, 6, dim)."""
        emb = timestep_embedding(timestep, self.freq_dim).to(self.time_embedder.linear_1.weight.dtype)
        temb = self.time_embedder(emb).to(dtype)
        return temb, self.time_proj(F.silu(temb)).unflatten(1, (6, -1))


class FeedForward(nn.Module):
    """GELU(tanh) MLP with diffusers' key layout (net.0.proj, net.2)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.net = nn.ModuleList([_Proj(dim, inner), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class _Proj(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)


class Attention(nn.Module):
    """Multi-head attention with RMS-normed q/k; self-attention when ``context`` is None."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim = cfg.dim
        self.heads = cfg.num_attention_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Identity()])
        self.norm_q = RMSNorm(dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.backend = "sdpa"

    def kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, L, H, D) of ``source`` tokens (cacheable for text context)."""
        k = self.norm_k(self.to_k(source)).unflatten(2, (self.heads, -1))
        v = self.to_v(source).unflatten(2, (self.heads, -1))
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        *,
        kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        rope: Optional[Rope3D] = None,
        mask: Optional[MaskSpec] = None,
        cache=None,
    ) -> torch.Tensor:
        """``cache`` (self-attention only, a vidrt.longclip LayerCache): this chunk's keys are rotated once,
        written into the cache, and the chunk attends to the cached past plus itself."""
        q = self.norm_q(self.to_q(x)).unflatten(2, (self.heads, -1))
        k, v = kv if kv is not None else self.kv(x if context is None else context)
        rope_k = rope if context is None and kv is None else None
        if cache is not None and rope_k is not None:
            k, v = cache.update(apply_rope(k, *rope.dense()), v)
            rope_k = None
        out = attention(q, k, v, rope_q=rope, rope_k=rope_k, mask=mask, backend=self.backend)
        return self.to_out[0](out.flatten(2).type_as(x))


class Block(nn.Module):
    """One DiT block: adaLN self-attention, cross-attention to text, adaLN feed-forward."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.attn1 = Attention(cfg)
        self.attn2 = Attention(cfg)
        self.norm2 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.ffn = FeedForward(dim, cfg.ffn_dim)
        self.norm3 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.fused_ops = False

    def modulated_input(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """The adaLN-modulated input of self-attention (TeaCache's change indicator)."""
        shift1, scale1 = (self.scale_shift_table[:, :2] + mod[..., :2, :].float()).unbind(-2)
        return _modulate(self.norm1, x, shift1, scale1, self.fused_ops)

    def forward(self, x, mod, context, rope, mask=None, context_kv=None, kv_cache=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table + mod.float()).unbind(-2)
        x = _gated(x, self.attn1(_modulate(self.norm1, x, shift1, scale1, self.fused_ops), rope=rope, mask=mask,
                                 cache=kv_cache), gate1, self.fused_ops)
        x = x + self.attn2(self.norm2(x), context, kv=context_kv)
        return _gated(x, self.ffn(_modulate(self.norm3, x, shift2, scale2, self.fused_ops)), gate2, self.fused_ops)


def _modulate(norm: FP32LayerNorm, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, fused: bool):
    """adaLN: LayerNorm(x) * (1 + scale) + shift in fp32, back to x's dtype."""
    if fused:
        from vidrt.kernels import adaln

        return adaln.layernorm_modulate(x, shift, scale, norm.eps)
    return (norm(x.float()) * (1 + scale) + shift).type_as(x)


def _gated(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, fused: bool) -> torch.Tensor:
    """Gated residual x + y * gate in fp32, back to x's dtype."""
    if fused:
        from vidrt.kernels import gated_residual

        return gated_residual.gated_residual(x, y, gate)
    return (x.float() + y.float() * gate).type_as(x)


# ----------------------------------------------------------------------------- the model


class WanDiT(nn.Module):
    """Wan 2.1-style text-to-video DiT predicting the flow-matching velocity."""

    # Precision policy: these stay fp32 whatever the run precision (diffusers keeps the same set).
    _keep_in_fp32_modules = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_out")

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.config = cfg
        dim = cfg.dim
        if cfg.attention_head_dim % 2:
            raise CheckpointError(f"attention_head_dim {cfg.attention_head_dim} is odd; RoPE needs an even head dim")
        self.patch_embedding = nn.Conv3d(cfg.in_channels, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.condition_embedder = ConditionEmbedder(cfg)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.norm_out = FP32LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, cfg.out_channels * math.prod(cfg.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    # ---- switches
    def set_attention_backend(self, name: str) -> None:
        for m in self.modules():
            if isinstance(m, Attention):
                m.backend = name

    def set_fused_ops(self, on: bool) -> None:
        for b in self.blocks:
            b.fused_ops = on

    # ---- pieces
    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        """(T, H, W) tokens of a (B, C, T, H, W) latent; a clear error if it does not divide."""
        pt, ph, pw = self.config.patch_size
        _, c, t, h, w = latent_shape
        if c != self.config.in_channels:
            raise ShapeError(f"latents have {c} channels but the transformer takes {self.config.in_channels}")
        if t % pt or h % ph or w % pw:
            raise ShapeError(f"latent grid {t}x{h}x{w} is not divisible by the patch size {pt}x{ph}x{pw}; "
                             "choose a height/width divisible by the VAE's spatial factor x the patch size")
        grid = (t // pt, h // ph, w // pw)
        if max(grid) > self.config.rope_max_seq_len:
            raise ShapeError(f"token grid {grid} exceeds rope_max_seq_len={self.config.rope_max_seq_len}")
        return grid

    def rope(self, grid: Sequence[int], frame_offset: int | Sequence[int] = 0, device=None) -> Rope3D:
        """RoPE tables of a token grid whose frames start at ``frame_offset``, or sit at the given
        per-frame positions (a sequence of grid[0] ints: non-contiguous frames, e.g. sinks + window)."""
        hd, theta = self.config.attention_head_dim, self.config.rope_theta
        if isinstance(frame_offset, int):
            return build_rope_3d(hd, grid, theta, start=(frame_offset, 0, 0), device=device)
        pos = [int(p) for p in frame_offset]
        if len(pos) != grid[0]:
            raise ShapeError(f"frame_offset gives {len(pos)} frame positions for {grid[0]} token frames")
        base = build_rope_3d(hd, (max(pos) + 1, *grid[1:]), theta, device=device)
        idx = torch.tensor(pos, device=base.cos[0].device)
        return Rope3D(tuple(grid), (base.cos[0][idx], *base.cos[1:]), (base.sin[0][idx], *base.sin[1:]))

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """Text encoder hidden states (B, L, text_dim) -> model width (B, L, dim)."""
        return self.condition_embedder.text_embedder(context)

    def prepare_context(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention K/V of every block for a text context; constant over the sampler's steps."""
        ctx = self.embed_text(context)
        return [blk.attn2.kv(ctx) for blk in self.blocks]

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        *,
        context_kv: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None,
        mask: Optional[MaskSpec] = None,
        frame_offset: int | Sequence[int] = 0,
        step_cache=None,
        kv_cache=None,
    ) -> torch.Tensor:
        """Velocity for latents (B, C, T, H, W) at ``timestep`` (B,) or per token (B, L).

        Give either the text encoder output ``context`` (B, Lt, text_dim) or its precomputed
        ``context_kv`` from :meth:`prepare_context`. ``step_cache`` (vidrt.caching) may reuse the
        block stack's residual from an earlier step instead of running it. ``kv_cache``
        (vidrt.longclip.KVCache, after its ``begin_chunk``) makes self-attention attend to cached past
        chunks; ``frame_offset`` is then the chunk's absolute start frame (RoPE position).
        """
        if latents.ndim != 5:
            raise ShapeError(f"latents must be (batch, channels, frames, height, width), got {tuple(latents.shape)}")
        b = latents.shape[0]
        grid = self.token_grid(latents.shape)
        rope = self.rope(grid, frame_offset, latents.device)
        x = self.patch_embedding(latents).flatten(2).transpose(1, 2)
        dtype = x.dtype

        ts = timestep.reshape(-1) if timestep.ndim > 0 else timestep.expand(b)
        if ts.numel() not in (b, b * x.shape[1]):
            raise ShapeError(f"timestep has {ts.numel()} entries; give one per batch element ({b}) or per token "
                             f"({b}x{x.shape[1]})")
        temb, mod = self.condition_embedder.time(ts, dtype)
        per_token = ts.numel() != b
        if per_token:
            temb, mod = temb.unflatten(0, (b, -1)), mod.unflatten(0, (b, -1))  # (B, L, dim), (B, L, 6, dim)
        else:
            temb, mod = temb[:, None], mod[:, :, None]  # (B, 1, dim), (B, 6, 1, dim)
            mod = mod.transpose(1, 2)  # (B, 1, 6, dim)

        if context_kv is None:
            if context is None:
                raise ShapeError("forward needs the text context or its prepare_context() K/V")
            ctx = self.embed_text(context)
            context_kv = [None] * len(self.blocks)
        else:
            ctx = None
        run = lambda x, start=0, stop=None: self.run_blocks(x, mod, ctx, rope, mask, context_kv, start, stop,  # noqa
                                                            kv_cache)
        x = run(x) if step_cache is None else step_cache.run_blocks(self, x, mod, run)

        shift, scale = (self.scale_shift_table[:, None] + temb[:, :, None].float()).unbind(-2)
        x = (self.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = self.proj_out(x)
        return self.unpatchify(x, grid)

    def run_blocks(self, x, mod, ctx, rope, mask, context_kv, start: int = 0, stop: Optional[int] = None,
                   kv_cache=None):
        """Blocks ``start``..``stop`` of the stack on tokens x."""
        first = start
        for i, (blk, kv) in enumerate(zip(self.blocks[start:stop], context_kv[start:stop])):
            x = blk(x, mod, ctx, rope, mask, kv, None if kv_cache is None else kv_cache.layer(first + i))
        return x

    def unpatchify(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """(B, L, C*pt*ph*pw) tokens -> (B, C, T, H, W) latents."""
        b = x.shape[0]
        pt, ph, pw = self.config.patch_size
        t, h, w = grid
        x = x.reshape(b, t, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, -1, t * pt, h * ph, w * pw)
