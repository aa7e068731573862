#!/usr/bin/env python
"""How well a best-of-N verifier picks among a model's own samples, on *training* prompts (the dev set: choose
verifier settings here, never on the held-out prompts that `benchmarks/eval_default_model.py --candidates N`
reports).

For each prompt, N samples with the exact path (candidate 0 = seed 50 000 + prompt index, candidate c = that + c,
as ``candidates=N`` draws them), each scored by the world scorer (`vidrt.world.score`, the evaluation) and by the
verifier. Prints the scorer's mean adherence of candidate 0 (the plain path), of the verifier's pick and of the
best candidate (the oracle: what a perfect verifier would reach), and the within-prompt correlation of the two
scores. ``--presence-weight`` rescoring needs no new samples: ``--keep FILE`` stores the per-patch logits.

    python tools/probe_verifier.py --frames 1 --prompts 72 --candidates 4
    python tools/probe_verifier.py --frames 33 --prompts 32 --candidates 4 --presence-weight 0,1,3
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import vidrt
from vidrt.video import to_frames
from vidrt.world.grammar import parse, train_prompts
from vidrt.world.score import score
from vidrt.world.verifier import load_verifier, prompt_log_likelihood


def probe(pipe, verifier, prompts: list[str], frames: int, height: int, width: int, candidates: int,
          weights: list[float]) -> dict:
    """Per prompt and candidate: scorer adherence and the verifier's score at each presence weight."""
    rows = []
    for i, prompt in enumerate(tqdm(prompts, desc=f"{frames}x{height}x{width}", unit="prompt")):
        noise = torch.cat([torch.randn(pipe.latent_shape(1, frames, height, width),
                                       generator=torch.Generator().manual_seed(50_000 + i + c))
                           for c in range(candidates)])
        z = pipe([prompt] * candidates, num_frames=frames, height=height, width=width, latents=noise,
                 output="latent", progress=False)
        videos = pipe.decode(z)
        with torch.no_grad():
            logits = verifier(verifier.prepare(videos)).float()
        scene = parse(prompt)
        for c, (video, lo) in enumerate(zip(videos, logits)):
            rows.append({"index": i, "prompt": prompt, "candidate": c,
                         "adherence": score(to_frames(video), prompt, fps=pipe.defaults.fps).adherence,
                         "verifier": {str(w): prompt_log_likelihood(lo, scene, w).item() for w in weights}})
    return {"rows": rows, "summary": {str(w): summarize(rows, str(w)) for w in weights}}


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
    ap.add_argument("--verifier", type=Path, default=None, help="verifier folder (default: the model's verifier/)")
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=72, help="training prompts (train_prompts(n, seed=123))")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--presence-weight", default=None, help="comma list (default: the verifier's own)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write every row and the summary as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = vidrt.Pipeline.from_pretrained(args.model)
    verifier = load_verifier(args.verifier) if args.verifier else pipe.verifier
    if verifier is None:
        raise SystemExit("the model has no verifier/ folder: pass --verifier FOLDER")
    weights = ([float(w) for w in args.presence_weight.split(",")] if args.presence_weight
               else [verifier.config.presence_weight])
    result = probe(pipe, verifier, train_prompts(args.prompts, seed=123), args.frames, args.height, args.width,
                   args.candidates, weights)
    for w, s in result["summary"].items():
        corr, err = s["within_prompt_correlation"], s["stderr"]
        print(f"presence weight {w}: plain {s['plain']:.3f}, picked {s['picked']:.3f} "
              f"({s['picked_minus_plain']:+.3f} +- {err if err is None else round(err, 3)}), oracle {s['oracle']:.3f}, "
              f"within-prompt correlation {corr if corr is None else round(corr, 2)} ({s['prompts']} prompts)")
    if args.out:
        args.out.write_text(json.dumps({"settings": vars(args) | {"verifier": str(args.verifier),
                                                                   "out": str(args.out)}, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
