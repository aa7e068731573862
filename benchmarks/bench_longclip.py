#!/usr/bin/env python
"""Long clips: flat memory, steady per-chunk latency, KV cache vs recomputing the past, quality over time.

    python benchmarks/bench_longclip.py --random                    # tiny random causal model (no training)
    python benchmarks/bench_longclip.py --model PATH                # a causal checkpoint folder
    python benchmarks/bench_longclip.py                             # the embedded causal model when bundled

Each measurement runs in its own child process (so peak RSS is that run's own):
- ``short`` / ``long``: a 5 s and a 60 s stream (the same shot list, cut to length), MP4 written as it
  goes like ``vidrt stream``; peak RSS (ru_maxrss), per-chunk latency (first ten vs last ten chunks),
  time to first chunk, total time, real-time factor (video seconds / wall seconds).
- ``compare``: the first 10 s with the KV cache and with the past recomputed every step (same
  process, same settings): speed ratio and PSNR between the two.
- world adherence per 5 s window, and the scorer's continuity and identity across shots, when the model is the
  embedded one (or ``--score``): random weights make noise, so their scores would mean nothing.

Writes benchmarks/results/<name>.json and <name>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SHOTS = [  # (prompt, share of the clip, cut)
    ("a red circle moves right", 1 / 3, "continuous"),
    ("the red circle bounces", 1 / 3, "continuous"),
    ("the red circle moves left and a blue square stays still", 1 / 3, "hard"),
]


def _shots(seconds: float):
    from vidrt.longclip import Shot

    if seconds <= 10:  # a short run: the first shot only
        return [Shot(SHOTS[0][0], seconds)]
    return [Shot(p, seconds * share, cut) for p, share, cut in SHOTS]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _load(spec: dict):
    import torch

    from vidrt.pipeline import Pipeline

    torch.set_num_threads(spec["threads"])
    return Pipeline.from_pretrained(spec["model"])


def _gen_kwargs(spec: dict) -> dict:
    return dict(height=spec["height"], width=spec["width"], steps=spec["steps"], guidance=spec["guidance"],
                seed=0, max_sequence_length=spec["max_sequence_length"])


def child_stream(spec: dict) -> dict:
    """One stream of ``spec['seconds']`` into an MP4; timings, RSS, optional window scores."""
    from vidrt.longclip import save_stream

    pipe = _load(spec)
    rss_loaded = _rss_mb()
    mp4 = Path(spec["tmp"]) / f"stream_{spec['seconds']:g}s.mp4"
    shots = _shots(spec["seconds"])
    parts_meta: list[dict] = []

    def watch(it):
        for p in it:
            parts_meta.append({"shot": p.shot, "frames": p.frames.shape[0], "frame_start": p.frame_start,
                               "latency_s": p.timings["part_s"] - p.timings["text_s"], **p.timings,
                               "kv_cache_bytes": p.info.get("kv_cache_bytes"), "rtf": p.realtime_factor,
                               "elapsed_s": p.elapsed_s})
            yield p

    summary = save_stream(watch(pipe.stream(shots, **_gen_kwargs(spec))), mp4)
    out: dict[str, Any] = {
        "seconds": summary.seconds, "frames": summary.frames, "chunks": summary.parts, "mode": summary.mode,
        "peak_rss_mb": _rss_mb(), "rss_after_load_mb": rss_loaded, "total_s": summary.total_s,
        "time_to_first_chunk_s": summary.time_to_first_s, "realtime_factor": summary.realtime_factor,
        "chunk_latency_s": [round(m["latency_s"], 5) for m in parts_meta],
        "kv_cache_bytes": parts_meta[-1]["kv_cache_bytes"] if parts_meta else None,
    }
    for key in ("denoise_s", "commit_s", "decode_s"):
        out[f"mean_{key}"] = float(np.mean([m[key] for m in parts_meta]))
    lat = out["chunk_latency_s"]
    if len(lat) >= 20:
        out["first10_mean_s"] = float(np.mean(lat[:10]))
        out["last10_mean_s"] = float(np.mean(lat[-10:]))
        out["last10_vs_first10"] = out["last10_mean_s"] / out["first10_mean_s"]
    if spec["score"]:
        out.update(_score_windows(mp4, shots, parts_meta, pipe.defaults.fps))
    return out


def _score_windows(mp4: Path, shots, parts_meta: list[dict], fps: float) -> dict:
    """World adherence per 5 s window (frames of the shot covering the window's middle) and continuity."""
    import imageio.v3 as iio

    from vidrt.world import score

    frames = iio.imread(mp4)
    bounds, f0 = [], 0
    for k in range(len(shots)):
        n = sum(m["frames"] for m in parts_meta if m["shot"] == k)
        bounds.append((f0, f0 + n))
        f0 += n
    win = int(round(5 * fps))
    windows = []
    for s in range(0, frames.shape[0] - win + 1, win):
        mid = s + win // 2
        k = next(i for i, (a, b) in enumerate(bounds) if a <= mid < b)
        a, b = max(s, bounds[k][0]), min(s + win, bounds[k][1])
        windows.append({"start_s": s / fps, "shot": k, "adherence": score(frames[a:b], shots[k].prompt, fps).adherence})
    res: dict[str, Any] = {"adherence_per_5s": windows}
    if len(shots) > 1:
        whole = score(frames, [s.prompt for s in shots], fps, shot_frames=[b - a for a, b in bounds])
        res["shot_list_score"] = whole.as_dict() if hasattr(whole, "as_dict") else {"adherence": whole.adherence}
    if windows:
        res["adherence_first_window"] = windows[0]["adherence"]
        res["adherence_last_window"] = windows[-1]["adherence"]
    return res


def child_compare(spec: dict) -> dict:
    """The first ``seconds`` with the KV cache vs recomputing the visible past every step, same process."""
    import torch

    from vidrt.metrics import psnr

    pipe = _load(spec)
    shots = _shots(spec["seconds"])
    runs = {}
    for name, kv in (("warmup", True), ("kv_cache", True), ("recompute", False)):
        t0 = time.perf_counter()
        parts = list(pipe.stream(shots, kv_cache=kv, **_gen_kwargs(spec)))
        runs[name] = (time.perf_counter() - t0, parts)
    (tc, pc), (tr, pr) = runs["kv_cache"], runs["recompute"]
    lc = torch.cat([p.latents for p in pc], 2).numpy()
    lr = torch.cat([p.latents for p in pr], 2).numpy()
    fc = np.concatenate([p.frames for p in pc]) / 255.0
    fr = np.concatenate([p.frames for p in pr]) / 255.0
    out = {"seconds": pc[-1].seconds_done, "chunks": len(pc), "kv_cache_s": tc, "recompute_s": tr,
           "speedup_kv_vs_recompute": tr / tc,
           "dit_kv_cache_s": _dit_s(pc), "dit_recompute_s": _dit_s(pr),
           "dit_speedup_kv_vs_recompute": _dit_s(pr) / _dit_s(pc),
           "evicted_chunks": pc[-1].info.get("kv_evicted_chunks"),
           "latents_psnr_db": float(psnr(lc, lr, peak=float(np.abs(lr).max()))),
           "frames_psnr_db": float(psnr(fc, fr, peak=1.0)),
           "kv_chunk_latency_s": [round(p.timings["part_s"] - p.timings["text_s"], 5) for p in pc],
           "recompute_chunk_latency_s": [round(p.timings["part_s"] - p.timings["text_s"], 5) for p in pr]}
    if spec["score"]:
        from vidrt.world import score

        out["adherence_kv_cache"] = score((fc * 255).round().astype(np.uint8), shots[0].prompt).adherence
        out["adherence_recompute"] = score((fr * 255).round().astype(np.uint8), shots[0].prompt).adherence
    return out


def _dit_s(parts) -> float:
    """Seconds in the DiT (denoising steps + KV writes), VAE and text excluded."""
    return float(sum(p.timings["denoise_s"] + p.timings["commit_s"] for p in parts))


CHILDREN = {"stream": child_stream, "compare": child_compare}


def drift_table(model: str, prompts: list[str], seconds: float, noises: list[float], gen: dict,
                commits: Sequence[Optional[str]] = (None,), windows: Sequence[Optional[int]] = (None,)) -> list[dict]:
    """Adherence per 5 s window of single-prompt streams, averaged over ``prompts``, for each context-noise
    level (the sigma at which a finished chunk's keys/values are written), commit context (what that write
    attends to; None: the model's) and KV window (latent frames of past chunks kept besides the sinks; None: the
    stream's default). One seed per prompt, the same for every setting: they differ only in what the past looks
    like to later chunks."""
    from vidrt.pipeline import Pipeline
    from vidrt.world import score

    pipe = Pipeline.from_pretrained(model)
    fps = pipe.defaults.fps
    win = int(round(5 * fps))
    rows = []
    for noise, commit, window in [(n, c, w) for n in noises for c in commits for w in windows]:
        commit = commit or pipe.transformer.config.commit_context
        per = []
        for i, prompt in enumerate(prompts):
            frames = np.concatenate([p.frames for p in pipe.stream(prompt, seconds=seconds, context_noise=noise,
                                                                   commit_context=commit, window_frames=window,
                                                                   **{**gen, "seed": i})])
            if frames.shape[0] < win:
                raise SystemExit(f"--drift scores 5 s windows, but a {seconds:g} s stream gave {frames.shape[0]} frames "
                                 f"(fewer than {win}): pass --seconds 6 or more")
            per.append([score(frames[s:s + win], prompt, fps).adherence
                        for s in range(0, frames.shape[0] - win + 1, win)])
        per_arr = np.asarray(per)
        rows.append({"context_noise": noise, "commit_context": commit, "window_frames": window,
                     "adherence_per_5s": per_arr.mean(0).round(4).tolist(),
                     "per_prompt": per_arr.mean(1).round(4).tolist(),   # for paired comparisons across runs
                     "first_window": float(per_arr[:, 0].mean()), "last_window": float(per_arr[:, -1].mean()),
                     "mean": float(per_arr.mean())})
        print(f"context noise {noise:g}, commit {commit}, window {window or 'default'}: per 5 s "
              f"{rows[-1]['adherence_per_5s']}", flush=True)
    return rows


def _spawn(kind: str, spec: dict) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, __file__, "--child", kind, "--spec", json.dumps(spec), "--child-out", out]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    res = json.loads(Path(out).read_text())
    os.unlink(out)
    res["wall_s"] = time.perf_counter() - t0
    return res


