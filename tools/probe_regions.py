#!/usr/bin/env python
"""Regional prompting from the model's own layout: does giving each object's region its own one-object prompt
fix binding on multi-object prompts?

The DiT draws one-object prompts well (images 0.87 of the VAE's 0.89 ceiling) and two / three objects with
the wrong shapes and motions (sessions 16, 21): it does not bind a colour to its shape and motion. Composable
guidance (session 16: sub-prompt velocities *summed* over the whole frame) lost objects. Here the layout comes
from the exact path's own sample: after ``--layout-step`` steps its clean estimate is decoded, segmented into
blobs (background = the frame's median colour), and blobs are matched to the prompt's objects by colour. From
then on, inside an object's (dilated, latent-grid) region the conditional velocity is that of the object's
one-object prompt ("a red circle moves right on a gray background"); outside every region it is the full
prompt's (``--outside full``) or the mean of the one-object prompts' (``--outside subs``). Classifier-free
guidance against the empty prompt is unchanged. A wrapper around the loaded DiT, as tools/expert_mix.py, so the
exact path's sampler, guidance and noise are used unchanged.

    python tools/probe_regions.py --dev 48 --sizes 1x64x64 --layout-step 4 --name regions_dev
    python tools/probe_regions.py --sizes 1x64x64,33x64x64 --layout-step 4 --name regions
    python benchmarks/eval_default_model.py --compare benchmarks/results/default_model.json OUT/regions.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

import vidrt
from vidrt.testing import load_script
from vidrt.world.grammar import BACKGROUNDS, COLORS, Scene, parse

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("probe_regions")


def one_object_prompts(prompt: str) -> list[str]:
    """Each object of ``prompt`` alone on the prompt's background."""
    scene = parse(prompt)
    return [Scene((o,), scene.background, True).prompt() for o in scene.objects]


def components(fg: torch.Tensor, iters: int = 128) -> torch.Tensor:
    """8-connected component labels of boolean masks (N, H, W) -> (N, H, W) int64, 0 = background (label
    propagation: every pixel takes the largest label among its neighbours until nothing changes)."""
    n, h, w = fg.shape
    lab = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(n, h, w).clone() * fg
    for _ in range(iters):
        new = F.max_pool2d(lab[:, None], 3, 1, 1)[:, 0] * fg
        if torch.equal(new, lab):
            break
        lab = new
    return lab.long()


def object_masks(frames: torch.Tensor, colors: Sequence[str], background: str, *, threshold: float = 60.0,
                 min_area: int = 6, max_share: float = 0.25, max_distance: float = float("inf")) -> torch.Tensor:
    """Per frame, which pixels show which asked object: (T, H, W, 3) floats in [0, 255], the objects' colour
    names and the prompt's background colour name -> (n_objects, T, H, W) bool. Blobs (pixels far from the asked
    background colour, 8-connected, at least ``min_area`` pixels and at most ``max_share`` of the frame: an early
    estimate's colour wash is no object) are matched one-to-one to objects by the distance of their mean colour
    to the objects' palette colours (the assignment of least total distance); pairs further apart than
    ``max_distance`` are not matched, and unmatched blobs belong to no object."""
    t, h, w, _ = frames.shape
    bg = torch.tensor(BACKGROUNDS[background], dtype=torch.float32)
    fg = (frames - bg).norm(dim=-1) > threshold
    labels = components(fg)
    palette = torch.tensor([COLORS[c] for c in colors], dtype=torch.float32)
    out = torch.zeros(len(colors), t, h, w, dtype=torch.bool)
    for f in range(t):
        ids, areas = labels[f].unique(return_counts=True)
        keep = [(int(a), int(i)) for i, a in zip(ids, areas) if i > 0 and min_area <= a <= max_share * h * w]
        blobs = [i for _, i in sorted(keep, reverse=True)[:6]]
        if not blobs:
            continue
        means = torch.stack([frames[f][labels[f] == i].mean(0) for i in blobs])
        cost = torch.cdist(palette, means)   # (objects, blobs)
        k = min(len(colors), len(blobs))
        best, best_cost = None, float("inf")
        for objs in itertools.permutations(range(len(colors)), k):
            for bl in itertools.permutations(range(len(blobs)), k):
                c = float(sum(cost[o, b] for o, b in zip(objs, bl)))
                if c < best_cost:
                    best, best_cost = list(zip(objs, bl)), c
        for o, b in best:
            if cost[o, b] <= max_distance:
                out[o, f] = labels[f] == blobs[b]
    return out


