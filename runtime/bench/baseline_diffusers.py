"""The reference runtime: diffusers' WanPipeline on the same folder, shapes, steps and latents.

Loaded in the benchmark's process so both runtimes see the same machine state. Per-stage times
come from timing wrappers around its text encoding, transformer calls and VAE decode (diffusers
reports none itself). Precision follows diffusers' Wan recipe: transformer and text encoder in
the run precision, VAE in fp32 (vidrt does the same by default).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vidrt.bench.targets import Request, RunOutput, synchronize, timed
from vidrt.errors import BackendUnavailableError
from vidrt.precision import dtype_of


def load_diffusers(folder: Path, device: torch.device, precision: str):
    """WanPipeline of ``folder`` on ``device``: transformer/text encoder in ``precision``, VAE fp32."""
    try:
        from diffusers import AutoencoderKLWan, WanPipeline
    except ImportError as e:
        raise BackendUnavailableError(f"--baseline diffusers needs diffusers ({e}); "
                                      "pip install 'vidrt[bench]' or drop --baseline") from None
    dtype = dtype_of(precision)
    with warnings.catch_warnings():  # diffusers >= 0.36 renames torch_dtype to dtype; older ones know only torch_dtype
        warnings.simplefilter("ignore", FutureWarning)
        vae = AutoencoderKLWan.from_pretrained(str(folder), subfolder="vae", torch_dtype=torch.float32)
        pipe = WanPipeline.from_pretrained(str(folder), vae=vae, torch_dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class DiffusersTarget:
    """diffusers' WanPipeline, timed per stage."""

    name = "diffusers"

    def __init__(self, folder: Path, device: torch.device, precision: str = "fp32"):
        import diffusers

        self.device = torch.device(device)
        self.precision = precision
        self.pipe = load_diffusers(Path(folder), self.device, precision)
        self.label = f"diffusers {precision}"
        self.version = diffusers.__version__
        self._acc: dict[str, float] = {}
        p = self.pipe
        p.encode_prompt = timed(p.encode_prompt, self._acc, "text_s", self.device)
        for dit in (p.transformer, getattr(p, "transformer_2", None)):   # Wan 2.2 A14B: both experts are DiT time
            if dit is not None:
                dit.forward = timed(dit.forward, self._acc, "dit_s", self.device)
        p.vae.decode = timed(p.vae.decode, self._acc, "vae_s", self.device)

    def settings(self) -> dict:
        return {"precision": self.precision, "attention": "diffusers-default", "cache": "none",
                "backend": f"diffusers {self.version}"}

    def generate(self, req: Request, latents: torch.Tensor) -> RunOutput:
        self._acc.clear()
        out = self.pipe(prompt=list(req.prompts), negative_prompt=[req.negative_prompt] * req.batch,
                        num_frames=req.frames, height=req.height, width=req.width, num_inference_steps=req.steps,
                        guidance_scale=req.guidance, latents=latents.clone(), max_sequence_length=req.text_len,
                        output_type="np", return_dict=False)[0]
        frames = [(np.asarray(v, np.float32).clip(0, 1) * 255).round().astype(np.uint8) for v in out]
        stages = dict(self._acc)
        stages["dit_per_step_s"] = stages.get("dit_s", 0.0) / req.steps
        return RunOutput(frames, stages)

    def stage_fns(self, req: Request, latents: torch.Tensor) -> dict[str, Callable[[], None]]:
        """One CFG denoising step as diffusers does it (separate cond and uncond transformer calls), the
        VAE decode, and end to end."""
        p, dev = self.pipe, self.device
        dtype = p.transformer.dtype
        with torch.no_grad():
            cond, uncond = p.encode_prompt(list(req.prompts), [req.negative_prompt] * req.batch,
                                           do_classifier_free_guidance=req.cfg, max_sequence_length=req.text_len,
                                           device=dev)
        z = latents.to(dev, dtype)
        t = torch.full((z.shape[0],), 500.0, device=dev)
        vae = p.vae
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(dev, vae.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(dev, vae.dtype)
        zv = latents.to(dev, vae.dtype) / inv_std + mean

        @torch.no_grad()
        def dit_cfg_step():
            p.transformer(z, t, cond.to(dtype), return_dict=False)
            if req.cfg:
                p.transformer(z, t, uncond.to(dtype), return_dict=False)
            synchronize(dev)

        @torch.no_grad()
        def vae_decode():
            vae.decode(zv, return_dict=False)
            synchronize(dev)

        def end_to_end():
            self.generate(req, latents)
            synchronize(dev)

        return {"dit_cfg_step": dit_cfg_step, "vae_decode": vae_decode, "end_to_end": end_to_end}
