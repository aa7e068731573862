"""``vidrt stream``: a long (multi-shot) clip streamed chunk by chunk into a progressively written MP4.

    vidrt stream "a red circle moves right" --seconds 60 -o long.mp4
    vidrt stream --shots shots.yaml -o long.mp4 --json run.json

A separate command from ``vidrt generate`` (one clip, one pass) because it is a different engine:
it mirrors ``Pipeline.stream``, shows progress in video seconds with the real-time factor, and
an interrupted run keeps a playable MP4 of every finished chunk.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidrt.cli import _add_model_args, _load, check_output, check_positive, check_seconds, command, write_text
from vidrt.errors import ConfigError
from vidrt.models.dit import COMMIT_CONTEXTS
from vidrt.video import CLIP_SUFFIXES



def _add_stream(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", default=None, help="one prompt (or give --shots)")
    p.add_argument("--shots", default=None, help="shot list (.yaml/.yml/.json): [{prompt, seconds, cut}, ...]")
    p.add_argument("--seconds", type=float, default=None,
                   help="clip length (a prompt: default 5; a shot list: rescales its lengths to this total)")
    _add_model_args(p)
    p.add_argument("-o", "--output", default="long.mp4", help="MP4 written progressively (or .gif, .png)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--guidance-2", type=float, default=None,
                   help="two-expert (Wan 2.2 A14B) models: the low-noise expert's guidance (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None, help="unipc | euler (default: the checkpoint's)")
    p.add_argument("--shift", type=float, default=None)
    p.add_argument("--mode", default="auto", help="auto | causal | sliding (auto: causal if the model is)")
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the visible past every step (reference)")
    p.add_argument("--chunk-frames", type=int, default=None, help="latent frames per chunk (default: the model's)")
    p.add_argument("--sink-frames", type=int, default=None, help="first latent frames kept in the cache")
    p.add_argument("--window-frames", type=int, default=None, help="recent latent frames attended (causal) / "
                   "window length (sliding)")
    p.add_argument("--overlap-frames", type=int, default=None, help="sliding mode: re-noised context frames")
    p.add_argument("--context-noise", type=float, default=0.0, help="sigma of the past when its K/V are cached")
    p.add_argument("--commit-context", default=None, choices=COMMIT_CONTEXTS,
                   help="what a finished chunk attends to when its K/V are cached: window (sinks + rolling "
                        "window, CausVid / Self-Forcing) or sinks (sinks + itself); default: the model's")
    p.add_argument("--latency-target", type=float, default=None, help="seconds per chunk (the scheduler plans)")
    p.add_argument("--free-text", action="store_true", help="do not check prompts against the world grammar")
    p.add_argument("--max-sequence-length", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", default=None, help="write run statistics (per chunk) as JSON here")


@command("stream", "long / multi-shot clip streamed chunk by chunk (KV cache), MP4 written as it goes")(_add_stream)
def _stream(args: argparse.Namespace) -> int:
    from vidrt.longclip.stream import save_stream

    if (args.prompt is None) == (args.shots is None):
        raise ConfigError("give a prompt or --shots FILE (not both), e.g. vidrt stream 'a red circle moves right' "
                          "--seconds 60")
    check_positive(args, "threads", "steps", "height", "width", "chunk_frames", "max_sequence_length")
    check_seconds(args.seconds)
    if args.shots is not None:
        from vidrt.longclip.shots import load_shots

        load_shots(args.shots)  # a missing or malformed shot list fails here, before the model loads
    check_output(args.output, "-o", CLIP_SUFFIXES)
    check_output(args.json, "--json")
    source = Path(args.shots) if args.shots else args.prompt
    seconds = args.seconds if args.seconds is not None or args.shots else 5.0
    if args.model is None and args.transformer is None:
        from vidrt.pipeline import EMBEDDED_CAUSAL_MODEL, embedded_causal_transformer

        if embedded_causal_transformer() is not None:
            args.model = EMBEDDED_CAUSAL_MODEL  # the embedded model's causal variant: KV-cached chunks
    pipe = _load(args)
    parts = pipe.stream(source, seconds=seconds, latency_target=args.latency_target, height=args.height,
                        width=args.width, steps=args.steps, guidance=args.guidance, guidance_2=args.guidance_2,
                        seed=args.seed,
                        negative_prompt=args.negative_prompt, sampler=args.sampler, shift=args.shift,
                        mode=args.mode, kv_cache=not args.no_kv_cache, chunk_frames=args.chunk_frames,
                        sink_frames=args.sink_frames, window_frames=args.window_frames,
                        overlap_frames=args.overlap_frames, context_noise=args.context_noise,
                        commit_context=args.commit_context,
                        world=False if args.free_text else None, max_sequence_length=args.max_sequence_length,
                        progress=not args.no_progress)
    records: list[dict] = []

    def recorded(it):
        for part in it:
            records.append({"index": part.index, "shot": part.shot, "frames": part.frames.shape[0],
                            "seconds_done": round(part.seconds_done, 4), **{k: round(v, 5) for k, v in
                                                                            part.timings.items()},
                            "realtime_factor": round(part.realtime_factor, 5),
                            **{k: part.info[k] for k in ("plan", "predicted_s", "latency_target_met")
                               if k in part.info}})
            yield part

    try:
        summary = save_stream(recorded(parts), args.output)
    except KeyboardInterrupt:
        done = sum(r["frames"] for r in records)
        print(f"vidrt stream: interrupted; {args.output} holds the {done} finished frames", file=sys.stderr)
        raise
    print(f"wrote {summary.path} ({summary.frames} frames, {summary.seconds:.2f}s of video, {summary.parts} chunks, "
          f"{summary.mode}) in {summary.total_s:.2f}s: first chunk after {summary.time_to_first_s:.2f}s, "
          f"real-time factor {summary.realtime_factor:.3f}x")
    if args.json:
        write_text(args.json, json.dumps({
            "output": str(summary.path), "frames": summary.frames, "seconds": summary.seconds, "mode": summary.mode,
            "total_s": summary.total_s, "time_to_first_s": summary.time_to_first_s,
            "realtime_factor": summary.realtime_factor, "chunks": records}, indent=2))
    return 0
