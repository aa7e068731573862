"""`vidrt compare`: precision modes x backends on the same prompts, seeds and initial latents.

For every case (backend, precision) it records time per denoising step, end-to-end time, peak
memory, the DiT's bytes, the speed ratio against the torch fp32 exact path, PSNR and SSIM of the
frames against that path, and the prompt-adherence score of the synthetic world (vidrt.world).
Cases a machine cannot run are kept in the report with the reason.
"""
from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from vidrt.errors import ConfigError, VidrtError

logger = logging.getLogger(__name__)

SCHEMA = "vidrt.compare/1"
DEFAULT_PROMPTS = ("a red circle moves right", "a blue square moves up on a gray background")
BACKEND_PRECISIONS = {"torch": None, "onnxruntime": ("fp32", "fp16"),
                      "tensorrt": ("fp32", "fp16", "bf16", "fp8", "int8")}


@dataclass
class CompareConfig:
    model: Optional[str] = None  # None / "default" = the embedded model
    precisions: Sequence[str] = ("fp32", "bf16", "fp16", "fp8", "int8")
    backends: Sequence[str] = ("torch",)
    prompts: Sequence[str] = DEFAULT_PROMPTS
    num_frames: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    steps: Optional[int] = None
    guidance: Optional[float] = None
    seed: int = 0
    device: str = "cpu"
    warmup: bool = True


@dataclass
class Case:
    backend: str
    precision: str
    status: str = "ok"  # "ok" | "skipped" | "failed"
    reason: str = ""
    load_s: Optional[float] = None
    step_s: Optional[float] = None
    total_s: Optional[float] = None
    peak_memory_bytes: Optional[int] = None
    model_bytes: Optional[int] = None
    speed_ratio: Optional[float] = None
    psnr_db: Optional[float] = None
    ssim: Optional[float] = None
    adherence: Optional[float] = None
    per_prompt: list[dict[str, Any]] = field(default_factory=list)


def run_compare(cfg: CompareConfig, progress: bool = True) -> dict[str, Any]:
    """Run every case of ``cfg`` and return the report (see :data:`SCHEMA`)."""
    from vidrt.export.backends import check_backend_name
    from vidrt.metrics import psnr, ssim
    from vidrt.precision import PRECISIONS

    for p in cfg.precisions:
        if p not in PRECISIONS:
            raise ConfigError(f"unknown precision {p!r} in --precision; choose from {', '.join(PRECISIONS)}")
    for b in cfg.backends:
        check_backend_name(b)
    if not cfg.prompts:
        raise ConfigError("no prompts to compare; give --prompts FILE with one prompt per line")
    cases = [("torch", "fp32")] + [(b, p) for b in cfg.backends for p in cfg.precisions if (b, p) != ("torch", "fp32")]
    reference: Optional[list[np.ndarray]] = None
    results: list[Case] = []
    latents: Optional[list[torch.Tensor]] = None
    shape_info: dict[str, Any] = {}
    for backend, precision in cases:
        case = Case(backend, precision)
        allowed = BACKEND_PRECISIONS[backend]
        if allowed is not None and precision not in allowed:
            case.status, case.reason = "skipped", f"backend {backend} has no {precision} mode"
            results.append(case)
            continue
        try:
            frames, latents, shape_info = _run_case(cfg, case, latents, progress)
        except VidrtError as e:
            if not results:  # the torch fp32 reference itself cannot run: nothing to compare against
                raise
            case.status, case.reason = "skipped", str(e)
            logger.warning("compare %s/%s skipped: %s", backend, precision, e)
            results.append(case)
            continue
        if reference is None:
            reference = frames
        case.psnr_db = float(np.mean([psnr(r, f) for r, f in zip(reference, frames)]))
        case.ssim = float(np.mean([ssim(r, f) for r, f in zip(reference, frames)]))
        for j, (r, f) in enumerate(zip(reference, frames)):
            case.per_prompt[j].update(psnr_db=psnr(r, f), ssim=ssim(r, f))
        results.append(case)
    base = results[0]
    for c in results:
        if c.status == "ok" and base.total_s:
            c.speed_ratio = base.total_s / c.total_s
    return {
        "schema": SCHEMA,
        "config": {**asdict(cfg), "prompts": list(cfg.prompts)},
        "request": shape_info,
        "environment": _environment(cfg.device),
        "reference": {"backend": "torch", "precision": "fp32", "attention": "sdpa"},
        "cases": [_jsonable(asdict(c)) for c in results],  # the torch fp32 reference first
    }