def latent_masks(masks: torch.Tensor, latent_shape: Sequence[int], temporal: int = 4,
                 dilate: int = 1) -> torch.Tensor:
    """Pixel masks (n, T, H, W) -> the latent grid (n, 1, F, h, w): a latent cell belongs to an object when any
    pixel of its frames (latent frame 0: frame 0; f >= 1: frames 4f-3..4f) and 8x8 area does, dilated by
    ``dilate`` cells."""
    n, t, h, w = masks.shape
    nf, lh, lw = latent_shape
    m = masks.float()
    groups = [m[:, :1]] + [m[:, 1 + temporal * (f - 1): 1 + temporal * f] for f in range(1, nf)]
    m = torch.stack([g.amax(1) for g in groups], 1)                    # (n, F, H, W)
    m = F.adaptive_max_pool2d(m.reshape(n * nf, 1, h, w), (lh, lw)).view(n, nf, lh, lw)
    if dilate:
        m = F.max_pool2d(m.view(n * nf, 1, lh, lw), 2 * dilate + 1, 1, dilate).view(n, nf, lh, lw)
    return m[:, None]


class RegionDiT(torch.nn.Module):
    """The DiT the pipeline calls. Unarmed it is the wrapped DiT; armed (``masks`` set) it replaces the
    conditional half of the batched CFG call, per object region, with that object's one-object prompt's
    velocity."""

    def __init__(self, dit, outside: str = "full"):
        super().__init__()
        self.dit, self.outside = dit, outside
        self.config, self.patch_embedding = dit.config, dit.patch_embedding
        self.batch = 0
        self.owner: Optional[torch.Tensor] = None     # batch row of each one-object prompt
        self.sub_kv: Optional[list] = None
        self.masks: Optional[torch.Tensor] = None     # (S, 1, F, h, w) per one-object prompt
        self.calls = [0, 0]

    def prepare_context(self, ctx: torch.Tensor) -> list:
        return self.dit.prepare_context(ctx)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context_kv=None, step_cache=None) -> torch.Tensor:
        out = self.dit(x, t, context_kv=context_kv, step_cache=step_cache)
        self.calls[0] += 1
        if self.masks is None:
            return out
        if x.shape[0] != 2 * self.batch:
            raise RuntimeError("RegionDiT needs the batched CFG call (pipe.batch_cfg = True, guidance > 1)")
        self.calls[1] += 1
        b, owner, m = self.batch, self.owner, self.masks.to(out.dtype)
        sub = self.dit(x[owner], t[:1].expand(len(owner)), context_kv=self.sub_kv)
        cond = out[:b]
        cover = torch.zeros_like(cond[:, :1]).index_add_(0, owner, m)
        inside = torch.zeros_like(cond).index_add_(0, owner, m * sub) / cover.clamp(min=1)
        if self.outside == "subs":
            count = torch.zeros_like(cond[:, :1]).index_add_(0, owner, torch.ones_like(m))
            rest = torch.zeros_like(cond).index_add_(0, owner, sub) / count
        else:
            rest = cond
        mixed = inside + (1 - cover.clamp(max=1)) * rest
        return torch.cat([mixed, out[b:]])


