#!/usr/bin/env python
"""Can best-of-N prune early? Whether the verifier's score of a candidate's *early* clean estimate predicts how the
finished clip scores, on training prompts (the dev set; never the held-out ones).

Search over sampling paths (prune many noises after a few steps, finish the survivors) beats best-of-N at equal DiT
work only when an early estimate ranks candidates. For each prompt, N candidates run the exact path with an
``on_step`` callback keeping the clean estimate x0 at ``--record`` steps; each estimate and the finished clip are
decoded and scored by the model's verifier, the finished clip also by the world scorer (the evaluation). Reported:
the within-prompt correlation of each step's verifier score with the final adherence, and the adherence of "keep the
m best at step k, pick the final best of those" beside plain best-of-n, with each plan's DiT work in step-batches.

    python tools/probe_search.py --frames 1 --prompts 72 --candidates 8 --out search_images.json
    python tools/probe_search.py --frames 33 --prompts 32 --candidates 8 --threads 2
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import vidrt
from vidrt.video import to_frames
from vidrt.world.grammar import train_prompts
from vidrt.world.score import score

RECORD = (1, 2, 3, 4, 6, 8, 11)


def run_prompt(pipe, prompt: str, noise: torch.Tensor, record: Sequence[int], frames: int, height: int,
               width: int) -> dict:
    """Candidates (rows of ``noise``) of one prompt: verifier score of the clean estimate at each recorded step
    and of the finished clip, and the scorer's adherence of the finished clip."""
    kept: dict[int, torch.Tensor] = {}

    def keep(state) -> None:
        if state.step in record:
            kept[state.step] = state.x0.clone()

    n = noise.shape[0]
    z = pipe([prompt] * n, num_frames=frames, height=height, width=width, latents=noise, output="latent",
             progress=False, on_step=keep)
    def verify(lat: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        videos = pipe.decode(lat)
        return videos, pipe.verifier.score(videos, [prompt] * n).float().tolist()

    finished, final_scores = verify(z)
    return {"prompt": prompt,
            "verifier": {**{str(step): verify(lat)[1] for step, lat in sorted(kept.items())},
                         str(pipe.defaults.steps): final_scores},
            "adherence": [score(to_frames(v), prompt, fps=pipe.defaults.fps).adherence for v in finished]}


def summarize(rows: list[dict], steps: int, keeps: Sequence[int] = (1, 2, 4)) -> dict:
    """Per recorded step: the verifier's within-prompt correlation with the final adherence, and the adherence
    of pruning to the best ``m`` there (the final pick among the survivors by the finished clips' verifier
    score). Baselines are expectations over the candidates, not one draw: "plain" is the mean candidate,
    "best of m" the mean over every m-subset picked by the final verifier score (what pruning at random would
    give), beside the oracle. Differences are against the plain expectation, with their standard error over
    prompts. Work counts DiT step-batches of one candidate (N candidates for k + 1 steps, then m for the rest)."""
    adh = np.array([r["adherence"] for r in rows])
    final = np.array([r["verifier"][str(steps)] for r in rows])
    n_prompts, n = adh.shape
    plain = adh.mean(1)

    def pick(survivors: list[np.ndarray]) -> np.ndarray:
        return np.array([adh[p, s[np.argmax(final[p, s])]] for p, s in enumerate(survivors)])

    def stat(v: np.ndarray) -> dict:
        d = v - plain
        return {"adherence": float(v.mean()), "minus_plain": float(d.mean()),
                "stderr": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None}

    def corr(a: np.ndarray) -> Optional[float]:
        c = [np.corrcoef(a[p], adh[p])[0, 1] for p in range(n_prompts) if adh[p].std() > 0 and a[p].std() > 0]
        return float(np.mean(c)) if c else None

    out = {"prompts": n_prompts, "candidates": n, "plain": float(plain.mean()),
           "candidate_0": float(adh[:, 0].mean()), "oracle": float(adh.max(1).mean()),
           "final_correlation": corr(final), "best_of": {}, "prune": {}}
    for m in sorted({1, 2, 4, n} & set(range(1, n + 1))):
        subsets = [np.array(c) for c in itertools.combinations(range(n), m)]
        v = np.mean([pick([c] * n_prompts) for c in subsets], axis=0)
        out["best_of"][str(m)] = {**stat(v), "work": steps * m}
    for key in sorted((k for k in rows[0]["verifier"] if int(k) != steps), key=int):
        k = int(key)
        early = np.array([r["verifier"][key] for r in rows])
        entry = {"correlation": corr(early), "keep": {}}
        for m in keeps:
            if m < n:
                surv = [np.argsort(-early[p], kind="stable")[:m] for p in range(n_prompts)]
                entry["keep"][str(m)] = {**stat(pick(surv)), "work": n * (k + 1) + m * (steps - k - 1)}
        out["prune"][key] = entry
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=72, help="training prompts (train_prompts(n, seed=30))")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--record", default=",".join(map(str, RECORD)), help="steps whose clean estimate is scored")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write every row and the summary as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = vidrt.Pipeline.from_pretrained(args.model)
    if pipe.verifier is None:
        raise SystemExit("the model has no verifier/ folder: nothing to rank candidates with")
    steps = pipe.defaults.steps
    record = sorted({int(s) for s in args.record.split(",")})
    if not record or record[0] < 0 or record[-1] >= steps - 1:
        raise SystemExit(f"--record {args.record}: give steps in 0..{steps - 2} (the last step is the finished clip)")
    rows = []
    shape = pipe.latent_shape(1, args.frames, args.height, args.width)
    for i, prompt in enumerate(tqdm(train_prompts(args.prompts, seed=30), desc="prompts", unit="prompt")):
        noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(70_000 + 100 * i + c))
                           for c in range(args.candidates)])
        rows.append(run_prompt(pipe, prompt, noise, record, args.frames, args.height, args.width))
    s = summarize(rows, steps)
    print(f"{s['prompts']} prompts x {s['candidates']} candidates: mean candidate {s['plain']:.3f}, "
          f"oracle {s['oracle']:.3f}, final verifier correlation {s['final_correlation']:.2f}")
    for m, b in s["best_of"].items():
        print(f"  best of {m} (work {b['work']}): {b['adherence']:.3f} ({b['minus_plain']:+.3f})")
    for k, e in s["prune"].items():
        keeps = ", ".join(f"keep {m}: {v['adherence']:.3f} (work {v['work']})" for m, v in e["keep"].items())
        print(f"  step {k}: correlation {e['correlation']:.2f}; {keeps}")
    if args.out:
        args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "rows": rows,
                                        "summary": s}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
