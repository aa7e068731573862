"""Chunk-wise autoregressive denoising of a causal DiT (CausVid / Self-Forcing style inference).

The clip is made ``chunk_frames`` latent frames at a time. Each chunk starts from noise and runs
the sampler's steps; at every step it attends to the clean past through the KV cache (read-only:
its own keys/values go to a scratch slot). When the chunk is finished, ONE extra forward over the
clean chunk at the context-noise level (timestep 0 by default) writes its keys/values into the
cache -- computed once per chunk, not once per step.

``use_cache=False`` is the reference: every step re-runs the model over [visible clean past |
current chunk] with per-token timesteps and the block-causal mask (same visible frames and RoPE
positions). With no eviction both give the same latents up to float rounding; with the commit context
"sinks" (window chunks masked to the sinks and themselves, as the cache made them) at any length.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from vidrt.attention import MaskSpec
from vidrt.errors import ConfigError
from vidrt.longclip.kv_cache import KVCache, KVCacheConfig

logger = logging.getLogger(__name__)

__all__ = ["CausalSettings", "CausalRollout"]


@dataclass
class CausalSettings:
    """Denoising settings shared by every chunk."""

    steps: int
    guidance: float
    sampler: str = "auto"
    shift: Optional[float] = None
    context_noise: float = 0.0  # sigma of the clean chunk when its K/V are written (0 = clean)
    cache: Optional[str] = None  # step cache inside a chunk ("teacache", "cfg", ... as Pipeline.__call__)
    cache_threshold: Optional[float] = None
    cfg_interval: int = 2
    guidance_2: Optional[float] = None   # two-expert models (sliding mode): the low-noise expert's; None = guidance

    @property
    def scales(self) -> tuple[float, float]:
        """(guidance, the low-noise expert's guidance)."""
        return self.guidance, self.guidance if self.guidance_2 is None else self.guidance_2


@dataclass
class _Past:
    """Recompute mode: clean latents of visible past chunks and their frame positions."""

    sinks: list[tuple[torch.Tensor, int]] = field(default_factory=list)
    window: list[tuple[torch.Tensor, int]] = field(default_factory=list)


class CausalRollout:
    """Generates the chunks of one clip in order; holds the KV cache (or the recompute past).

    ``kv`` arguments are the cross-attention K/V of the shot's prompt from ``dit.prepare_context``
    over [cond, uncond] (uncond only when guidance > 1).
    """

    def __init__(self, pipe, settings: CausalSettings, *, latent_hw: tuple[int, int], cache_config: KVCacheConfig,
                 use_cache: bool = True):
        self.pipe = pipe
        self.dit = pipe.transformer
        self.s = settings
        self.cfg = settings.guidance > 1.0
        self.batch = 2 if self.cfg else 1
        self.latent_hw = latent_hw
        self.cache_config = cache_config
        self.use_cache = use_cache
        if not 0.0 <= settings.context_noise < 1.0:
            raise ConfigError(f"context_noise={settings.context_noise} must be in [0, 1) (a sigma; 0 = clean past)")
        self.cache = KVCache.for_model(self.dit, cache_config, self.batch) if use_cache else None
        self.past = _Past()
        self.chunks_done = 0
        self.stats: dict[str, Any] = {"commit_forwards": 0, "denoise_forwards": 0}

    # ---- helpers
    def _sampler(self, steps: int):
        from vidrt.samplers import make_sampler

        d = self.pipe.defaults
        return make_sampler(self.s.sampler or d.sampler, steps, shift=self.s.shift if self.s.shift is not None
                            else d.shift, config=self.pipe.scheduler_config, device=self.pipe.device)

    def _t_ctx(self, smp) -> float:
        return self.s.context_noise * smp.num_train_timesteps

    def hard_cut(self) -> None:
        """Forget the rolling window (keep the sink frames): the next chunk starts a new shot."""
        if self.cache is not None:
            self.cache.drop_window()
        self.past.window.clear()

    # ---- one chunk
    @torch.no_grad()
    def chunk(self, noise: torch.Tensor, kv: list, frame_start: int, *, commit: bool = True,
              steps: Optional[int] = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Denoise one chunk (1, C, n, H', W') starting at latent frame ``frame_start``.

        Returns the clean latents (fp32) and timings; with ``commit`` a whole chunk's K/V join the past.
        """
        from vidrt.caching.policy import make_cache

        steps = steps or self.s.steps
        n = noise.shape[2]
        ft = self.cache_config.frame_tokens
        smp = self._sampler(steps)
        dev, dtype = self.pipe.device, self.pipe.dtype
        x = noise.to(dev, torch.float32)
        plan = make_cache(self.s.cache, self.s.cache_threshold, coefficients=self.pipe.teacache_coefficients,
                          cfg_interval=self.s.cfg_interval)
        t0 = time.perf_counter()
        for i, t in enumerate(smp.timesteps):
            full_cfg = self.cfg and (plan.cfg is None or plan.cfg.compute_uncond(i, steps))
            b = 2 if full_cfg else 1
            if plan.block is not None:
                plan.block.begin_step(i, steps, [["cond", "uncond"][:b]])
            kv_b = kv if b == len(kv[0][0]) else [(k[:b], v[:b]) for k, v in kv]
            xin = torch.cat([x, x]) if b == 2 else x
            out = self._forward(xin.to(dtype), float(t), kv_b, frame_start, n * ft, smp, step_cache=plan.block)
            cond = out[:1]
            uncond = out[1:2] if b == 2 else None
            if self.cfg and plan.cfg is not None:
                if full_cfg:
                    plan.cfg.record(cond, uncond)
                else:
                    uncond = plan.cfg.estimate(cond)
            pred = uncond + self.s.guidance * (cond - uncond) if self.cfg else cond
            x = smp.step(pred.float(), i, x)
            self.stats["denoise_forwards"] += 1
        timings = {"denoise_s": time.perf_counter() - t0, "commit_s": 0.0, "steps": steps}
        if commit:
            t0 = time.perf_counter()
            self._commit(x, kv, frame_start, smp)
            timings["commit_s"] = time.perf_counter() - t0
        self.chunks_done += 1
        return x, timings

    def _forward(self, x: torch.Tensor, t: float, kv: list, frame_start: int, n_tokens: int, smp,
                 step_cache=None) -> torch.Tensor:
        """Velocity of the current chunk x (B, C, n, H', W') at timestep t given the visible past."""
        b, dev = x.shape[0], x.device
        n = x.shape[2]
        if self.cache is not None:
            self.cache.begin_chunk(n_tokens, rows=b)  # b=1: a CFG-cache step runs the cond branch only
            return self.dit(x, torch.full((b,), t, device=dev), context_kv=kv, frame_offset=frame_start,
                            kv_cache=self.cache, step_cache=step_cache)
        past = self.past.sinks + self.past.window
        if not past:
            return self.dit(x, torch.full((b,), t, device=dev), context_kv=kv, frame_offset=frame_start,
                            step_cache=step_cache)
        lat = torch.cat([p for p, _ in past], dim=2).to(x.dtype)
        pos = [s + j for p, s in past for j in range(p.shape[2])] + list(range(frame_start, frame_start + n))
        p_frames = lat.shape[2]
        ft = n_tokens // n
        ts = torch.cat([torch.full((b, p_frames * ft), self._t_ctx(smp), device=dev),
                        torch.full((b, n * ft), t, device=dev)], dim=1)
        cc = self.cache_config
        # the past as the cache holds it: with commit context "sinks" each window chunk saw the sinks and itself
        mask = MaskSpec.block_causal(cc.chunk_tokens, sink_chunks=len(self.past.sinks) if cc.commit_context == "sinks"
                                     else -1)
        out = self.dit(torch.cat([lat.expand(b, -1, -1, -1, -1), x], dim=2), ts, context_kv=kv, mask=mask,
                       frame_offset=pos)
        return out[:, :, p_frames:]

    def _commit(self, x: torch.Tensor, kv: list, frame_start: int, smp) -> None:
        """The finished chunk's keys/values join the past: one forward at the context-noise level."""
        cc = self.cache_config
        if x.shape[2] != cc.chunk_frames:
            return  # a short last chunk: nothing comes after it
        xc = x
        if self.s.context_noise > 0:
            gen = torch.Generator("cpu").manual_seed(10_000 + frame_start)
            xc = smp.scale_noise(x, self.s.context_noise, torch.randn(x.shape, generator=gen).to(x.device))
        if self.cache is None:
            entry = (xc.detach()[:1], frame_start)
            if len(self.past.sinks) * cc.chunk_frames < cc.sink_frames:
                self.past.sinks.append(entry)
            elif cc.window_frames:
                self.past.window.append(entry)
                if len(self.past.window) > cc.window_chunks:
                    self.past.window.pop(0)
            return
        b = self.batch
        xin = torch.cat([xc] * b).to(self.pipe.dtype)
        self.cache.begin_chunk(cc.chunk_tokens, commit=True)
        self.dit(xin, torch.full((b,), self._t_ctx(smp), device=x.device), context_kv=kv, frame_offset=frame_start,
                 kv_cache=self.cache)
        self.cache.end_chunk()
        self.stats["commit_forwards"] += 1
