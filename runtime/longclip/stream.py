"""``Pipeline.stream``: long, multi-shot clips made and decoded chunk by chunk.

    for part in pipe.stream([Shot("a red circle moves right", seconds=10),
                             Shot("the red circle bounces", seconds=20)]):
        writer.write(part.frames)          # (n, H, W, 3) uint8 of the finished chunk
        print(part.seconds_done, part.realtime_factor)

Causal models (``num_frame_per_block > 0``) run chunk-wise with a KV cache (vidrt.longclip.causal);
bidirectional models fall back to sliding windows (vidrt.longclip.sliding). Each finished chunk is
decoded at once by the causal VAE's stream decoder (its temporal cache makes the frames identical
to a one-shot decode) and yielded, so memory stays flat and the MP4 can be written as it goes.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from vidrt.errors import ConfigError
from vidrt.longclip.causal import CausalRollout, CausalSettings
from vidrt.longclip.kv_cache import KVCacheConfig
from vidrt.longclip.planner import PartPlanner
from vidrt.longclip.shots import ShotSpan, as_shots, check_references, plan_shots
from vidrt.longclip.sliding import SlidingWindow
from vidrt.video import to_frames

logger = logging.getLogger(__name__)

__all__ = ["StreamPart", "StreamSummary", "stream", "save_stream", "MODES"]

MODES = ("auto", "causal", "sliding")


@dataclass
class StreamPart:
    """One finished chunk (causal) or window (sliding) of a streamed clip."""

    index: int
    shot: int  # index of the shot it belongs to
    prompt: str
    frames: np.ndarray  # (n, H, W, 3) uint8, this part's video frames
    frame_start: int  # index of frames[0] in the whole clip
    latents: torch.Tensor  # (1, C, t, H', W') clean latents of this part (CPU, fp32)
    latent_start: int
    seconds_done: float  # video seconds finished so far (incl. this part)
    seconds_total: float
    fps: float
    timings: dict[str, float]  # denoise_s, commit_s (KV write), decode_s, part_s
    elapsed_s: float  # wall seconds since the stream started
    time_to_first_s: float  # wall seconds until the first part was ready
    realtime_factor: float  # video seconds made / wall seconds so far (>= 1 is faster than real time)
    mode: str  # "causal" | "causal-recompute" | "sliding"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_stop(self) -> int:
        return self.frame_start + self.frames.shape[0]


@dataclass
class StreamSummary:
    """What :func:`save_stream` wrote."""

    path: Path
    frames: int
    seconds: float
    parts: int
    total_s: float
    time_to_first_s: float
    realtime_factor: float
    mode: str
    complete: bool
    part_s: list[float]


def _default_window(pipe, chunk: int) -> int:
    """Latent frames the model sees at once by default (its default clip length)."""
    n = pipe.defaults.num_frames
    return max(chunk, (n - 1) // pipe.vae_scale_temporal + 1)


def stream(
    pipe,
    shots,
    seconds: Optional[float] = None,
    latency_target: Optional[float] = None,
    *,
    height: Optional[int] = None,
    width: Optional[int] = None,
    steps: Optional[int] = None,
    guidance: Optional[float] = None,
    guidance_2: Optional[float] = None,
    seed: int = 0,
    negative_prompt: Optional[str] = None,
    sampler: Optional[str] = None,
    shift: Optional[float] = None,
    mode: str = "auto",
    kv_cache: bool = True,
    chunk_frames: Optional[int] = None,
    sink_frames: Optional[int] = None,
    window_frames: Optional[int] = None,
    overlap_frames: Optional[int] = None,
    context_noise: float = 0.0,
    commit_context: Optional[str] = None,
    cache: Optional[str] = None,
    cache_threshold: Optional[float] = None,
    world: Optional[bool] = None,
    canonical_prompts: bool = True,
    max_sequence_length: Optional[int] = None,
    progress: bool = False,
) -> Iterator[StreamPart]:
    """Generate a long clip part by part (a generator of :class:`StreamPart`).

    ``shots``: a prompt, a ``Shot``, a list of them, or a YAML/JSON shot-list path; ``seconds`` is the
    length of a single prompt (or rescales a shot list to that total).

    Causal mode (default for models with ``num_frame_per_block > 0``, or when ``chunk_frames`` is
    given for a causal checkpoint whose config lacks it): chunks of ``chunk_frames`` latent frames
    (default: the model's ``num_frame_per_block``), attending to ``sink_frames`` first frames
    (default one chunk) and the last ``window_frames`` (default: the model's default clip length
    minus sink and current chunk) through the KV cache; ``kv_cache=False`` recomputes the visible
    past every step instead (the reference, slower). ``context_noise`` is the sigma at which a
    finished chunk's keys/values are written (0 = clean); ``commit_context`` what that write attends
    to: "window" (sinks + rolling window) or "sinks" (sinks + itself), default the model config's.
    Sliding mode (bidirectional models): windows of ``window_frames`` latent frames with
    ``overlap_frames`` re-noised context frames. Two-expert (Wan 2.2 A14B) models stream in sliding mode, each
    step on the expert of its noise level, ``guidance_2`` the low-noise expert's scale (as ``Pipeline.__call__``).

    ``latency_target`` is seconds per part: the caching scheduler (``Pipeline.plan``, per part through
    ``vidrt.longclip.planner.PartPlanner``) picks steps, step cache and CFG mode from this device's cost
    model, corrected by how the finished parts ran; each part's
    ``info["latency_target_met"]`` says whether it made it. ``world`` controls world-grammar
    reference checks of the shot list (None: when the first prompt is a world prompt). For a world shot list
    ``canonical_prompts`` conditions each shot on its scene as world training prompts write it
    (``vidrt.world.shots.model_prompts``: "the red circle bounces" -> "a red circle bounces on a gray
    background"; each part's ``info["model_prompt"]``); False: on the prompts as given.
    """
    d = pipe.defaults
    cfgm = pipe.transformer.config
    two_experts = len(pipe.experts) > 1
    scales = pipe.guidance_scales(guidance, guidance_2)   # checked as Pipeline.__call__ checks them
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}; use one of {', '.join(MODES)}")
    causal_model = cfgm.num_frame_per_block > 0
    if mode == "auto":
        mode = "causal" if causal_model or chunk_frames else "sliding"
    if two_experts and mode == "causal":
        raise ConfigError("a two-expert (Wan 2.2 A14B) model streams long clips in sliding mode (overlapping windows, "
                          "each step on the expert of its noise level); use mode='sliding' or 'auto', without "
                          "chunk_frames")
    elif mode == "causal" and not causal_model and chunk_frames is None:
        raise ConfigError("this model is bidirectional (num_frame_per_block=0): causal streaming needs a causal "
                          "variant; use mode='sliding' (or 'auto'). If it IS a causal checkpoint whose config lacks "
                          "num_frame_per_block (e.g. a Self-Forcing DiT swapped in with transformer=), pass "
                          "chunk_frames=3 (its latent frames per chunk)")
    shot_list = as_shots(shots, seconds)
    is_world = check_references(shot_list, world)
    texts = [s.prompt for s in shot_list]
    if is_world and canonical_prompts:
        from vidrt.world.shots import model_prompts

        texts = model_prompts(texts)

    height = d.height if height is None else int(height)
    width = d.width if width is None else int(width)
    steps = d.steps if steps is None else int(steps)
    if steps < 1:
        raise ConfigError(f"steps={steps}; use at least 1 denoising step")
    _, c, _, hl, wl = pipe.latent_shape(1, 1, height, width)
    _, ph, pw = cfgm.patch_size
    frame_tokens = (hl // ph) * (wl // pw)
    settings = CausalSettings(steps, scales[0], sampler or d.sampler, shift, context_noise, cache, cache_threshold,
                              guidance_2=scales[1] if two_experts else None)
    cfg = max(scales) > 1.0
    fps = d.fps

    if mode == "causal":
        chunk = int(chunk_frames or cfgm.num_frame_per_block)
        sink = chunk if sink_frames is None else int(sink_frames)
        if window_frames is None:
            window_frames = max(chunk, (_default_window(pipe, chunk) - sink - chunk) // chunk * chunk)
        kvc = KVCacheConfig(chunk, frame_tokens, sink, int(window_frames), commit_context or cfgm.commit_context)
        unit = chunk
    else:
        window = int(window_frames or min(_default_window(pipe, 1), 16))
        overlap = int(overlap_frames or max(1, window // 4))
        unit = 1
    spans = plan_shots(shot_list, fps=fps, unit=unit, temporal=pipe.vae_scale_temporal)
    total_latent = spans[-1].latent_stop
    total_frames = 1 + pipe.vae_scale_temporal * (total_latent - 1)
    seconds_total = total_frames / fps

    planner = None
    if latency_target is not None:  # planned per part (the cache it sees, how the last parts ran); first plan now
        shape = (1, c, unit if mode == "causal" else window, hl, wl)
        planner = PartPlanner(pipe, latency_target, shape, cfg=cfg, default_steps=steps,
                              settings=settings, kv=kvc if mode == "causal" and kv_cache else None)
        sched = planner.plan(0)
        logger.info("latency target %.3fs per part: %s (predicted %.3fs)", latency_target, sched.plan.label(),
                    sched.predicted_s)

    if mode == "causal":
        runner = CausalRollout(pipe, settings, latent_hw=(hl, wl), cache_config=kvc, use_cache=kv_cache)
        label = "causal" if kv_cache else "causal-recompute"
    else:
        runner = SlidingWindow(pipe, settings, window_frames=window, overlap_frames=overlap)
        label = "sliding"

    logger.info("stream: %s, %d shot(s), %d latent frames -> %d frames (%.2fs at %g fps), %dx%d",
                label, len(spans), total_latent, total_frames, seconds_total, fps, width, height)
    return _run(pipe, runner, label, spans, seed=seed, negative_prompt=negative_prompt, cfg=cfg,
                max_sequence_length=max_sequence_length, fps=fps, seconds_total=seconds_total, shape=(c, hl, wl),
                unit=unit, planner=planner, progress=progress, world=is_world, texts=texts)


def _parts_of(span: ShotSpan, mode: str, unit: int, runner) -> Iterator[tuple[int, int]]:
    """(latent start, latent count) of each part of a shot."""
    s = span.latent_start
    while s < span.latent_stop:
        if mode == "sliding":
            n = runner.window_frames if runner.context is None else runner.new_frames_per_window
        else:
            n = unit
        n = min(n, span.latent_stop - s)
        yield s, n
        s += n


def _run(pipe, runner, label: str, spans: list[ShotSpan], *, seed: int, negative_prompt: Optional[str],
         cfg: bool, max_sequence_length, fps: float, seconds_total: float, shape, unit: int,
         planner: Optional[PartPlanner], progress: bool, world: bool, texts: list[str]) -> Iterator[StreamPart]:
    gen = torch.Generator("cpu").manual_seed(int(seed))
    decoder = pipe.vae.stream_decoder()
    c, hl, wl = shape
    mode = "sliding" if label == "sliding" else "causal"
    t_start = time.perf_counter()
    first_s: Optional[float] = None
    frames_done = 0
    index = 0
    bar = tqdm(total=round(seconds_total, 2), desc="video", unit="s", disable=not progress, leave=True,
               bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} video s [{elapsed}<{remaining}{postfix}]")
    try:
        for span in spans:
            shot = span.shot
            neg = shot.negative_prompt if shot.negative_prompt is not None else (
                negative_prompt if negative_prompt is not None else pipe.defaults.negative_prompt)
            t0 = time.perf_counter()
            ctx = pipe.encode_prompts([texts[span.index]] + ([neg] if cfg else []), max_sequence_length)
            kv = (pipe.transformer.prepare_context(ctx) if mode == "causal"
                  else [dit.prepare_context(ctx) for dit in pipe.experts])
            text_s = time.perf_counter() - t0
            if span.index > 0 and shot.cut == "hard":
                runner.hard_cut()
            last_span = span is spans[-1]
            for start, n in _parts_of(span, mode, unit, runner):
                t_part = time.perf_counter()
                if planner is not None and index > 0:
                    planner.plan(index)  # ~1.5 ms on this CPU, counted in the part's time
                noise = torch.randn((1, c, n, hl, wl), generator=gen, dtype=torch.float32)
                if mode == "causal":
                    last = last_span and start + n == span.latent_stop
                    lat, timings = runner.chunk(noise, kv, start, commit=not last)
                else:
                    lat, timings = runner.window(noise, kv, seed=int(seed) * 1_000_003 + start)
                t0 = time.perf_counter()
                video = decoder.decode(pipe.vae.denormalize(lat.to(pipe.device, pipe.vae.dtype)))
                frames = to_frames(video[0])
                timings["decode_s"] = time.perf_counter() - t0
                timings["text_s"] = text_s
                text_s = 0.0
                now = time.perf_counter()
                timings["part_s"] = now - t_part
                if first_s is None:
                    first_s = now - t_start
                frames_done += frames.shape[0]
                elapsed = now - t_start
                info: dict[str, Any] = {"world": world, "model_prompt": texts[span.index], **runner.stats}
                cache = getattr(runner, "cache", None)
                if cache is not None:
                    info.update(kv_cache_bytes=cache.nbytes, kv_cached_tokens=cache.filled,
                                kv_evicted_chunks=cache.evicted_chunks)
                if planner is not None:
                    work_s = timings["part_s"] - timings["text_s"]
                    info.update(latency_target_s=planner.target_s, latency_target_met=work_s <= planner.target_s,
                                plan=planner.schedule.plan.label(), predicted_s=planner.schedule.predicted_s,
                                cost_scale=planner.scale, replans=planner.replans)
                    planner.observe(work_s)
                part = StreamPart(index=index, shot=span.index, prompt=shot.prompt, frames=frames,
                                  frame_start=frames_done - frames.shape[0], latents=lat.detach().cpu(),
                                  latent_start=start, seconds_done=frames_done / fps, seconds_total=seconds_total,
                                  fps=fps, timings=timings, elapsed_s=elapsed, time_to_first_s=first_s,
                                  realtime_factor=(frames_done / fps) / max(elapsed, 1e-9), mode=label, info=info)
                index += 1
                bar.n = round(part.seconds_done, 2)  # exact position (float updates would drift past total)
                bar.set_postfix_str(f"rtf {part.realtime_factor:.3f}x, shot {span.index + 1}/{len(spans)}")
                yield part
    finally:
        bar.close()


def save_stream(parts, path: Union[str, Path], fps: Optional[float] = None, quality: int = 8) -> StreamSummary:
    """Write every part's frames to an MP4 as they arrive; an exception or interrupt mid-stream still
    leaves a playable file with every finished part (the error is re-raised after closing it, with
    ``kept_path`` / ``kept_frames`` attributes saying what the file holds, and a warning logged)."""
    from vidrt.mp4 import Mp4Writer

    path = Path(path)
    writer = None
    n_parts = frames = 0
    last = None
    part_s: list[float] = []
    complete = False
    try:
        for part in parts:
            if writer is None:
                writer = Mp4Writer(path, fps=fps or part.fps, quality=quality)
            writer.write(part.frames)
            last = part
            n_parts += 1
            frames += part.frames.shape[0]
            part_s.append(part.timings["part_s"])
        complete = True
    except BaseException as e:
        # the finished frames stay in the file: say so for any failure (the CLI reports a Ctrl-C itself)
        kept = writer.frames_written if writer is not None else 0
        e.kept_path, e.kept_frames = (path if writer is not None else None), kept
        if kept and not isinstance(e, KeyboardInterrupt):
            logger.warning("%s holds the %d finished frames (%.2fs of video) made before the error", path, kept,
                           kept / (fps or (last or part).fps))  # writer set: part is bound
        raise
    finally:
        if writer is not None:
            writer.close()
    rate = fps or (last.fps if last else 16.0)
    return StreamSummary(path, frames, frames / rate, n_parts, last.elapsed_s if last else 0.0,
                         last.time_to_first_s if last else math.nan, last.realtime_factor if last else 0.0,
                         last.mode if last else "", complete, part_s)