def _run_case(cfg: CompareConfig, case: Case, latents, progress: bool):
    from vidrt.bench.memory import PeakMemory
    from vidrt.pipeline import Pipeline

    t0 = time.perf_counter()
    pipe = Pipeline.from_pretrained(cfg.model, device=cfg.device, precision=case.precision,
                                    backend=case.backend)
    case.load_s = time.perf_counter() - t0
    d = pipe.defaults
    nf = cfg.num_frames or d.num_frames
    h, w = cfg.height or d.height, cfg.width or d.width
    steps = cfg.steps or d.steps
    shape = pipe.latent_shape(1, nf, h, w)
    if latents is None:
        latents = [torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed + i))
                   for i in range(len(cfg.prompts))]
    kw = dict(num_frames=nf, height=h, width=w, guidance=cfg.guidance, progress=False)
    if cfg.warmup:
        pipe(cfg.prompts[0], steps=1, latents=latents[0], **kw)
    frames, step_s, total_s = [], [], []
    with PeakMemory(pipe.device) as mem:
        for prompt, lat in zip(cfg.prompts, latents):
            video = pipe(prompt, steps=steps, latents=lat, **kw)
            frames.append(video.frames)
            step_s.append(video.stats["dit_per_step_s"])
            total_s.append(video.stats["total_s"])
            case.per_prompt.append({"prompt": prompt, "total_s": video.stats["total_s"],
                                    "step_s": video.stats["dit_per_step_s"], "adherence": _adherence(video, prompt)})
    case.step_s = float(np.mean(step_s))
    case.total_s = float(np.mean(total_s))
    case.peak_memory_bytes = mem.cuda_max_allocated if pipe.device.type == "cuda" else mem.peak_delta
    case.model_bytes = dit_bytes(pipe)
    scores = [p["adherence"] for p in case.per_prompt if p["adherence"] is not None]
    case.adherence = float(np.mean(scores)) if scores else None
    info = {"num_frames": nf, "height": h, "width": w, "steps": steps, "guidance": pipe.defaults.guidance
            if cfg.guidance is None else cfg.guidance, "latent_shape": list(shape)}
    if progress:
        print(f"  {case.backend:12s} {case.precision:13s} {case.total_s:8.3f}s/clip  {case.step_s * 1000:8.1f} ms/step")
    return frames, latents, info


def dit_bytes(pipe) -> int:
    """Bytes of the DiT as it runs (both experts of a two-expert model): module weights (quantized codes at their
    size) or the graph files."""
    return sum(_expert_bytes(dit) for dit in pipe.experts)


def _expert_bytes(dit) -> int:
    from vidrt.quant.apply import model_bytes

    if isinstance(dit, torch.nn.Module):
        return model_bytes(dit)
    session = getattr(dit, "session", None)
    path = Path(getattr(session, "path", ""))
    files = [path, path.with_name(path.name + ".data")] if path.name else []
    return sum(f.stat().st_size for f in files if f.is_file())


def _adherence(video, prompt: str) -> Optional[float]:
    try:
        from vidrt.world import score
    except ImportError:
        return None
    try:
        return float(score(video.frames, prompt, fps=video.fps).adherence)
    except VidrtError as e:  # a prompt outside the world's grammar has no score
        logger.debug("no adherence score for %r: %s", prompt, e)
        return None


def _environment(device: str) -> dict[str, Any]:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "cpu_threads": torch.get_num_threads(), "machine": platform.machine()}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    for mod in ("onnxruntime", "tensorrt", "torchao"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:
            env[mod] = None
    return env


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_jsonable(v) for v in d]
    if isinstance(d, float) and math.isinf(d):
        return "inf"
    return d


# ------------------------------------------------------------------------------------------ output

def to_markdown(report: dict[str, Any]) -> str:
    r = report["request"]
    env = report["environment"]
    lines = [f"# vidrt compare: {report['config']['model'] or 'default'}", "",
             f"{r.get('num_frames')} frames at {r.get('height')}x{r.get('width')}, {r.get('steps')} steps, "
             f"guidance {r.get('guidance')}, {len(report['config']['prompts'])} prompt(s), same seeds and initial "
             f"latents; device {env['device']} ({env.get('gpu') or env['machine']}, {env['cpu_threads']} threads), "
             f"torch {env['torch']}. Reference: torch fp32 (sdpa).", "",
             "| backend | precision | ms/step | s/clip | speed vs fp32 | peak mem (MB) | DiT MB | PSNR dB | SSIM | adherence |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in report["cases"]:
        if c["status"] != "ok":
            lines.append(f"| {c['backend']} | {c['precision']} | {c['status']}: {c['reason'][:90]} |" + " |" * 7)
            continue
        mem = "" if c["peak_memory_bytes"] is None else f"{c['peak_memory_bytes'] / 1e6:.1f}"
        adh = "" if c["adherence"] is None else f"{c['adherence']:.3f}"
        psnr = c["psnr_db"] if c["psnr_db"] == "inf" else f"{c['psnr_db']:.2f}"
        lines.append(f"| {c['backend']} | {c['precision']} | {c['step_s'] * 1000:.1f} | {c['total_s']:.3f} | "
                     f"{c['speed_ratio']:.2f}x | {mem} | {c['model_bytes'] / 1e6:.2f} | {psnr} | {c['ssim']:.4f} | {adh} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [c for c in report["cases"] if c["status"] == "ok"]
    labels = [f"{c['backend']}\n{c['precision']}" for c in ok]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].bar(labels, [c["speed_ratio"] for c in ok], color="tab:blue")
    axes[0].axhline(1.0, color="gray", lw=0.8)
    axes[0].set_title("speed vs torch fp32 (x)")
    psnrs = [60.0 if c["psnr_db"] == "inf" else c["psnr_db"] for c in ok]
    axes[1].bar(labels, psnrs, color="tab:green")
    axes[1].set_title("PSNR vs fp32 frames (dB; inf drawn at 60)")
    axes[2].bar(labels, [c["model_bytes"] / 1e6 for c in ok], color="tab:orange")
    axes[2].set_title("DiT size (MB)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    r = report["request"]
    fig.suptitle(f"vidrt compare - {report['config']['model'] or 'default'}: {r.get('num_frames')}f "
                 f"{r.get('height')}x{r.get('width')}, {r.get('steps')} steps, {report['environment']['device']}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=2))
    return path
