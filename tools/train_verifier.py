#!/usr/bin/env python
"""Train the embedded model's best-of-N verifier (`vidrt.world.verifier`) on renders of training prompts.

Every step renders a batch of random *training* prompts (never a held-out triple) at one of the eval's sizes, keeps
the frames the verifier looks at, labels every 8x8 patch with the colour, shape and motion of the object covering it
(from the clean render), then degrades the frames the way generated clips differ from renders (blur, noise, a
colour cast) and trains the per-patch classifier with cross-entropy (motion only on clips). No generated sample,
no held-out prompt and no scorer output is used. Deterministic for a seed; resumes from ``--workdir`` when
interrupted; ~0.6 s a step on one CPU thread.

    python tools/train_verifier.py --steps 3000 --export runtime/assets/default/verifier
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vidrt.world.grammar import parse, sample_train_prompt
from vidrt.world.render import render
from vidrt.world.verifier import (HEAD_SIZES, NONE_COLOR, VerifierConfig, WorldVerifier, cell_labels, load_verifier,
                                  pick_frames, save_verifier)

logger = logging.getLogger("train_verifier")
# (frames, height, width, share of the batches): the eval's sizes, images and 33-frame 64x64 clips most
SIZES = ((1, 64, 64, 0.30), (33, 64, 64, 0.35), (17, 64, 64, 0.10), (33, 96, 64, 0.05), (33, 64, 96, 0.05),
         (17, 64, 128, 0.05), (1, 96, 64, 0.03), (1, 64, 128, 0.03), (33, 128, 128, 0.04))
OBJECT_PROBS = (0.25, 0.35, 0.40)   # 1 / 2 / 3-object scenes: several objects are where generated clips fail


def degrade(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Make renders look generated, per sample: (N, T, 3, H, W) in [-1, 1] -> the same, blurred (70 %), noisy
    (50 %) and colour-cast (50 %)."""
    n = x.shape[0]
    out = x.clone()
    sigma = np.where(rng.random(n) < 0.7, rng.choice([0.5, 0.8, 1.1, 1.5], n), 0.0)
    k = torch.arange(-3, 4).float()
    for s in np.unique(sigma[sigma > 0]):
        sel = torch.from_numpy(np.nonzero(sigma == s)[0])
        g = torch.exp(-k ** 2 / (2 * s * s))
        g = g / g.sum()
        y = out[sel].flatten(0, 1)
        y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="replicate"), g.view(1, 1, 1, 7).repeat(3, 1, 1, 1), groups=3)
        y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), g.view(1, 1, 7, 1).repeat(3, 1, 1, 1), groups=3)
        out[sel] = y.view(len(sel), *x.shape[1:])
    noise = torch.from_numpy(np.where(rng.random(n) < 0.5, rng.uniform(0.015, 0.08, n), 0.0)).float()
    out = out + noise.view(n, 1, 1, 1, 1) * torch.from_numpy(rng.standard_normal(out.shape)).float()
    gain = torch.from_numpy(np.where(rng.random((n, 1)) < 0.5, rng.uniform(0.9, 1.1, (n, 3)), 1.0)).float()
    shift = torch.from_numpy(np.where(rng.random(n) < 0.5, rng.uniform(-0.08, 0.08, n), 0.0)).float()
    return (out * gain.view(n, 1, 3, 1, 1) + shift.view(n, 1, 1, 1, 1)).clamp(-1, 1)


