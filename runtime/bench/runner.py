"""The `vidrt bench` harness: warm-up, interleaved repeated runs, statistics, quality, one JSON document.

For every case (shape x batch size) each target (vidrt with the chosen switches, and the baseline)
starts from the same latents. After ``warmup`` unmeasured calls per target, ``repeats`` measured
rounds run the targets in turn (A B A B ...), so machine noise hits them alike. Each call is timed
end to end (GPU work included), its stage times are recorded, and its peak memory is sampled.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vidrt.bench import schema
from vidrt.bench.environment import environment
from vidrt.bench.memory import PeakMemory
from vidrt.bench.model_spec import ModelSpec, dit_config, resolve_model
from vidrt.bench.stats import ratio, summarize
from vidrt.bench.targets import STAGES, Request, RunOutput, VidrtTarget, make_latents, supported_caches, synchronize
from vidrt.errors import BackendUnavailableError, ConfigError, ShapeError, out_of_memory_as_shape_error

logger = logging.getLogger(__name__)

BACKENDS = ("torch",)
PLANNED_BACKENDS = ("onnx", "tensorrt")
BASELINES = ("diffusers",)
# Prompts for models without the synthetic world (words of vidrt.testing's vocabulary).
PROMPTS = ("a red circle moves right", "a blue square moves up on a gray background", "a green circle moves left",
           "a red square moves down on a black background")
MB = 1024.0 * 1024.0


@dataclass
class BenchConfig:
    """Everything `vidrt bench` measures; shapes are (height, width, frames)."""

    model: str = "default"
    shapes: Optional[list[tuple[int, int, int]]] = None  # None: the model's default size
    steps: Optional[int] = None                          # None: the model's default steps
    batches: list[int] = field(default_factory=lambda: [1])
    precision: str = "fp32"
    attention: str = "sdpa"
    backend: str = "torch"
    cache: str = "none"
    baseline: Optional[str] = None
    device: str = "cpu"
    warmup: int = 1
    repeats: int = 5
    guidance: Optional[float] = None
    seed: int = 0
    text_len: Optional[int] = None
    threads: Optional[int] = None
    quality: str = "auto"                                # auto | on | off
    workdir: Optional[Path] = None                       # where random:NAME models are built
    command: Optional[str] = None


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """'480x832x81,64x64x33' -> [(480, 832, 81), (64, 64, 33)] (height x width x frames)."""
    shapes = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        bits = part.lower().split("x")
        if len(bits) != 3 or not all(b.isdigit() and int(b) > 0 for b in bits):
            raise ShapeError(f"--shapes: {part!r} is not HxWxF (height x width x frames, e.g. 480x832x81)")
        shapes.append((int(bits[0]), int(bits[1]), int(bits[2])))
    if not shapes:
        raise ShapeError("--shapes is empty; give HxWxF values separated by commas, e.g. 480x832x81,64x64x33")
    return shapes


def parse_batches(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]."""
    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise ConfigError(f"--batch {text!r}: give prompts per call as positive integers, e.g. 1 or 1,2,4")
    return out


def check_config(cfg: BenchConfig) -> None:
    """Reject options this build or machine cannot run, naming what it can (before any model is built)."""
    from vidrt.attention import check_backend
    from vidrt.precision import check_precision, resolve_device

    check_precision(cfg.precision, resolve_device(cfg.device))
    check_backend(cfg.attention)
    if cfg.backend not in BACKENDS:
        later = " is not available yet" if cfg.backend in PLANNED_BACKENDS else " is unknown"
        raise BackendUnavailableError(f"--backend {cfg.backend}{later}; this build runs --backend "
                                      f"{' | '.join(BACKENDS)}")
    caches = supported_caches()
    names = [c for c in (cfg.cache or "none").split("+") if c]
    if any(n not in caches for n in names):
        raise BackendUnavailableError(f"--cache {cfg.cache} is not available in this build; use --cache "
                                      f"{' | '.join(caches)}" + (" (combine with '+')" if len(caches) > 2 else ""))
    if cfg.baseline not in (None, "none") and cfg.baseline not in BASELINES:
        raise ConfigError(f"--baseline {cfg.baseline}: unknown baseline; use --baseline {' | '.join(BASELINES)}")
    if cfg.quality not in ("auto", "on", "off"):
        raise ConfigError(f"--quality {cfg.quality}: use auto, on or off")
    if cfg.warmup < 0 or cfg.repeats < 1:
        raise ConfigError(f"--warmup {cfg.warmup} --repeats {cfg.repeats}: need warmup >= 0 and repeats >= 1")
    if cfg.steps is not None and cfg.steps < 1:
        raise ConfigError(f"--steps {cfg.steps}: use at least 1 denoising step")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"--threads {cfg.threads}: must be at least 1; give a positive number, or leave --threads "
                          "out for torch's default")


