"""Per-model calibration stored next to the checkpoint: TeaCache's rescaling polynomial and the
quality of each cache setting, measured once on a fixed prompt set against the exact path."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from vidrt.caching.step_cache import BlockStackCache, rel_l1

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "vidrt_calibration.json"
DEFAULT_PROMPTS = ("a red circle moves right", "a blue square moves up and a yellow triangle stays still",
                   "a green triangle bounces on a gray background", "a white circle grows")


def cache_dir() -> Path:
    return Path(os.environ.get("VIDRT_CACHE_DIR", Path.home() / ".cache" / "vidrt"))


def calibration_path(source: str | Path) -> Path:
    """``<checkpoint>/vidrt_calibration.json`` when the folder is writable, else a per-checkpoint file
    in the user cache (``$VIDRT_CACHE_DIR``, default ~/.cache/vidrt)."""
    src = Path(source)
    if src.is_dir() and os.access(src, os.W_OK):
        return src / CALIBRATION_FILE
    digest = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "calibration" / f"{digest}.json"


def load_calibration(source: str | Path) -> dict:
    for p in (Path(source) / CALIBRATION_FILE, calibration_path(source)):
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                logger.warning("ignoring corrupt calibration file %s (re-run `vidrt calibrate`)", p)
    return {}


def save_calibration(source: str | Path, data: dict) -> Path:
    path = calibration_path(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {**load_calibration(source), **data}
    path.write_text(json.dumps(merged, indent=2))
    return path


class _Recorder(BlockStackCache):
    """Always computes; records (input change, residual change) between consecutive steps."""

    name = "recorder"

    def __init__(self):
        super().__init__(0.0, warmup_steps=0, final_steps=0)
        self.pairs: list[tuple[float, float]] = []
        self.expert_of_pair: list[int] = []   # which expert (0, then 1 after a two-expert model's switch) made each
        self._expert = 0
        self._prev_in: Optional[torch.Tensor] = None
        self._prev_res: Optional[torch.Tensor] = None

    def reset(self, coefficients=None) -> None:
        super().reset()
        self._prev_in = self._prev_res = None   # no pair across a two-expert checkpoint's switch
        self._expert += 1

    def run_blocks(self, dit, x, mod, run):
        slot, rows = self._next_slot(x.shape[0])
        out = run(x)
        if slot == 0:
            keep = self._indicator_rows(self._by_branch(rows))   # the rows TeaCache watches
            inp, res = dit.blocks[0].modulated_input(x, mod)[keep], (out - x)[keep]
            if self._prev_in is not None:
                self.pairs.append((rel_l1(inp, self._prev_in), rel_l1(res, self._prev_res)))
                self.expert_of_pair.append(self._expert)
            self._prev_in, self._prev_res = inp, res
        return out


def fit_teacache(pipe, prompts: Sequence[str] = DEFAULT_PROMPTS, *, degree: int = 4,
                 progress: Optional[Callable[[int], None]] = None, **gen) -> list[list[float]]:
    """Fit the polynomial mapping block 0's modulated-input change to the block stack's output change: one per
    expert of ``pipe`` (one for a one-DiT model; a two-expert model's differ), highest degree first."""
    points: list[list[tuple[float, float]]] = [[] for _ in pipe.experts]
    for i, p in enumerate(prompts):
        rec = _Recorder()
        pipe(p, cache=rec, output="latent", progress=False, **gen)
        for e, pair in zip(rec.expert_of_pair, rec.pairs):
            points[min(e, len(points) - 1)].append(pair)
        if progress:
            progress(i + 1)
    fits = []
    for e, pts in enumerate(points):
        if len(pts) <= degree:
            which = f" for expert {e + 1} of {len(points)}" if len(points) > 1 else ""
            raise ValueError(f"only {len(pts)} calibration points{which} for a degree-{degree} fit; use more steps "
                             "or prompts")
        fits.append(monotone_fit(np.asarray([a for a, _ in pts]), np.asarray([b for _, b in pts]), degree))
    return fits


def monotone_fit(x: np.ndarray, y: np.ndarray, degree: int = 4) -> list[float]:
    """Highest-degree polynomial fit (<= ``degree``) that is non-decreasing and >= 0 on [0, max x]:
    a rescaling that shrinks for larger input changes would make TeaCache skip more exactly when it
    should compute."""
    grid = np.linspace(0.0, float(x.max()) * 1.5, 200)
    for d in range(degree, 0, -1):
        c = np.polyfit(x, y, d)
        v = np.polyval(c, grid)
        if np.all(np.diff(v) >= -1e-9) and v[0] >= -1e-3:
            return [float(a) for a in c]
    slope = float(np.dot(x, y) / max(np.dot(x, x), 1e-12))  # through the origin
    return [max(slope, 0.0), 0.0]


def measure_knobs(pipe, plans, prompts: Sequence[str] = DEFAULT_PROMPTS, *, height: int, width: int,
                  num_frames: int, exact_steps: int, seed: int = 0, progress: Optional[Callable[[], None]] = None):
    """Quality of each plan vs the exact path (default steps, no cache) on ``prompts``: frame PSNR,
    share of block-stack runs computed, and world adherence when the prompts parse in vidrt.world."""
    from vidrt.caching.scheduler import Knob
    from vidrt.metrics import psnr

    scorer = _world_scorer(prompts)
    gen = dict(height=height, width=width, num_frames=num_frames, seed=seed, progress=False)
    exact = [pipe(p, steps=exact_steps, **gen).frames for p in prompts]
    knobs = []
    for plan in plans:
        ps, fr, ad = [], [], []
        for p, ref in zip(prompts, exact):
            v = pipe(p, steps=plan.steps, cache=plan.cache_spec, cache_threshold=plan.threshold,
                     cfg_interval=plan.cfg_interval, **gen)
            ps.append(psnr(v.frames, ref))
            st = v.stats.get("cache", {}).get(plan.cache or "", None)
            if st:
                done = sum(st["computed"].values())
                fr.append(done / max(1, done + sum(st["reused"].values())))
            if scorer:
                ad.append(scorer(v.frames, p))
            if progress:
                progress()
        knobs.append(Knob(plan, float(np.mean(fr)) if fr else 1.0, float(np.mean(np.minimum(ps, 99.0))),
                          float(np.mean(ad)) if ad else None))
    return knobs


def _world_scorer(prompts: Sequence[str]):
    try:
        from vidrt.world import parse, score

        for p in prompts:
            parse(p)
    except Exception:
        return None
    return lambda frames, prompt: score(frames, prompt).adherence
