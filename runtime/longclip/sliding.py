"""Sliding-window continuation: the long-clip fallback for bidirectional models (no causal variant).

Each window holds ``overlap`` latent frames already made (the end of the previous window) followed
by new frames. At every sampler step the overlap frames are re-noised from their clean values to
the step's noise level (fixed noise per window) and the whole window is denoised jointly, so the
new frames continue the old ones; only the new frames are kept. Every window pays full attention
over ``overlap + new`` frames for every step (nothing is cached), so it is slower per video second
than a causal model with a KV cache -- it says so in the log.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import torch

from vidrt.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["SlidingWindow", "FALLBACK_MESSAGE"]

FALLBACK_MESSAGE = ("model is bidirectional (num_frame_per_block=0): long clip via the sliding-window fallback "
                    "(overlapping latent frames re-noised and denoised window by window, no KV cache; slower than a "
                    "causal model). Load a causal variant (num_frame_per_block > 0) for chunked KV-cached streaming.")


class SlidingWindow:
    """Makes the windows of one clip in order; keeps the last ``overlap`` clean latent frames."""

    def __init__(self, pipe, settings, *, window_frames: int, overlap_frames: int):
        if window_frames < 2 or not 0 < overlap_frames < window_frames:
            raise ConfigError(f"sliding window of {window_frames} latent frames with overlap {overlap_frames}: "
                              "need window >= 2 and 0 < overlap < window (e.g. window=8, overlap=2)")
        self.pipe = pipe
        self.s = settings
        self.cfg = max(settings.scales) > 1.0
        self.window_frames = window_frames
        self.overlap_frames = overlap_frames
        self.context: Optional[torch.Tensor] = None  # last clean latent frames (1, C, overlap, H', W')
        self.stats = {"windows": 0, "denoise_forwards": 0, "overlap_frames_recomputed": 0}
        logger.warning(FALLBACK_MESSAGE)

    @property
    def new_frames_per_window(self) -> int:
        """New latent frames a window adds once there is context (the first window makes a whole window)."""
        return self.window_frames - self.overlap_frames

    def hard_cut(self) -> None:
        """The next window starts a new shot from scratch (no overlap context)."""
        self.context = None

    @torch.no_grad()
    def window(self, noise: torch.Tensor, kv: list, seed: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Denoise ``noise`` (1, C, n_new, H', W') as the continuation of the context; returns the new
        clean latents (fp32) and timings. ``kv``: each of ``pipe.experts``' cross-attention K/V of [cond, uncond]
        (a two-expert model's steps each run the expert of their noise level, as in ``Pipeline.__call__``)."""
        from vidrt.samplers import make_sampler

        d = self.pipe.defaults
        smp = make_sampler(self.s.sampler or d.sampler, self.s.steps, shift=self.s.shift if self.s.shift is not None
                           else d.shift, config=self.pipe.scheduler_config, device=self.pipe.device)
        dev, dtype = self.pipe.device, self.pipe.dtype
        ctx = self.context
        o = 0 if ctx is None else ctx.shape[2]
        x = noise.to(dev, torch.float32)
        if ctx is not None:
            ctx_noise = torch.randn(ctx.shape, generator=torch.Generator("cpu").manual_seed(seed)).to(dev)
            x = torch.cat([smp.scale_noise(ctx, smp.sigma_at(0), ctx_noise), x], dim=2)
        t0 = time.perf_counter()
        step_experts = self.pipe.experts_at(smp.timesteps)
        for i, t in enumerate(smp.timesteps):
            if ctx is not None:  # the known frames, re-noised to this step's level
                x[:, :, :o] = smp.scale_noise(ctx, smp.sigma_at(i), ctx_noise)
            e = step_experts[i]
            scale = self.s.scales[e]
            guided = self.cfg and scale > 1.0
            xin = torch.cat([x, x]) if guided else x
            ctx_kv = kv[e] if guided or not self.cfg else [(k[:1], v[:1]) for k, v in kv[e]]
            out = self.pipe.experts[e](xin.to(dtype), t.expand(xin.shape[0]).to(dev), context_kv=ctx_kv)
            pred = out[1:2] + scale * (out[:1] - out[1:2]) if guided else out
            x = smp.step(pred.float(), i, x)
            self.stats["denoise_forwards"] += 1
        new = x[:, :, o:]
        self.context = x[:, :, -self.overlap_frames:].clone() if x.shape[2] >= self.overlap_frames else x.clone()
        self.stats["windows"] += 1
        self.stats["overlap_frames_recomputed"] += o
        return new, {"denoise_s": time.perf_counter() - t0, "commit_s": 0.0, "steps": self.s.steps}
