#!/usr/bin/env python
"""Where do a prompt's words look? The DiT's cross-attention maps of each object's colour and shape word, against
where that object ends up in the finished sample (multi-object training prompts, images by default).

Attention-map guidance for attribute binding (Attend-and-Excite, Chefer et al. 2023; SynGen, Rassin et al. 2023)
steers the latents so that a noun's and its modifier's maps overlap on one object. That needs maps that localise.
Prompts have two or three objects of distinct colours (the object is found by its colour). Per object, per
recorded step and per (block, head): the share of the word's attention mass (over video tokens,
conditional branch) on the latent cells the finished object covers, divided by the cells' share of the frame --
1 is no localisation, (cells / covered cells) is perfect. The attention probabilities are recomputed from the
block's own query and key projections in a forward hook; sampling is the exact path (``on_step`` labels the steps).

    python tools/probe_cross_attention.py --prompts 24 --out cross_attention.json
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
from vidrt.world.grammar import COLORS, parse, train_prompts

STEPS = (2, 5, 10, 15)


def object_cells(frame: np.ndarray, color: str, cell: int) -> np.ndarray:
    """(H/cell * W/cell,) share of each latent cell covered by pixels near the palette colour ``color``."""
    rgb = np.array(COLORS[color], dtype=np.float32)
    near = np.abs(frame.astype(np.float32) - rgb).max(axis=-1) < 48
    h, w = near.shape
    return near.reshape(h // cell, cell, w // cell, cell).mean(axis=(1, 3)).reshape(-1)


def word_positions(prompt: str) -> list[tuple[int, int]]:
    """Token positions of each object's colour and shape word (the embedded tokenizer is word level)."""
    words, pos, start = prompt.lower().split(), [], 0
    for o in parse(prompt).objects:
        c = words.index(o.color, start)
        s = words.index(o.shape, c)
        pos.append((c, s))
        start = s + 1
    return pos


def distinct_colours(prompt: str) -> bool:
    """Two or more objects, each of its own colour (an object's cells are found by colour)."""
    colours = [o.color for o in parse(prompt).objects]
    return len(colours) >= 2 and len(set(colours)) == len(colours)


def probe(pipe, prompts: list[str], steps=STEPS, seed: int = 5) -> dict:
    """Localisation ratios per (step, word kind, block, head): a list over objects."""
    dit = pipe.transformer
    captured: list[torch.Tensor] = []
    by_step: dict[int, list[torch.Tensor]] = {}

    def hook(mod, args, kwargs, out):
        k, _ = kwargs["kv"]
        q = mod.norm_q(mod.to_q(args[0])).unflatten(2, (mod.heads, -1))
        captured.append(torch.einsum("blhd,bthd->bhlt", q.float(), k.float()).div(q.shape[-1] ** 0.5).softmax(-1)[0])

    def on_step(state) -> None:
        if len(captured) != len(dit.blocks):   # one batched (conditional + unconditional) call per step
            raise RuntimeError(f"{len(captured)} cross-attention calls in step {state.step} for {len(dit.blocks)} "
                               "blocks: the probe needs batched classifier-free guidance (pipe.batch_cfg) and no "
                               "step cache")
        if state.step in steps:
            by_step[state.step] = list(captured)
        captured.clear()

    hooks = [b.attn2.register_forward_hook(hook, with_kwargs=True) for b in dit.blocks]
    ratios: dict[str, list[float]] = {}
    try:
        for i, prompt in enumerate(tqdm(prompts, desc="prompts", unit="prompt")):
            by_step.clear()
            video = pipe(prompt, num_frames=1, seed=seed + i, on_step=on_step, progress=False)
            frame = video.frames[0]
            cell = pipe.vae_scale_spatial * dit.config.patch_size[1]
            for obj, (c, s) in zip(parse(prompt).objects, word_positions(prompt)):
                cover = object_cells(frame, obj.color, cell)
                if cover.sum() == 0:
                    continue
                ratios.setdefault("perfect", []).append(float(len(cover) / cover.sum()))   # all mass on the object
                for step, maps in by_step.items():
                    for block, m in enumerate(maps):     # (heads, video tokens, text tokens), conditional row
                        for head in range(m.shape[0]):
                            for kind, t in (("colour", c), ("shape", s)):
                                a = m[head, :, t].numpy()
                                a = a / a.sum()
                                ratio = float((a * cover).sum() / cover.sum() * len(cover))
                                ratios.setdefault(f"{step}/{kind}/{block}/{head}", []).append(ratio)
    finally:
        for h in hooks:
            h.remove()
    return ratios


def summarize(ratios: dict[str, list[float]]) -> dict:
    """Per (step, kind): the median ratio of the mean map over blocks and heads, and the best (block, head)."""
    out: dict[str, dict] = {"perfect": {"median": float(np.median(ratios.get("perfect", [np.nan])))}}
    for key, vals in ratios.items():
        if key == "perfect":
            continue
        step, kind, block, head = key.split("/")
        e = out.setdefault(f"{step}/{kind}", {"heads": {}})
        e["heads"][f"{block}/{head}"] = float(np.median(vals))
    for key, e in out.items():
        if key == "perfect":
            continue
        best = max(e["heads"], key=e["heads"].get)
        e.update(median_over_heads=float(np.median(list(e["heads"].values()))), best_head=best,
                 best_head_ratio=e["heads"][best])
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    ap.add_argument("--prompts", type=int, default=24,
                    help="training prompts with 2-3 objects of distinct colours (from train_prompts(400, seed=31))")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = vidrt.Pipeline.from_pretrained(args.model)
    prompts = [p for p in train_prompts(400, seed=31) if distinct_colours(p)][:args.prompts]
    s = summarize(probe(pipe, prompts))
    print(f"perfect localisation (all of a word's mass on its object's cells): {s['perfect']['median']:.1f}")
    for key, e in sorted(((k, v) for k, v in s.items() if k != "perfect"),
                         key=lambda kv: (int(kv[0].split("/")[0]), kv[0])):
        print(f"step {key}: median over blocks x heads {e['median_over_heads']:.2f}, best head "
              f"{e['best_head']} {e['best_head_ratio']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "summary": s}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