@dataclass
class Measurement:
    """Raw numbers of one target on one case."""

    latency: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    peak_rss: Optional[int] = None
    start_rss: Optional[int] = None
    peak_delta: Optional[int] = None
    cuda_max: Optional[int] = None
    frames: Optional[list[np.ndarray]] = None  # output of the first measured run

    def add(self, seconds: float, out: RunOutput, mem: PeakMemory) -> None:
        self.latency.append(seconds)
        for k, v in out.stages.items():
            self.stages.setdefault(k, []).append(v)
        if self.frames is None:
            self.frames = out.frames
        if mem.start_rss is not None:
            self.start_rss = mem.start_rss if self.start_rss is None else min(self.start_rss, mem.start_rss)
        for name, val in (("peak_rss", mem.peak_rss), ("peak_delta", mem.peak_delta),
                          ("cuda_max", mem.cuda_max_allocated)):
            if val is not None:
                setattr(self, name, max(val, getattr(self, name) or 0))


def measure_case(targets: Sequence, req: Request, latents: torch.Tensor, warmup: int, repeats: int,
                 bar: Optional[tqdm] = None) -> list[Measurement]:
    """Warm up each target, then ``repeats`` interleaved measured rounds; one Measurement per target."""
    for tgt in targets:
        for _ in range(warmup):
            if bar is not None:
                bar.set_postfix_str(f"{tgt.label} warm-up")
            tgt.generate(req, latents)
            if bar is not None:
                bar.update()
    out = [Measurement() for _ in targets]
    for _ in range(repeats):
        for tgt, m in zip(targets, out):
            if bar is not None:
                bar.set_postfix_str(tgt.label)
            with PeakMemory(tgt.device) as mem:
                synchronize(tgt.device)
                t0 = time.perf_counter()
                res = tgt.generate(req, latents)
                synchronize(tgt.device)
                dt = time.perf_counter() - t0
            m.add(dt, res, mem)
            if bar is not None:
                bar.update()
    return out


