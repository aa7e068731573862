"""Does a world model's DiT bind? Its implicit classifier on held-out ground-truth renders.

A conditional diffusion model is also a classifier (Li et al. 2023, "Your diffusion model is secretly a zero-shot
classifier"): the prompt under which its denoising error on a clip is lower is the one it finds likelier. This
encodes the ground-truth render of each held-out prompt and compares the DiT's error under the prompt with its error
under one contrast prompt, with the same noise draws (stratified noise levels, ``--levels``), per task:

- ``prompt``: another held-out prompt (does it recognise its scene at all; chance 0.5);
- ``shape``: one-object prompts with the shape changed (does it know shapes);
- ``shape binding``: prompts with two or three shapes, the shapes rotated among the objects (colours, motions and
  the background kept): does it know which shape goes with which colour;
- ``motion binding`` (clips only): the motions rotated among the objects.

Accuracy is the share of renders whose own prompt wins; chance is 0.5 on every task. The full eval
(benchmarks/eval_default_model.py) takes ~20 minutes and mixes every criterion; this takes a minute or two and
isolates what the DiT has learnt about binding, apart from how well it samples (session 25: the shipped DiT tells
shapes apart on one object but is no better than chance on shape binding, docs/default_model.md).

    python tools/probe_dit_binding.py --model default [--sizes 1x64x64,17x64x64] [--seeds 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np
import torch

import vidrt
from vidrt.video import from_frames
from vidrt.world.grammar import SHAPES, Scene, held_out_prompts, parse
from vidrt.world.render import render

TASKS = ("prompt", "shape", "shape binding", "motion binding")


def _rotated(scene: Scene, attr: str) -> Optional[Scene]:
    """The scene with `attr` ('shape' or 'motion') rotated among its objects by one place, or None when that
    changes nothing (one object, all objects alike in `attr`, or the same objects in another order) or gives an
    invalid scene (two same objects)."""
    values = [getattr(o, attr) for o in scene.objects]
    if len(set(values)) < 2:
        return None
    values = values[1:] + values[:1]
    try:
        other = replace(scene, objects=tuple(replace(o, **{attr: v}) for o, v in zip(scene.objects, values)))
    except vidrt.VidrtError:
        return None
    triples = sorted((o.color, o.shape, o.motion) for o in scene.objects)
    # the same objects in another order ("a red circle ... and a red square ..." rotated) is the same scene
    return None if sorted((o.color, o.shape, o.motion) for o in other.objects) == triples else other


def contrast(task: str, prompt: str, others: Sequence[str], index: int) -> Optional[str]:
    """The contrast prompt of `task` for held-out prompt `prompt` (its position `index` in `others`), or None when
    the task does not apply to it."""
    scene = parse(prompt)
    if task == "prompt":
        other = others[(index + 1) % len(others)] if len(others) > 1 else None
        return other if other is not None and parse(other) != scene else None
    if task == "shape":
        if len(scene.objects) != 1:
            return None
        shapes = sorted(SHAPES)
        o = scene.objects[0]
        return replace(scene, objects=(replace(o, shape=shapes[(shapes.index(o.shape) + 1) % len(shapes)]),)).prompt()
    attr = {"shape binding": "shape", "motion binding": "motion"}[task]
    swapped = _rotated(scene, attr)
    return swapped.prompt() if swapped is not None else None


@torch.no_grad()
def denoising_errors(pipe: "vidrt.Pipeline", latents: torch.Tensor, prompts: Sequence[str], levels: int,
                     seed: int) -> torch.Tensor:
    """Mean squared flow-matching error of the DiT on clean `latents` (1, C, T, H, W; normalised) under each prompt
    at each of `levels` stratified noise levels, one noise draw per level shared by the prompts: (levels, prompts)."""
    if len(pipe.experts) > 1:
        raise SystemExit("the probe reads one DiT at every noise level; this is a two-expert (Wan 2.2) model: probe "
                         "each expert as a one-DiT model (its folder with transformer=)")
    dit = pipe.transformer
    kv = dit.prepare_context(pipe.encode_prompts(list(prompts)))
    gen = torch.Generator("cpu").manual_seed(seed)
    n = len(prompts)
    scale = float(pipe.scheduler_config.get("num_train_timesteps", 1000))   # the DiT's timestep is sigma x this
    x0 = latents.to(pipe.device, torch.float32).expand(n, *latents.shape[1:])
    err = torch.zeros(levels, n)
    for j, s in enumerate(noise_levels(levels)):
        noise = torch.randn(latents.shape, generator=gen).to(pipe.device).expand_as(x0)
        xs = (1 - s) * x0 + s * noise
        v = dit(xs.to(pipe.dtype), torch.full((n,), scale * s, device=pipe.device), context_kv=kv).float()
        err[j] = ((v - (noise - x0)) ** 2).flatten(1).mean(1).cpu()
    return err


def noise_levels(levels: int) -> list[float]:
    """Stratified noise levels s in (0, 1): the midpoints of `levels` equal bins."""
    return ((torch.arange(levels) + 0.5) / levels).tolist()


def probe(pipe: "vidrt.Pipeline", prompts: Sequence[str], frames: int, height: int, width: int, *,
          seeds: int = 1, levels: int = 16) -> dict:
    """Per task: accuracy (share of truth renders whose own prompt has the lower error over the noise levels; a tie
    counts half), its standard error over prompts (a prompt's renders are averaged first: they share its words), the
    number of renders, the mean error margin (contrast - own, in units of the own error), and the accuracy at each
    noise level alone (``by_level``: where in the trajectory the DiT tells the prompts apart)."""
    tasks = [t for t in TASKS if frames > 1 or t != "motion binding"]
    wins: dict[str, dict[int, list[float]]] = {t: {} for t in tasks}    # task -> prompt -> per render
    margins: dict[str, list[float]] = {t: [] for t in tasks}
    level_wins: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for i, prompt in enumerate(prompts):
        alts = {t: contrast(t, prompt, prompts, i) for t in tasks}
        alts = {t: a for t, a in alts.items() if a is not None}
        for k in range(seeds):
            truth = render(prompt, height, width, frames, pipe.defaults.fps, seed=i + 1000 * k)
            z = pipe.vae.normalize(pipe.vae.encode(from_frames(truth)[None].to(pipe.device, pipe.vae.dtype)))
            per_level = denoising_errors(pipe, z, [prompt, *alts.values()], levels, seed=i + 1000 * k)
            err = per_level.mean(0)
            for j, t in enumerate(alts, start=1):
                wins[t].setdefault(i, []).append(_win(err[j], err[0]))
                margins[t].append(float((err[j] - err[0]) / err[0]))
                level_wins[t].append(np.array([_win(a, b) for a, b in zip(per_level[:, j], per_level[:, 0])]))
    out = {}
    for t in tasks:
        w = np.array([v for per_prompt in wins[t].values() for v in per_prompt])
        by_prompt = np.array([np.mean(v) for v in wins[t].values()])
        out[t] = {"accuracy": float(w.mean()) if len(w) else None,
                  "stderr": float(by_prompt.std(ddof=1) / np.sqrt(len(by_prompt))) if len(by_prompt) > 1 else None,
                  "renders": int(len(w)), "prompts": int(len(by_prompt)),
                  "margin": float(np.mean(margins[t])) if len(w) else None,
                  "by_level": [{"s": round(s, 4), "accuracy": float(a)} for s, a in
                               zip(noise_levels(levels), np.mean(level_wins[t], axis=0))] if len(w) else []}
    return out


def _win(contrast_err: torch.Tensor, own_err: torch.Tensor) -> float:
    """1 when the own prompt's error is lower, 0.5 on a tie, else 0."""
    return 1.0 if contrast_err > own_err else 0.5 if contrast_err == own_err else 0.0


def _fmt(v: Optional[float], spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="a model folder or 'default'")
    ap.add_argument("--sizes", default="1x64x64,17x64x64", help="comma list FxHxW")
    ap.add_argument("--prompts", type=int, default=None, help="the first N held-out prompts (default all 72)")
    ap.add_argument("--seeds", type=int, default=2, help="renders per prompt (layouts)")
    ap.add_argument("--levels", type=int, default=16, help="stratified noise levels per render")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the accuracies here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    pipe = vidrt.Pipeline.from_pretrained(None if args.model == "default" else args.model)
    prompts = held_out_prompts()[: args.prompts]
    result = {"model": args.model, "prompts": len(prompts), "seeds": args.seeds, "levels": args.levels, "sizes": {}}
    for size in args.sizes.split(","):
        f, h, w = (int(v) for v in size.split("x"))
        result["sizes"][size] = probe(pipe, prompts, f, h, w, seeds=args.seeds, levels=args.levels)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    for size, tasks in result["sizes"].items():
        for t, r in tasks.items():
            print(f"{size:>9} {t:<15} accuracy {_fmt(r['accuracy'])} +- {_fmt(r['stderr'])} ({r['renders']} renders), "
                  f"margin {_fmt(r['margin'], '+.4f')}; by noise level "
                  + " ".join(_fmt(v["accuracy"], ".2f") for v in r["by_level"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
