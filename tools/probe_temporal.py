#!/usr/bin/env python
"""Where do clips lose temporal consistency? The temporal criterion's events (`vidrt.world.score.transition_faults`:
objects appearing / vanishing, centroid jumps, area jumps) counted per frame transition, for the model's samples of
held-out prompts (the eval's noise) beside the same prompts' renders through the model's VAE (any DiT's ceiling);
split by whether a transition crosses a latent frame boundary and by the first latent group against the rest.

    python tools/probe_temporal.py --prompts 36 --out temporal.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

import vidrt
from vidrt.testing import load_script
from vidrt.world.grammar import held_out_prompts
from vidrt.world.render import render
from vidrt.world.score import score, transition_faults

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("toggle", "position_jump", "size_jump")


def rates(faults: list[list[Optional[dict]]], temporal_factor: int = 4) -> dict:
    """Share of (object, transition) pairs with each fault (objects never found are left out and counted); size jumps across / within latent frames (transition
    t -> t+1 crosses one when t is a multiple of ``temporal_factor``: frame 0 is its own latent frame); any fault in
    the first latent group's transitions (frames 0 .. temporal_factor) against the rest."""
    per_obj = [f for clip in faults for f in clip if f is not None]
    if not per_obj:
        return {}
    missing = sum(f is None for clip in faults for f in clip)   # never found: no transitions to count
    stack = {k: np.stack([f[k] for f in per_obj]).astype(float) for k in KINDS}   # (objects, T-1)
    n = stack["toggle"].shape[1]
    across = np.arange(n) % temporal_factor == 0
    first = np.arange(n) < temporal_factor
    bad = np.clip(sum(stack.values()), 0, 1)
    out = {k: float(v.mean()) for k, v in stack.items()}
    out.update(size_jump_across_latent_frames=float(stack["size_jump"][:, across].mean()),
               size_jump_within_latent_frames=float(stack["size_jump"][:, ~across].mean()),
               any_fault_first_group=float(bad[:, first].mean()), any_fault_after=float(bad[:, ~first].mean()),
               objects=len(per_obj), objects_never_found=missing)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=36, help="held-out prompts, evenly spaced over the 72")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    evaluation = load_script(ROOT / "benchmarks/eval_default_model.py")
    pipe = vidrt.Pipeline.from_pretrained(a.model)
    fps = pipe.defaults.fps
    prompts = held_out_prompts()
    faults: dict[str, list] = {"generated": [], "truth_through_vae": []}
    temporal: dict[str, list] = {"generated": [], "truth_through_vae": []}
    for i in tqdm(np.linspace(0, len(prompts) - 1, a.prompts).round().astype(int), desc="prompts", unit="prompt"):
        i, prompt = int(i), prompts[int(i)]
        video = pipe(prompt, num_frames=a.frames, height=a.height, width=a.width, progress=False,
                     latents=evaluation.initial_latents(pipe, i, a.frames, a.height, a.width))
        truth = evaluation.vae_roundtrip(pipe.vae, render(prompt, a.height, a.width, a.frames, fps, seed=i))
        for name, frames in (("generated", video.frames), ("truth_through_vae", truth)):
            faults[name].append(transition_faults(frames, prompt, fps))
            temporal[name].append(score(frames, prompt, fps=fps).temporal)
    result = {name: {"temporal": float(np.mean(temporal[name])), **rates(f, pipe.vae_scale_temporal)}
              for name, f in faults.items()}
    for name, r in result.items():
        print(f"{name}: temporal {r['temporal']:.3f}; toggles {r['toggle']:.3f}, position jumps "
              f"{r['position_jump']:.3f}, size jumps {r['size_jump']:.3f} (across latent frames "
              f"{r['size_jump_across_latent_frames']:.3f}, within {r['size_jump_within_latent_frames']:.3f}); "
              f"any fault, first latent group {r['any_fault_first_group']:.3f}, after it {r['any_fault_after']:.3f}; "
              f"{r['objects']} objects, {r['objects_never_found']} never found")
    if a.out:
        a.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(a).items()}, **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