def psnr(frames: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> Optional[float]:
    """PSNR (dB, peak 255) between two lists of uint8 clips; None when identical."""
    from vidrt.metrics import psnr as clip_psnr

    value = clip_psnr(np.concatenate([np.ravel(f) for f in frames]), np.concatenate([np.ravel(f) for f in ref]))
    return None if math.isinf(value) else value  # JSON has no infinity


def _world_scorer():
    try:
        from vidrt.world.score import score
    except ImportError:
        return None
    return score


def _prompts(model: ModelSpec, batch: int, seed: int) -> tuple[str, ...]:
    if model.embedded:
        from vidrt.world import sample_prompt

        return tuple(sample_prompt(seed + i) for i in range(batch))
    return tuple(PROMPTS[i % len(PROMPTS)] for i in range(batch))


def _mb(x: Optional[int]) -> Optional[float]:
    return None if x is None else round(x / MB, 2)


def _result(tgt, m: Measurement, req: Request, tokens: int) -> dict:
    lat = summarize(m.latency)
    stages = {k: summarize(v) for k, v in m.stages.items() if k in STAGES}
    branches = 2 if req.cfg else 1
    dit = stages.get("dit_s")
    return {
        "runtime": tgt.name, "label": tgt.label, **tgt.settings(),
        "latency_s": lat, "stages": stages,
        "throughput": {
            "videos_per_min": 60.0 * req.batch / lat["median"],
            "frames_per_s": req.batch * req.frames / lat["median"],
            "dit_tokens_per_s": tokens * req.batch * branches * req.steps / dit["median"]
            if dit and dit["median"] > 0 else None,
        },
        "memory": {"peak_rss_mb": _mb(m.peak_rss), "start_rss_mb": _mb(m.start_rss),
                   "peak_rss_delta_mb": _mb(m.peak_delta), "cuda_max_allocated_mb": _mb(m.cuda_max)},
        "quality": {"psnr_vs_exact_db": None, "is_exact_reference": False, "adherence": None, "note": None},
        "speedup_vs_baseline": None, "stage_speedup_vs_baseline": None,
    }


def _is_exact(tgt: VidrtTarget) -> bool:
    s = tgt.settings()
    return s["precision"] == "fp32" and s["attention"] == "sdpa" and s["cache"] == "none" and s["backend"] == "torch"


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict:
    """Run every case of ``cfg`` and return the ``vidrt.bench/1`` document (validated)."""
    from vidrt.pipeline import Pipeline

    check_config(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    model = resolve_model(cfg.model, cfg.workdir)
    pipe = Pipeline.from_pretrained(model.path, device=cfg.device, precision=cfg.precision, attention=cfg.attention)
    ours = VidrtTarget(pipe, cfg.cache, cfg.backend)
    targets: list = [ours]
    if cfg.baseline and cfg.baseline != "none":
        from vidrt.bench.baseline_diffusers import DiffusersTarget

        targets.append(DiffusersTarget(model.path, pipe.device, cfg.precision))
    d = pipe.defaults
    steps = cfg.steps or d.steps
    guidance = d.guidance if cfg.guidance is None else float(cfg.guidance)
    text_len = cfg.text_len or d.max_sequence_length
    shapes = cfg.shapes or [(d.height, d.width, d.num_frames)]

    notes: list[str] = []
    quality = cfg.quality == "on" or (cfg.quality == "auto" and model.embedded)
    exact = ours if _is_exact(ours) else None
    if exact is None and quality:
        exact = VidrtTarget(Pipeline.from_pretrained(model.path, device=cfg.device))
    scorer = _world_scorer() if model.embedded else None
    if exact is None:
        notes.append("PSNR vs the exact path not measured (run with --quality on to measure it)")
    if not model.embedded:
        notes.append("adherence applies to the embedded model only (other weights do not draw vidrt.world scenes)")
    elif scorer is None:
        notes.append("adherence not measured: the world scorer (vidrt.world.score) is not in this build")
    if model.random:
        notes.append(f"random weights ({model.spec}): speed only, the frames are noise")

    cases = [(s, b) for s in shapes for b in cfg.batches]
    reqs = []
    for (h, w, f), b in cases:
        req = Request(_prompts(model, b, cfg.seed), h, w, f, steps, guidance, text_len)
        ours.latent_shape(req)  # a clear ShapeError before anything runs
        reqs.append(req)
    total = len(cases) * len(targets) * (cfg.warmup + cfg.repeats)
    bar = tqdm(total=total, desc="vidrt bench", unit="run", disable=not progress)
    out_cases = []
    for req in reqs:
        bar.set_description(f"{req.height}x{req.width}x{req.frames} b{req.batch}")
        shape = ours.latent_shape(req)
        tokens = ours.tokens(req)
        with out_of_memory_as_shape_error(f"{req.height}x{req.width}x{req.frames} at batch {req.batch} needs more "
                                          "memory than this machine has; lower --shapes (or --batch)"):
            latents = make_latents(shape, cfg.seed)
            ms = measure_case(targets, req, latents, cfg.warmup, cfg.repeats, bar)
        results = [_result(t, m, req, tokens) for t, m in zip(targets, ms)]
        ref_frames = None
        if exact is ours:
            ref_frames = ms[0].frames
            results[0]["quality"]["is_exact_reference"] = True
        elif exact is not None:
            ref_frames = exact.generate(req, latents).frames
        for r, m in zip(results, ms):
            q = r["quality"]
            if ref_frames is not None and not q["is_exact_reference"]:
                q["psnr_vs_exact_db"] = psnr(m.frames, ref_frames)
                if q["psnr_vs_exact_db"] is None:
                    q["note"] = "frames identical to the exact path"
            if scorer is not None:
                q["adherence"] = float(np.mean([scorer(fr, p, fps=d.fps).adherence
                                                for fr, p in zip(m.frames, req.prompts)]))
        if len(results) > 1:
            base = results[-1]
            for r in results[:-1]:
                r["speedup_vs_baseline"] = ratio(base["latency_s"], r["latency_s"])
                r["stage_speedup_vs_baseline"] = {k: ratio(base["stages"].get(k), r["stages"].get(k))
                                                  for k in ("text_s", "dit_per_step_s", "vae_s")}
        out_cases.append({"id": f"{req.height}x{req.width}x{req.frames}-b{req.batch}", "height": req.height,
                          "width": req.width, "frames": req.frames, "batch": req.batch,
                          "latent_shape": list(shape), "tokens": tokens, "prompts": list(req.prompts),
                          "results": results})
    bar.close()

    doc = {
        "schema": schema.SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command,
        "environment": environment(pipe.device),
        "model": {"spec": model.spec, "path": str(model.path), "embedded": model.embedded, "random": model.random,
                  "config": {**dit_config(model.path),
                             "dit_parameters": sum(p.numel() for p in pipe.transformer.parameters()),
                             "dit_experts": len(pipe.experts)}},
        "settings": {"steps": steps, "guidance": guidance, "text_len": text_len, "warmup": cfg.warmup,
                     "repeats": cfg.repeats, "seed": cfg.seed,
                     "baseline": cfg.baseline if cfg.baseline not in (None, "none") else None},
        "cases": out_cases,
        "notes": notes,
    }
    return schema.check(doc, "the benchmark result")
