"""Regional prompting on clips: variants of `vidrt.regions` on multi-object dev clips (session 32).

Each variant runs the embedded model on the multi-object prompts among the dev prompts
(``train_prompts(N, seed=31)``, never the held-out set) with the eval's noise per dev index, and is scored by the
world scorer; per-prompt rows are kept so variants pair with each other. Variants not in the runtime are made by
subclassing its RegionRun (time dilation, late isolation, ...); the chosen ones then become runtime options.

    python tools/probe_regions_clips.py --variants plain,regions,tdil1 --out /tmp/rc.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import vidrt
import vidrt.pipeline as vp
from vidrt.regions import RegionRun
from vidrt.world.grammar import parse, train_prompts
from vidrt.world.layout import WorldLayout
from vidrt.world.score import score

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("eval_default_model", ROOT / "benchmarks" / "eval_default_model.py")
ev = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ev)

CRIT = ("adherence", "presence", "shape", "motion", "temporal", "clean")


def run_class(knobs: dict):
    """A RegionRun with the probe's extra knobs."""

    class ProbeRun(RegionRun):
        def read(self, videos, latent_shape):
            super().read(videos, latent_shape)
            m = self.masks
            if knobs.get("hold"):   # a region missing in a latent frame takes the nearest frame's where it was found
                for r in range(m.shape[0]):
                    seen = [f for f in range(m.shape[2]) if m[r, 0, f].any()]
                    for f in range(m.shape[2]):
                        if seen and not m[r, 0, f].any():
                            near = min(seen, key=lambda g: (abs(g - f), g))
                            m[r, 0, f] = m[r, 0, near]
            td = knobs.get("tdil", 0)
            if td:
                m = F.max_pool3d(m, (2 * td + 1, 1, 1), 1, (td, 0, 0))
            self.masks = m

        def isolated(self, x, cond, sigma, backdrops):
            if sigma > knobs.get("isolate_below", 2.0):
                return x[self.owner.to(x.device)]
            return super().isolated(x, cond, sigma, backdrops)

    return ProbeRun


VARIANTS = {
    "plain": None,
    "regions": {},
    "start4": {"start": 4},
    "start6": {"start": 6},
    "start12": {"start": 12},
    "dil2": {"dilate": 2},
    "dil0": {"dilate": 0},
    "tdil1": {"tdil": 1},
    "hold": {"hold": True},
    "hold_tdil1": {"hold": True, "tdil": 1},
    "iso_late": {"isolate": True, "isolate_below": 0.5},
    "iso_late3": {"isolate": True, "isolate_below": 0.3},
    "clear": {"clear": True},
    "norefresh": {"refresh": False},
    "iso_hold": {"isolate": True, "hold": True},
    "track": {"layout": {"track": True}},
    "track_iso": {"layout": {"track": True}, "isolate": True},
    "track_tdil1": {"layout": {"track": True}, "tdil": 1},
    "track_iso_clear": {"layout": {"track": True}, "isolate": True, "clear": True},
    "track_iso_hold": {"layout": {"track": True}, "isolate": True, "hold": True},
    "track_iso_start6": {"layout": {"track": True}, "isolate": True, "start": 6},
    "track_iso_jump15": {"layout": {"track": True, "max_jump": 0.15}, "isolate": True},
    "iso_hold_tdil1": {"isolate": True, "hold": True, "tdil": 1},
    "hold_tdil1_start4": {"hold": True, "tdil": 1, "start": 4},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="plain,regions")
    ap.add_argument("--dev", type=int, default=72, help="dev prompts drawn (the multi-object ones are used)")
    ap.add_argument("--count", type=int, default=32, help="multi-object prompts used")
    ap.add_argument("--size", default="33x64x64")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    frames, h, w = (int(v) for v in args.size.split("x"))
    prompts = [(i, p) for i, p in enumerate(train_prompts(args.dev, seed=31)) if len(parse(p).objects) > 1]
    prompts = prompts[: args.count]
    pipe = vidrt.Pipeline.from_pretrained()
    out = json.loads(args.out.read_text()) if args.out.is_file() else {}
    orig = vp.RegionRun
    for name in args.variants.split(","):
        if name in out:
            continue
        knobs = VARIANTS[name]
        kw = {}
        if knobs is not None:
            fields = {k: v for k, v in knobs.items() if k in ("start", "dilate", "isolate", "clear", "refresh")}
            kw["regions"] = vidrt.Regions(WorldLayout(**knobs.get("layout", {})), **fields)
            vp.RegionRun = run_class(knobs)
        rows, t0 = [], time.perf_counter()
        try:
            for s in range(0, len(prompts), args.batch):
                chunk = prompts[s:s + args.batch]
                videos, _ = ev.sample(pipe, chunk, frames, h, w, kw, None)
                for (i, p), v in zip(chunk, videos):
                    sc = score(v, p, fps=16)
                    rows.append({"index": i, "prompt": p, **{c: getattr(sc, c) for c in CRIT}})
        finally:
            vp.RegionRun = orig
        secs = (time.perf_counter() - t0) / len(prompts)
        out[name] = {"knobs": knobs, "seconds_per_clip": secs, "rows": rows,
                     "mean": {c: float(np.mean([r[c] for r in rows if r[c] is not None])) for c in CRIT}}
        args.out.write_text(json.dumps(out, indent=1))
        print(f"{name}: " + " ".join(f"{c} {out[name]['mean'][c]:.3f}" for c in CRIT) + f"  {secs:.1f} s/clip",
              flush=True)
    base = out.get("regions") or out.get("plain")
    for name, r in out.items():
        if base is None or r is base:
            continue
        d = np.array([a["adherence"] - b["adherence"] for a, b in zip(r["rows"], base["rows"])])
        print(f"{name} - base: {d.mean():+.3f} +- {d.std(ddof=1) / np.sqrt(len(d)):.3f} (n={len(d)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