def _random_causal_model(root: Path, chunk: int) -> Path:
    from vidrt.longclip import make_causal_variant
    from vidrt.testing import make_tiny_wan

    base = make_tiny_wan(root / "base", heads=4, head_dim=16, layers=4, ffn_dim=128, text_dim=32, vae_base_dim=8)
    return make_causal_variant(base, root / "causal", num_frame_per_block=chunk)


def _markdown(r: dict) -> str:
    s, l, c = r["short"], r["long"], r["compare"]
    lines = [f"# Long clips: {r['name']}", "",
             f"**{r['weights']}**. Model `{r['model_label']}`, {r['height']}x{r['width']}, {r['steps']} steps, "
             f"guidance {r['guidance']}, chunk {r['chunk_frames']} latent frames, {r['threads']} CPU thread(s), "
             f"{r['host']}. Load average at start: {r['loadavg']}.", "",
             "| measurement | value |", "|---|---|",
             f"| peak RSS, {s['seconds']:.1f} s run | {s['peak_rss_mb']:.0f} MB |",
             f"| peak RSS, {l['seconds']:.1f} s run | {l['peak_rss_mb']:.0f} MB |",
             f"| ratio long / short (target <= 1.2) | **{r['rss_ratio']:.3f}** |",
             f"| KV cache (preallocated, same for both) | {(l['kv_cache_bytes'] or 0) / 1e6:.2f} MB |",
             f"| chunks in the long run | {l['chunks']} |",
             f"| per-chunk latency, first 10 / last 10 (mean) | {l.get('first10_mean_s', float('nan')) * 1000:.1f} ms / "
             f"{l.get('last10_mean_s', float('nan')) * 1000:.1f} ms |",
             f"| last 10 vs first 10 (target within 10%) | **{l.get('last10_vs_first10', float('nan')):.3f}** |",
             f"| mean per chunk: denoise / KV write / VAE decode | {l['mean_denoise_s'] * 1000:.1f} / "
             f"{l['mean_commit_s'] * 1000:.1f} / {l['mean_decode_s'] * 1000:.1f} ms |",
             f"| time to first chunk (long run) | {l['time_to_first_chunk_s']:.3f} s |",
             f"| total time (long run, excl. model load) | {l['total_s']:.2f} s |",
             f"| real-time factor (video s / wall s) | {l['realtime_factor']:.3f}x |",
             f"| KV cache vs recompute the past, first {c['seconds']:.1f} s | **{c['speedup_kv_vs_recompute']:.2f}x** "
             f"faster ({c['kv_cache_s']:.2f} s vs {c['recompute_s']:.2f} s) |",
             f"| same, DiT time only (steps + KV writes) | **{c['dit_speedup_kv_vs_recompute']:.2f}x** "
             f"({c['dit_kv_cache_s']:.2f} s vs {c['dit_recompute_s']:.2f} s) |",
             f"| KV cache vs recompute, PSNR latents / frames | {c['latents_psnr_db']:.1f} dB / "
             f"{c['frames_psnr_db']:.1f} dB ({c['evicted_chunks']} chunks rolled out of the window) |"]
    if "adherence_per_5s" in l:
        ws = l["adherence_per_5s"]
        lines += ["", "Adherence per 5 s window: " + ", ".join(f"{w['adherence']:.2f}" for w in ws),
                  f"first {ws[0]['adherence']:.2f} -> last {ws[-1]['adherence']:.2f}"]
        if "shot_list_score" in l:
            sl = l["shot_list_score"]
            crit = ", ".join(f"{k} {sl[k]:.2f}" for k in ("adherence", "presence", "shape", "motion", "temporal",
                                                            "continuity", "identity", "clean") if sl.get(k) is not None)
            lines.append(f"Shot list (whole clip): {crit}")
            for k, shot in enumerate(sl.get("shots", [])):
                objs = "; ".join(f"{o['name']} present {o['presence']:.2f}, its shape {o['shape']:.2f}"
                                 for o in shot["objects"])
                lines.append(f"- shot {k + 1}: adherence {shot['adherence']:.2f} ({objs})")
        if "adherence_kv_cache" in c:
            lines.append(f"First {c['seconds']:.0f} s adherence: KV cache {c['adherence_kv_cache']:.2f}, "
                         f"recompute {c['adherence_recompute']:.2f}")
    else:
        lines += ["", "Adherence: not measured (random weights produce noise; run on the embedded causal model)."]
    lines += ["", "Per-chunk latency is denoise + KV write + VAE decode of the chunk (text encoding excluded). "
              "Peak RSS is ru_maxrss of a separate child process per run (model load included).", ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="causal checkpoint folder (default: the embedded causal model)")
    ap.add_argument("--random", action="store_true", help="build a tiny random causal model (weights: random)")
    ap.add_argument("--chunk-frames", type=int, default=3, help="--random: latent frames per chunk")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--short-seconds", type=float, default=5.0)
    ap.add_argument("--compare-seconds", type=float, default=10.0)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's; --random: 4)")
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's (vidrt.json)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--score", action="store_true", help="score world adherence even if not the embedded model")
    ap.add_argument("--name", default=None)
    ap.add_argument("--drift", type=int, default=0, metavar="N",
                    help="only the drift table: N held-out prompts streamed for --seconds at each --context-noise")
    ap.add_argument("--context-noise", default="0,0.1,0.2", help="--drift: comma list of context-noise sigmas")
    ap.add_argument("--commit-context", default=None,
                    help="--drift: comma list of commit contexts (window, sinks; default: the model's)")
    ap.add_argument("--window-frames", default=None,
                    help="--drift: comma list of KV windows in latent frames, whole chunks (default: the stream's)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING)
        res = CHILDREN[args.child](json.loads(args.spec))
        Path(args.child_out).write_text(json.dumps(res))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="bench_longclip_"))
    embedded = False
    if args.random:
        model, label, weights = _random_causal_model(tmp, args.chunk_frames), "tiny random causal Wan", \
            "RANDOM WEIGHTS (tiny, untrained): speed and memory only; quality numbers would be meaningless"
    elif args.model:
        model, label, weights = args.model, args.model, "checkpoint weights"
    else:
        from vidrt.pipeline import EMBEDDED_CAUSAL_MODEL, embedded_causal_transformer, embedded_model_path

        model = EMBEDDED_CAUSAL_MODEL
        if embedded_causal_transformer() is None:
            print(f"no embedded causal model at {embedded_model_path(causal=True)}; pass --model PATH or --random",
                  file=sys.stderr)
            return 2
        label, weights, embedded = "embedded causal model", "embedded causal model (trained)", True
    from vidrt.pipeline import Pipeline

    probe = Pipeline.from_pretrained(model)
    cfg = probe.transformer.config
    if args.steps is None:
        args.steps = 4 if args.random else probe.defaults.steps
    if args.guidance is None:
        args.guidance = probe.defaults.guidance
    del probe
    if cfg.num_frame_per_block < 1:
        print(f"{model} is not causal (num_frame_per_block=0); this benchmark measures the KV-cached path",
              file=sys.stderr)
        return 2
    if args.drift:
        import torch

        from vidrt.world.grammar import held_out_prompts

        torch.set_num_threads(args.threads)
        pool = held_out_prompts()
        prompts = [pool[i] for i in np.linspace(0, len(pool) - 1, args.drift).round().astype(int)]
        gen = dict(height=args.height, width=args.width, steps=args.steps, guidance=args.guidance,
                   max_sequence_length=32)
        commits = args.commit_context.split(",") if args.commit_context else [None]
        windows = [int(v) for v in args.window_frames.split(",")] if args.window_frames else [None]
        rows = drift_table(str(model), prompts, args.seconds, [float(v) for v in args.context_noise.split(",")], gen,
                           commits, windows)
        name = args.name or "longclip_drift"
        res = {"name": name, "model_label": label, "weights": weights, "seconds": args.seconds, "prompts": prompts,
               "steps": args.steps, "guidance": args.guidance, "threads": args.threads, "rows": rows,
               "loadavg": [round(x, 2) for x in os.getloadavg()]}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2))
        lines = [f"# Adherence over time vs context noise ({label})", "",
                 f"{len(prompts)} held-out prompts, one {args.seconds:g} s stream each (seed = prompt index), "
                 f"{args.height}x{args.width}, {args.steps} steps, guidance {args.guidance}; adherence of each 5 s "
                 "window averaged over the prompts. Context noise = the sigma at which a finished chunk's keys/values "
                 "are written (`pipe.stream(..., context_noise=)`); commit context = what that write attends to "
                 "(`commit_context=`: window = sinks + rolling window, sinks = sinks + the chunk itself); KV window = "
                 "latent frames of past chunks kept besides the sinks (`window_frames=`; default: the stream's).", "",
                 "| context noise | commit context | KV window (latent frames) | first 5 s | last 5 s | mean | per 5 s window |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['context_noise']:g} | {r['commit_context']} | {r['window_frames'] or 'default'} | "
                  f"{r['first_window']:.3f} | {r['last_window']:.3f} | {r['mean']:.3f} | "
                  f"{', '.join(f'{v:.2f}' for v in r['adherence_per_5s'])} |" for r in rows]
        (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    spec = dict(model=str(model), height=args.height, width=args.width, steps=args.steps, guidance=args.guidance,
                threads=args.threads, max_sequence_length=32, score=bool(args.score or embedded), tmp=str(tmp))
    name = args.name or ("longclip_tiny_random" if args.random else "longclip")
    result: dict[str, Any] = {
        "name": name, "weights": weights, "model_label": label, "height": args.height, "width": args.width,
        "steps": args.steps, "guidance": args.guidance, "threads": args.threads,
        "chunk_frames": cfg.num_frame_per_block, "host": f"{platform.machine()} {os.cpu_count()} cores",
        "loadavg": [round(x, 2) for x in os.getloadavg()], "shots": SHOTS,
    }
    print(f"[bench_longclip] short run ({args.short_seconds:g} s)", flush=True)
    result["short"] = _spawn("stream", {**spec, "seconds": args.short_seconds})
    print(f"[bench_longclip] long run ({args.seconds:g} s)", flush=True)
    result["long"] = _spawn("stream", {**spec, "seconds": args.seconds})
    print(f"[bench_longclip] KV cache vs recompute ({args.compare_seconds:g} s)", flush=True)
    result["compare"] = _spawn("compare", {**spec, "seconds": args.compare_seconds})
    result["rss_ratio"] = result["long"]["peak_rss_mb"] / result["short"]["peak_rss_mb"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    md = _markdown(result)
    (RESULTS / f"{name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
