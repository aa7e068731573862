"""pytest-benchmark suite of the pipeline stages: vidrt vs diffusers' WanPipeline, same folder and latents.

    pytest benchmarks --benchmark-only                      # with the kernel suites (attention, norms)
    pytest benchmarks/bench_pipeline.py --benchmark-only --benchmark-json out.json

Stages: one CFG denoising step of the transformer (diffusers: cond + uncond calls; vidrt: one batched
call with cross-attention K/V prepared once per clip), VAE decode, and end to end (4 steps). The
workloads are vidrt.bench's targets, the same code `vidrt bench` times (that command adds repeated
interleaved runs, percentiles, memory, throughput, JSON/markdown/plot and --compare; use it for
reported numbers). GPU-only cases (the Wan 1.3B-sized model at 480p) skip on CPU with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from vidrt.bench.model_spec import resolve_model
from vidrt.bench.targets import Request, VidrtTarget, make_latents
from vidrt.pipeline import embedded_model_path

GPU = torch.cuda.is_available()
PROMPT = "a red circle moves right"
END_TO_END_STEPS = 4


@dataclass(frozen=True)
class Case:
    name: str
    model: str                   # --model value: random:NAME or default
    shape: Optional[tuple[int, int, int]]  # (height, width, frames); None = the model's default size
    precision: str = "fp32"
    gpu_only: bool = False
    text_len: int = 32


CASES = [
    Case("small-64x64x33", "random:small", (64, 64, 33)),
    Case("small-128x128x17", "random:small", (128, 128, 17)),
    Case("embedded-default", "default", None),
    Case("wan1.3b-480x832x81-bf16", "random:wan1.3b", (480, 832, 81), precision="bf16", gpu_only=True, text_len=512),
]
STAGES = ["dit_cfg_step", "vae_decode", "end_to_end"]

_targets: dict[tuple[str, str], tuple] = {}


def _skip_reason(case: Case) -> Optional[str]:
    if case.gpu_only and not GPU:
        return f"{case.name} needs a CUDA GPU (a 1.3B DiT at 480p x 81 frames takes tens of minutes per step on a CPU)"
    if case.model == "default" and not (embedded_model_path() / "model_index.json").is_file():
        return "the embedded default model is not in this build"
    return None


def _load(case: Case):
    """(vidrt target, diffusers target) for the case's model, built once per session."""
    key = (case.model, case.precision)
    if key not in _targets:
        from vidrt.bench.baseline_diffusers import DiffusersTarget
        from vidrt.pipeline import Pipeline

        spec = resolve_model(case.model)
        device = "cuda" if GPU else "cpu"
        pipe = Pipeline.from_pretrained(spec.path, device=device, precision=case.precision)
        _targets[key] = (VidrtTarget(pipe), DiffusersTarget(spec.path, pipe.device, case.precision))
    return _targets[key]


@pytest.mark.parametrize("runtime", ["vidrt", "vidrt-all-taps", "diffusers"])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pipeline_stage(benchmark, monkeypatch, case: Case, stage: str, runtime: str):
    reason = _skip_reason(case)
    if reason:
        pytest.skip(reason)
    if runtime == "vidrt-all-taps":  # the VAE without its frame-local fast path (zero past taps computed too)
        if stage == "dit_cfg_step":
            pytest.skip("the frame-local switch only changes the VAE")
        from vidrt.models.vae import CausalConv3d

        monkeypatch.setattr(CausalConv3d, "skip_zero_past", False)
    ours, ref = _load(case)
    d = ours.pipe.defaults
    h, w, f = case.shape or (d.height, d.width, d.num_frames)
    req = Request((PROMPT,), h, w, f, END_TO_END_STEPS, guidance=5.0, text_len=case.text_len)
    latents = make_latents(ours.latent_shape(req), seed=0)
    fn = (ref if runtime == "diffusers" else ours).stage_fns(req, latents)[stage]
    benchmark.group = f"{case.name}-{stage}"
    benchmark.extra_info.update(tokens=ours.tokens(req), device=str(ours.device), precision=case.precision)
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
