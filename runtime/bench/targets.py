"""What a benchmark runs: a request (prompts, shape, steps) and the runtimes that serve it.

A target turns a :class:`Request` plus initial latents into frames and per-stage times. vidrt's
own pipeline is :class:`VidrtTarget`; diffusers' WanPipeline is in ``baseline_diffusers``. The same
targets feed both the ``vidrt bench`` harness (runner.py) and the pytest-benchmark suite in
benchmarks/, so there is one implementation of each measured workload.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import numpy as np
import torch

STAGES = ("text_s", "dit_s", "dit_per_step_s", "vae_s")  # text encoding, all DiT work, per step, VAE decode


@dataclass(frozen=True)
class Request:
    """One generation call: ``len(prompts)`` clips of ``frames`` x ``height`` x ``width``."""

    prompts: tuple[str, ...]
    height: int
    width: int
    frames: int
    steps: int
    guidance: float = 5.0
    text_len: int = 512
    negative_prompt: str = ""

    @property
    def batch(self) -> int:
        return len(self.prompts)

    @property
    def cfg(self) -> bool:
        return self.guidance > 1.0


@dataclass
class RunOutput:
    """Frames of each clip (T, H, W, 3) uint8 and the stage times of the call (seconds)."""

    frames: list[np.ndarray]
    stages: dict[str, float] = field(default_factory=dict)


class Target(Protocol):
    name: str   # runtime: "vidrt" | "diffusers"
    label: str  # runtime + settings, e.g. "vidrt fp32 sdpa"
    device: torch.device

    def settings(self) -> dict: ...

    def generate(self, req: Request, latents: torch.Tensor) -> RunOutput: ...

    def stage_fns(self, req: Request, latents: torch.Tensor) -> dict[str, Callable[[], None]]: ...


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times cover it (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def make_latents(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The initial noise every target of a case starts from (fp32, drawn on the CPU)."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)


class VidrtTarget:
    """vidrt's Pipeline with its switches (precision, attention backend, step cache).

    Stage times are taken the way the diffusers baseline's are: synchronizing wrappers (installed on
    this ``pipe``) around text encoding, the DiT (its calls plus the once-per-clip cross-attention
    K/V projection) and the VAE decode, so both runtimes' stages mean the same thing and GPU work
    queued by one stage is not billed to the next.
    """

    name = "vidrt"

    def __init__(self, pipe, cache: Optional[str] = None, backend: str = "torch"):
        self.pipe = pipe
        self.cache = None if cache in (None, "", "none") else cache
        self.backend = backend
        self.device = pipe.device
        parts = ["vidrt", pipe.precision, pipe.attention] + ([f"cache={self.cache}"] if self.cache else [])
        self.label = " ".join(parts)
        self._acc: dict[str, float] = {}
        pipe.encode_prompts = timed(pipe.encode_prompts, self._acc, "text_s", self.device)
        for dit in pipe.experts:   # a two-expert (Wan 2.2) model: both experts' calls are DiT time
            dit.prepare_context = timed(dit.prepare_context, self._acc, "dit_s", self.device)
            dit.forward = timed(dit.forward, self._acc, "dit_s", self.device)
        pipe.decode = timed(pipe.decode, self._acc, "vae_s", self.device)

    def settings(self) -> dict:
        return {"precision": self.pipe.precision, "attention": self.pipe.attention, "cache": self.cache or "none",
                "backend": self.backend}

    def _kwargs(self, req: Request) -> dict:
        kw = dict(num_frames=req.frames, height=req.height, width=req.width, steps=req.steps,
                  guidance=req.guidance, max_sequence_length=req.text_len, progress=False)
        if self.cache is not None:
            kw["cache"] = self.cache
        return kw

    def latent_shape(self, req: Request) -> tuple[int, ...]:
        return tuple(self.pipe.latent_shape(req.batch, req.frames, req.height, req.width))

    def tokens(self, req: Request) -> int:
        """DiT tokens of one clip (latent voxels / patch volume)."""
        _, _, t, h, w = self.latent_shape(req)
        pt, ph, pw = self.pipe.transformer.config.patch_size
        return (t // pt) * (h // ph) * (w // pw)

    def generate(self, req: Request, latents: torch.Tensor) -> RunOutput:
        self._acc.clear()
        videos = self.pipe(list(req.prompts), req.negative_prompt, latents=latents.clone(), **self._kwargs(req))
        stages = dict(self._acc)
        stages["dit_per_step_s"] = stages.get("dit_s", 0.0) / req.steps
        return RunOutput([v.frames for v in videos], stages)

    def stage_fns(self, req: Request, latents: torch.Tensor) -> dict[str, Callable[[], None]]:
        """One CFG denoising step (one batched DiT call, cross-attention K/V prepared once per clip, as
        the pipeline does), the streamed VAE decode, and end to end."""
        pipe, dev = self.pipe, self.device
        prompts = list(req.prompts) + ([req.negative_prompt] * req.batch if req.cfg else [])
        kv = pipe.transformer.prepare_context(pipe.encode_prompts(prompts, req.text_len))
        z = latents.to(dev, pipe.dtype)
        x = torch.cat([z, z]) if req.cfg else z
        t = torch.full((x.shape[0],), 500.0, device=dev)

        @torch.no_grad()
        def dit_cfg_step():
            pipe.transformer(x, t, context_kv=kv)
            synchronize(dev)

        def vae_decode():
            pipe.decode(latents)
            synchronize(dev)

        def end_to_end():
            self.generate(req, latents)
            synchronize(dev)

        return {"dit_cfg_step": dit_cfg_step, "vae_decode": vae_decode, "end_to_end": end_to_end}


def supported_caches() -> tuple[str, ...]:
    """Cache policies this build's pipeline accepts ("none" always; step caches once they exist)."""
    from vidrt.pipeline import Pipeline

    if "cache" not in inspect.signature(Pipeline.__call__).parameters:
        return ("none",)
    try:
        from vidrt.caching.policy import POLICIES
    except ImportError:
        return ("none",)
    return ("none",) + tuple(POLICIES)


def timed(fn: Callable, acc: dict, key: str, device: torch.device) -> Callable:
    """Wrap ``fn`` so each call adds its wall time (GPU work included) to ``acc[key]``."""

    def wrapper(*args, **kwargs):
        synchronize(device)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            synchronize(device)
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t0

    return wrapper