class RegionPipeline:
    """A loaded Pipeline whose calls arm :class:`RegionDiT` at ``layout_step`` from the clean estimate (and
    again at every later step with ``refresh``); everything else is the wrapped pipeline's."""

    def __init__(self, pipe: "vidrt.Pipeline", layout_step: int, *, outside: str = "full", refresh: bool = False,
                 dilate: int = 1, threshold: float = 60.0, max_distance: float = float("inf")):
        self.pipe, self.layout_step, self.refresh, self.dilate = pipe, layout_step, refresh, dilate
        self.threshold, self.max_distance = threshold, max_distance
        self.region = RegionDiT(pipe.transformer, outside)
        pipe.transformer = self.region
        pipe.batch_cfg = True
        self.armed_rows = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def _arm(self, x0: torch.Tensor, scenes: list[Scene]) -> None:
        videos = self.pipe.decode(x0)                       # (B, 3, T, H, W) in [-1, 1]
        frames = ((videos.float().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 4, 1).cpu()
        masks = [latent_masks(object_masks(fr, [o.color for o in sc.objects], sc.background,
                                           threshold=self.threshold, max_distance=self.max_distance),
                                 x0.shape[2:], dilate=self.dilate)
                 for fr, sc in zip(frames, scenes)]
        self.region.masks = torch.cat(masks).to(x0.device)
        self.armed_rows += int((self.region.masks.flatten(1).amax(1) > 0).sum())

    def __call__(self, prompts, **kw):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if kw.get("candidates", 1) != 1:
            raise SystemExit("probe_regions runs one candidate per prompt")
        subs, owner, scenes = [], [], []
        for j, p in enumerate(prompts):
            s = one_object_prompts(p)
            subs += s
            owner += [j] * len(s)
            scenes.append(parse(p))
        r = self.region
        r.batch, r.owner, r.masks = len(prompts), torch.tensor(owner, device=self.pipe.device), None
        r.sub_kv = r.dit.prepare_context(self.pipe.encode_prompts(subs))

        def on_step(state) -> None:
            if state.step + 1 == self.layout_step or (self.refresh and state.step + 1 > self.layout_step):
                self._arm(state.x0, scenes)

        try:
            return self.pipe(prompts, on_step=on_step, **kw)
        finally:
            r.masks = r.sub_kv = None


def main(argv: Optional[Sequence[str]] = None) -> int:
    ev = load_script(ROOT / "benchmarks/eval_default_model.py")
    from vidrt.world.grammar import held_out_prompts, train_prompts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    ap.add_argument("--layout-step", type=int, default=4, help="steps of the exact path before the layout is read "
                    "(0: no regions, the exact path itself)")
    ap.add_argument("--outside", choices=("full", "subs"), default="full")
    ap.add_argument("--refresh", action="store_true", help="re-read the layout at every later step")
    ap.add_argument("--dilate", type=int, default=1, help="latent cells added around each region")
    ap.add_argument("--threshold", type=float, default=60.0, help="RGB distance from the background of a blob")
    ap.add_argument("--max-distance", type=float, default=float("inf"), help="RGB distance beyond which a blob is "
                    "not matched to an object of that colour")
    ap.add_argument("--sizes", default="1x64x64", help="comma list FxHxW")
    ap.add_argument("--dev", type=int, default=0, help="N training prompts (train_prompts(N, seed=31)) instead of "
                    "the held-out set")
    ap.add_argument("--prompts", type=int, default=None, help="the first N prompts (default all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--name", default="regions")
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    pipe = vidrt.Pipeline.from_pretrained(args.model)
    rp = RegionPipeline(pipe, args.layout_step, outside=args.outside, refresh=args.refresh, dilate=args.dilate,
                        threshold=args.threshold, max_distance=args.max_distance) if args.layout_step > 0 else pipe
    source = train_prompts(args.dev, seed=31) if args.dev else held_out_prompts()
    prompts = list(enumerate(source))[: args.prompts]
    result: dict[str, Any] = {"name": args.name, "model": args.model or "embedded default",
                              "prompts": "dev" if args.dev else "held-out", "layout_step": args.layout_step,
                              "outside": args.outside, "refresh": args.refresh, "dilate": args.dilate,
                              "threshold": args.threshold, "max_distance": args.max_distance, "configs": []}
    for item in args.sizes.split(","):
        f, h, w = (int(v) for v in item.split("x"))
        c = ev.evaluate_config(rp, prompts, f, h, w, batch=args.batch, gen_kwargs={})
        c.pop("_samples", None)
        result["configs"].append(c)
        logger.info("%s: adherence %.3f", c["size"], c["generated"]["adherence"])
    if args.layout_step > 0:
        result["calls"], result["armed_rows"] = rp.region.calls, rp.armed_rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({c["size"]: {**c["generated"], "by_objects": c["by_objects"]} for c in result["configs"]},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