def batch(rng: np.random.Generator, n: int, max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n renders of training prompts at one size: degraded frames (n, T', 3, H, W) and patch labels (n, T', h, w, 3)."""
    shares = np.array([s[3] for s in SIZES])
    frames, height, width, _ = SIZES[int(rng.choice(len(SIZES), p=shares / shares.sum()))]
    idx = pick_frames(frames, max_frames)
    videos, labels = [], []
    for _ in range(n):
        scene = parse(sample_train_prompt(rng, int(rng.choice(3, p=OBJECT_PROBS)) + 1))
        clip = render(scene, height, width, frames, 16, seed=int(rng.integers(1 << 30)))[idx]
        videos.append(torch.from_numpy(clip).float().div(127.5).sub(1).permute(0, 3, 1, 2))
        labels.append(cell_labels(clip, scene))
    return degrade(torch.stack(videos), rng), torch.stack(labels)


def patch_loss(logits: torch.Tensor, labels: torch.Tensor, heads: tuple[int, ...] = (0, 1, 2),
               balanced: bool = False) -> torch.Tensor:
    """Cross-entropy of the given heads (0 colour, 1 shape, 2 motion; ``logits`` holds those heads' classes in that
    order). Motion only on clips: an image shows no motion. ``balanced``: patches with an object and patches
    without weigh half each (objects cover ~15 % of the patches, and their labels are what a prompt is judged on)."""
    loss = logits.new_zeros(())
    weight = None
    if balanced:
        obj = (labels[..., 0] != NONE_COLOR).flatten().float()
        weight = 0.5 * obj / obj.sum().clamp_min(1) + 0.5 * (1 - obj) / (1 - obj).sum().clamp_min(1)
    for h, lo in zip(heads, logits.split([HEAD_SIZES[h] for h in heads], dim=-1)):
        if h != 2 or logits.shape[1] > 1:
            ce = F.cross_entropy(lo.reshape(-1, lo.shape[-1]), labels[..., h].flatten(), reduction="none")
            loss = loss + (ce.mean() if weight is None else (ce * weight).sum())
    return loss


def train(workdir: Path, steps: int, *, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
          config: VerifierConfig = VerifierConfig(), rgb_from: Optional[Path] = None,
          checkpoint_s: float = 300.0) -> WorldVerifier:
    """Train (or resume) to ``steps`` steps; checkpoints in ``workdir/verifier.pt`` every ``checkpoint_s``.

    ``rgb_from``: a trained verifier whose colour stream is kept as it is (frozen); only the structure stream
    (``config.shape_motion_from="structure"``) is trained, on its shape and motion heads."""
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / "verifier.pt"
    torch.manual_seed(seed)
    model = WorldVerifier(config)
    if rgb_from is not None:
        if model.structure is None:
            raise SystemExit("--rgb-from trains a structure stream beside a trained colour stream: add --structure")
        model.rgb.load_state_dict(load_verifier(rgb_from).rgb.state_dict())
        model.rgb.requires_grad_(False)
    opt = torch.optim.AdamW((model if rgb_from is None else model.structure).parameters(), lr=lr, weight_decay=0.01)
    warmup = 100

    def rate(step: int) -> float:   # warm-up, then cosine down to 55 %
        return min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, step / steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    start, rng, running = 0, np.random.default_rng(seed), None
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start, running = state["step"], state["loss"]
        logger.info("resumed at step %d", start)

    def save(step: int) -> None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                    "loss": running, "config": config.__dict__}, ckpt)

    last = time.time()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="verifier", unit="step")
    for step in bar:
        x, y = batch(rng, batch_size, config.max_frames)
        loss = (patch_loss(model(x), y) if rgb_from is None
                else patch_loss(model.structure_logits(x), y, heads=(1, 2), balanced=True))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        if time.time() - last > checkpoint_s:
            save(step + 1)
            last = time.time()
    save(steps)
    return model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("runs/verifier"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--structure", action="store_true",
                    help="shape and motion from a colour-blind structure stream (VerifierConfig.shape_motion_from)")
    ap.add_argument("--rgb-from", type=Path, default=None,
                    help="keep this trained verifier's colour stream and train only the structure stream")
    ap.add_argument("--presence-weight", type=float, default=VerifierConfig.presence_weight,
                    help="the exported verifier's presence weight (choose it with tools/probe_verifier.py)")
    ap.add_argument("--storage", choices=("fp16", "int8"), default="fp16",
                    help="weights of the exported verifier (int8: conv and linear weights, half the bytes)")
    ap.add_argument("--export", type=Path, help="write the trained verifier here (e.g. a model folder's verifier/)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    config = VerifierConfig(shape_motion_from="structure" if args.structure else "rgb",
                            presence_weight=args.presence_weight)
    model = train(args.workdir, args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, config=config,
                  rgb_from=args.rgb_from)
    if args.export:
        save_verifier(model, args.export, storage=args.storage)
        meta = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                "rgb_from": str(args.rgb_from) if args.rgb_from else None,
                "data": "renders of training prompts (vidrt.world.sample_train_prompt), degraded; no generated "
                        "samples, no held-out prompts", "command": " ".join(sys.argv)}
        cfg = json.loads((args.export / "config.json").read_text())
        (args.export / "config.json").write_text(json.dumps({**cfg, "_training": meta}, indent=2) + "\n")
        logger.info("exported to %s (%.0f s)", args.export, time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
