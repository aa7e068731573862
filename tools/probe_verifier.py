#!/usr/bin/env python
"""How well a best-of-N verifier picks among a model's own samples, on *training* prompts (the dev set: choose
verifier settings here, never on the held-out prompts that `benchmarks/eval_default_model.py --candidates N`
reports).

For each prompt, N samples with the exact path (candidate 0 = seed 50 000 + prompt index, candidate c = that + c,
as ``candidates=N`` draws them), each scored by the world scorer (`vidrt.world.score`, the evaluation) and by the
verifier. Prints the scorer's mean adherence of candidate 0 (the plain path), of the verifier's pick and of the
best candidate (the oracle: what a perfect verifier would reach), and the within-prompt correlation of the two
scores. Several ``--verifier`` folders and ``--presence-weight`` values are compared on the same samples;
``--samples FILE`` keeps the samples for later runs.

    python tools/probe_verifier.py --frames 1 --prompts 72 --candidates 4
    python tools/probe_verifier.py --frames 33 --prompts 32 --samples dev33.npy --verifier A --verifier B
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

import vidrt
from vidrt.video import to_frames
from vidrt.world.grammar import parse, train_prompts
from vidrt.world.score import score
from vidrt.world.verifier import load_verifier, prompt_log_likelihood


def generate(pipe, prompts: list[str], frames: int, height: int, width: int, candidates: int,
             steps: Optional[int] = None) -> np.ndarray:
    """(prompts, candidates, T, H, W, 3) uint8: each prompt's candidates, drawn as ``candidates=N`` draws them."""
    out = []
    for i, prompt in enumerate(tqdm(prompts, desc=f"{frames}x{height}x{width}", unit="prompt")):
        noise = torch.cat([torch.randn(pipe.latent_shape(1, frames, height, width),
                                       generator=torch.Generator().manual_seed(50_000 + i + c))
                           for c in range(candidates)])
        z = pipe([prompt] * candidates, num_frames=frames, height=height, width=width, latents=noise,
                 steps=steps, output="latent", progress=False)
        out.append(np.stack([to_frames(v) for v in pipe.decode(z)]))
    return np.stack(out)


def probe(samples: np.ndarray, prompts: list[str], verifiers: dict[str, torch.nn.Module], weights: list[float],
          fps: float) -> dict:
    """Per prompt and candidate: scorer adherence and each verifier's score at each presence weight."""
    rows = []
    for i, (prompt, clips) in enumerate(zip(prompts, samples)):
        videos = torch.from_numpy(clips).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
        scene = parse(prompt)
        scores = {}
        for name, verifier in verifiers.items():
            with torch.no_grad():
                logits = verifier(verifier.prepare(videos)).float()
            for w in weights:
                scores[f"{name}@{w}"] = [prompt_log_likelihood(lo, scene, w).item() for lo in logits]
        for c, frames in enumerate(clips):
            rows.append({"index": i, "prompt": prompt, "candidate": c,
                         "adherence": score(frames, prompt, fps=fps).adherence,
                         "verifier": {k: v[c] for k, v in scores.items()}})
    keys = [f"{name}@{w}" for name in verifiers for w in weights]
    return {"rows": rows, "summary": {k: summarize(rows, k) for k in keys}}


def summarize(rows: list[dict], weight: str) -> dict:
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(r["index"], []).append(r)
    plain = [g[0]["adherence"] for g in by.values()]
    picked = [max(g, key=lambda r: r["verifier"][weight])["adherence"] for g in by.values()]
    oracle = [max(r["adherence"] for r in g) for g in by.values()]
    corr = [np.corrcoef([r["verifier"][weight] for r in g], [r["adherence"] for r in g])[0, 1]
            for g in by.values() if np.std([r["adherence"] for r in g]) > 0]
    diff = np.array(picked) - np.array(plain)
    return {"prompts": len(by), "plain": float(np.mean(plain)), "picked": float(np.mean(picked)),
            "oracle": float(np.mean(oracle)), "picked_minus_plain": float(diff.mean()),
            "stderr": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
            "within_prompt_correlation": float(np.nanmean(corr)) if corr else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    ap.add_argument("--verifier", type=Path, action="append", default=None,
                    help="verifier folder; repeat to compare several on the same samples (default: the model's)")
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=72, help="training prompts (train_prompts(n, seed=123))")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    ap.add_argument("--presence-weight", default=None, help="comma list (default: each verifier's own)")
    ap.add_argument("--samples", type=Path, default=None,
                    help="cache of the generated samples (.npy): read when it exists, written when not")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write every row and the summary as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = vidrt.Pipeline.from_pretrained(args.model)
    if args.verifier:
        verifiers = {str(v): load_verifier(v) for v in args.verifier}
    elif pipe.verifier is not None:
        verifiers = {"shipped": pipe.verifier}
    else:
        raise SystemExit("the model has no verifier/ folder: pass --verifier FOLDER")
    weights = ([float(w) for w in args.presence_weight.split(",")] if args.presence_weight
               else sorted({v.config.presence_weight for v in verifiers.values()}))
    prompts = train_prompts(args.prompts, seed=123)
    shape = (len(prompts), args.candidates, args.frames, args.height, args.width, 3)
    made_by = {"model": str(args.model), "steps": args.steps, "shape": list(shape)}   # what the cache holds
    sidecar = args.samples.with_name(args.samples.name + ".json") if args.samples else None
    if args.samples and args.samples.is_file():
        samples = np.load(args.samples)
        kept = json.loads(sidecar.read_text()) if sidecar.is_file() else None
        if samples.shape != shape or kept != made_by:
            raise SystemExit(f"{args.samples} holds samples made by {kept}, these settings need {made_by}: "
                             "pass another --samples file")
    else:
        samples = generate(pipe, prompts, args.frames, args.height, args.width, args.candidates, args.steps)
        if args.samples:
            np.save(args.samples, samples)
            sidecar.write_text(json.dumps(made_by))
    result = probe(samples, prompts, verifiers, weights, pipe.defaults.fps)
    for k, s in result["summary"].items():
        corr, err = s["within_prompt_correlation"], s["stderr"]
        print(f"{k}: plain {s['plain']:.3f}, picked {s['picked']:.3f} "
              f"({s['picked_minus_plain']:+.3f} +- {err if err is None else round(err, 3)}), oracle {s['oracle']:.3f}, "
              f"within-prompt correlation {corr if corr is None else round(corr, 2)} ({s['prompts']} prompts)")
    if args.out:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        settings["verifier"] = list(verifiers)
        args.out.write_text(json.dumps({"settings": settings, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
