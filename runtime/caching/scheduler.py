"""Latency-target scheduler: a cost model calibrated on this device and model, a planner that picks
steps / step cache / CFG mode to meet a target with the best measured quality, and a controller
that raises the cache threshold during the run when it falls behind.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from vidrt.caching.calibration import cache_dir
from vidrt.errors import LatencyError

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- cost model


@dataclass
class CostModel:
    """Seconds of each stage on one device: text encoder call, DiT call vs tokens x batch, VAE decode.

    DiT call time = a + b * (tokens*batch) + c * (tokens * (tokens + kv_tokens) * batch)  (linear layers +
    attention; ``kv_tokens``: cached past keys a causal chunk also attends to, whose projections are not redone);
    VAE decode = d + e * latent voxels (T' * H' * W'); ``step_s``: what a sampler step costs besides its
    DiT calls (the scheduler's update, CFG mixing, dtype moves), measured on a short real run.
    """

    key: dict
    text_s: float
    dit: tuple[float, float, float]
    vae: tuple[float, float]
    step_s: float = 0.0
    load_factor: float = 1.0   # how much slower the machine ran than at calibration (``rescaled_for_load``)
    load_check: str = ""       # what the load probe did: "kept", "rescaled" or "recalibrated" ("" = no probe)

    def dit_call(self, tokens: int, batch: int, kv_tokens: int = 0) -> float:
        a, b, c = self.dit
        return max(1e-6, a + b * tokens * batch + c * tokens * (tokens + kv_tokens) * batch)

    def vae_decode(self, voxels: int) -> float:
        d, e = self.vae
        return max(1e-6, d + e * voxels)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "CostModel":
        return cls(d["key"], d["text_s"], tuple(d["dit"]), tuple(d["vae"]), float(d.get("step_s", 0.0)))

    def to_file(self) -> dict:
        """What is cached on disk: the measurement, not a probe's view of it."""
        return {k: v for k, v in self.to_json().items() if k not in ("load_factor", "load_check")}

    def scaled(self, factor: float) -> "CostModel":
        """Every term ``factor`` times slower (a machine under another load runs every stage slower alike)."""
        return dataclasses.replace(self, text_s=self.text_s * factor, dit=tuple(v * factor for v in self.dit),
                                   vae=tuple(v * factor for v in self.vae), step_s=self.step_s * factor,
                                   load_factor=self.load_factor * factor)


def cost_key(pipe) -> dict:
    import vidrt

    # the architecture, not just the path: a retrained model in the same folder may have other shapes
    arch = hashlib.sha1(json.dumps(pipe.transformer.config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return {"model": pipe.source, "architecture": arch, "device": str(pipe.device), "precision": pipe.precision,
            "attention": pipe.attention, "torch": torch.__version__, "vidrt": vidrt.__version__,
            "threads": torch.get_num_threads(), "schema": 2}   # 2: with the per-step overhead


def _key_file(key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "cost" / f"{digest}.json"


def _sync() -> None:
    if torch.cuda.is_available():  # kernels are asynchronous: time them finished
        torch.cuda.synchronize()


def _timed(fn, repeats: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _dit_call_timer(pipe) -> Callable[[tuple[int, int, int], int], float]:
    """Seconds of one DiT call on a (t, h, w) token grid at batch 1 or 2 (cond + uncond), best of two."""
    dit = pipe.transformer
    pt, ph, pw = dit.config.patch_size
    kv = dit.prepare_context(pipe.encode_prompts(["a red circle moves right", ""], 32))

    def time_call(grid: tuple[int, int, int], batch: int) -> float:
        t, h, w = grid
        z = torch.randn(batch, dit.config.in_channels, t * pt, h * ph, w * pw, device=pipe.device, dtype=pipe.dtype)
        kvb = kv[:] if batch == 2 else [(k[:1], v[:1]) for k, v in kv]
        ts = torch.full((batch,), 500.0, device=pipe.device)
        return _timed(lambda: dit(z, ts, context_kv=kvb))

    return time_call


LOAD_TOLERANCE = 0.1   # rescale the cost model when the machine runs more than 10 % off its calibration
RECALIBRATE_BEYOND = 0.25   # further off than this, measure the cost model again instead of rescaling it
PROBE_MAX_TOKENS = 320   # the load probe times the request's own token grid, cut down to this many tokens


def probe_grid(grid: Sequence[int]) -> tuple[int, int, int]:
    """The request's (t, h, w) token grid cut to at most PROBE_MAX_TOKENS tokens (frames first, then rows, then
    columns): the probe times what the request will run, at a bounded cost. A fixed 108-token probe read a CPU
    shared with a 2-thread job as unloaded while 17x64x64 requests ran 26-37 % over their targets."""
    t, h, w = (max(1, int(v)) for v in grid)
    t = min(t, max(1, PROBE_MAX_TOKENS // (h * w)))
    h = min(h, max(1, PROBE_MAX_TOKENS // (t * w)))
    w = min(w, max(1, PROBE_MAX_TOKENS // (t * h)))
    return t, h, w


@torch.no_grad()
def rescaled_for_load(pipe, cost: CostModel, grid: tuple[int, int, int] = (3, 6, 6)) -> CostModel:
    """``cost`` fitted to how fast this machine runs *now*: one DiT call (batch 2, on ``grid``: the planner passes
    ``probe_grid`` of the request's token grid) timed against its prediction. Within 10 % the model is kept; up to 25 % off it is scaled by that factor; further off it
    is measured again (and cached). On a shared CPU a cost model measured ten minutes earlier missed latency
    targets by 16-45 % (0 of 5 within 15 %); the probe costs three small DiT calls. A big change of load does
    not slow every size alike (a model calibrated beside another process, probed idle at 0.67-0.71x, still
    landed at 0.87-1.17 of its targets): re-measuring costs ~2 s on the embedded model at 1 thread."""
    t, h, w = grid
    factor = _dit_call_timer(pipe)(grid, 2) / cost.dit_call(t * h * w, 2)
    if abs(factor - 1.0) <= LOAD_TOLERANCE:
        return dataclasses.replace(cost, load_check="kept")
    if abs(factor - 1.0) > RECALIBRATE_BEYOND:
        logger.info("machine runs %.2fx the calibrated time now: cost model measured again", factor)
        return dataclasses.replace(calibrate_cost(pipe, refresh=True), load_factor=factor, load_check="recalibrated")
    logger.info("machine runs %.2fx the calibrated time now: cost model rescaled", factor)
    return dataclasses.replace(cost.scaled(factor), load_check="rescaled")


def nonnegative_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares ``x @ coef ~ y`` with every coefficient >= 0: more tokens or a bigger batch never predicts
    less time. A plain fit of a small model's noisy timings (fixed overhead dominating) gave negative per-token
    terms, so a CFG step (batch 2) was priced below an unguided one. Exact over the few columns: the best fit
    among all subsets of free coefficients whose solution is non-negative."""
    n = x.shape[1]
    best, best_err = np.zeros(n), float(np.sum(y ** 2))
    for mask in range(1, 1 << n):
        cols = [j for j in range(n) if mask >> j & 1]
        sol, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if np.any(sol < 0):
            continue
        coef = np.zeros(n)
        coef[cols] = sol
        err = float(np.sum((x @ coef - y) ** 2))
        if err < best_err:
            best, best_err = coef, err
    return best


@torch.no_grad()
def calibrate_cost(pipe, *, refresh: bool = False, grids: Sequence[tuple[int, int, int]] = ((1, 4, 4), (3, 6, 6), (5, 8, 8))
                   ) -> CostModel:
    """Measure (seconds) or load the cached cost model for this pipeline's model, device and settings."""
    key = cost_key(pipe)
    path = _key_file(key)
    if path.is_file() and not refresh:
        return CostModel.from_json(json.loads(path.read_text()))
    dit = pipe.transformer
    pt, ph, pw = dit.config.patch_size
    text_s = _timed(lambda: pipe.encode_prompts(["a red circle moves right", ""]))
    time_call = _dit_call_timer(pipe)
    rows, ys = [], []
    for (t, h, w) in grids:
        n = t * h * w
        for b in (1, 2):
            ys.append(time_call((t, h, w), b))
            rows.append([1.0, n * b, n * n * b])
    coef = nonnegative_fit(np.asarray(rows), np.asarray(ys))
    vx, vy = [], []
    for (t, h, w) in ((1, 4, 4), (3, 8, 8)):
        z = torch.randn(1, dit.config.in_channels, t, h, w, device=pipe.device)
        vy.append(_timed(lambda: pipe.decode(z), repeats=1))
        vx.append(t * h * w)
    e = (vy[1] - vy[0]) / (vx[1] - vx[0])
    model = CostModel(key, text_s, tuple(float(c) for c in coef), (float(vy[0] - e * vx[0]), float(max(e, 1e-9))))
    # the per-step rest: a short latent-only run of the smallest grid, minus its predicted text + DiT time.
    # Without it the model ran ~10 % fast on the embedded model (20 steps of a 6 ms DiT call).
    t, h, w = grids[0]
    gen = dict(num_frames=1 + 4 * (t * pt - 1), height=h * ph * pipe.vae_scale_spatial,
               width=w * pw * pipe.vae_scale_spatial, steps=8, guidance=2.0, output="latent", progress=False)
    run_s = _timed(lambda: pipe("a red circle moves right", **gen))
    loop_s = run_s - text_s - gen["steps"] * model.dit_call(t * h * w, 2)
    model.step_s = max(0.0, loop_s / gen["steps"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model.to_file(), indent=2))
    logger.info("cost model calibrated: %s", model)
    return model


# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Plan:
    """One setting of the speed knobs."""

    steps: int
    cache: Optional[str] = None  # "teacache" | "first_block" | None
    threshold: float = 0.0
    cfg_interval: int = 1  # 1 = unconditional branch every step; 2 = CFG cache every other step

    @property
    def cache_spec(self) -> Optional[str]:
        parts = ([self.cache] if self.cache else []) + (["cfg"] if self.cfg_interval > 1 else [])
        return "+".join(parts) or None

    def label(self) -> str:
        c = f"{self.cache}@{self.threshold:g}" if self.cache else "no-cache"
        return f"{self.steps} steps, {c}, cfg every {self.cfg_interval}"


@dataclass
class Knob:
    """Measured effect of a plan on the calibration prompts: share of block-stack runs computed and
    quality (PSNR of frames vs the exact path, dB; adherence when the world scorer applies)."""

    plan: Plan
    computed_fraction: float
    psnr: Optional[float]
    adherence: Optional[float] = None


def candidate_plans(default_steps: int, thresholds: Sequence[float] = (0.1, 0.2, 0.4)) -> list[Plan]:
    steps = sorted({max(2, round(default_steps * f)) for f in (1.0, 0.75, 0.5, 0.35, 0.25)}, reverse=True)
    plans = []
    for s in steps:
        for cfg in (1, 2):
            plans.append(Plan(s, None, 0.0, cfg))
            plans += [Plan(s, "teacache", t, cfg) for t in thresholds]
    return plans


# classifier-free guidance on every step (bool), or a function: step count -> whether each step is guided
GuidedSteps = Union[bool, Callable[[int], Sequence[bool]]]


def predict_seconds(plan: Plan, cost: CostModel, *, tokens: int, batch: int, voxels: int, cfg: "GuidedSteps",
                    computed_fraction: float = 1.0, kv_tokens: int = 0,
                    commit_kv_tokens: Optional[int] = None) -> float:
    """Predicted wall time of a generation (or of one causal chunk) under ``plan``.

    ``cfg``: whether steps run classifier-free guidance -- a bool for all of them, or a function of the step count
    giving each step's (a two-expert model with one scale <= 1, a guidance interval).

    ``kv_tokens``: cached past tokens every DiT call also attends to (a KV-cached chunk); ``commit_kv_tokens``: a
    chunk's one extra forward that writes its keys/values, attending to that many cached tokens (None: no commit).
    """
    guided = list(cfg(plan.steps)) if callable(cfg) else [bool(cfg)] * plan.steps
    calls = 0.0
    for i in range(plan.steps):
        full = guided[i] and (plan.cfg_interval == 1 or i < 1 or i >= plan.steps - 1
                              or (i - 1) % plan.cfg_interval == 0)
        calls += cost.dit_call(tokens, batch * (2 if full else 1), kv_tokens)
    head = 1.0 if plan.cache is None else computed_fraction
    commit = 0.0 if commit_kv_tokens is None else cost.dit_call(tokens, batch * (2 if any(guided) else 1),
                                                                 commit_kv_tokens)
    return cost.text_s + calls * head + commit + plan.steps * cost.step_s + cost.vae_decode(voxels)


@dataclass
class Schedule:
    """The chosen plan with its prediction, and the controller state for re-planning during the run."""

    plan: Plan
    predicted_s: float
    target_s: float
    alternatives: int
    decode_s: float = 0.0  # predicted VAE time (outside the loop)
    load_factor: float = 1.0  # the cost model's rescale for the machine's load at planning time
    load_check: str = ""  # what the load probe did: kept, rescaled, recalibrated ("" = no probe)
    replans: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"plan": dataclasses.asdict(self.plan), "label": self.plan.label(), "predicted_s": self.predicted_s,
                "target_s": self.target_s, "load_factor": round(self.load_factor, 3), "load_check": self.load_check,
                "replans": self.replans}


ADHERENCE_TOLERANCE = 0.05


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Piecewise-linear interpolation, clamped at the ends."""
    if x <= xs[0]:
        return ys[0]
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def choose_plan(target_s: float, cost: CostModel, knobs: Sequence[Knob], *, tokens: int, batch: int, voxels: int,
                cfg: "GuidedSteps", kv_tokens: int = 0, commit_kv_tokens: Optional[int] = None) -> Schedule:
    """Best-quality plan whose predicted time meets ``target_s``; LatencyError naming the fastest otherwise.

    Knobs form families (cache, threshold, CFG mode) measured at a few step counts. Each family runs the most
    steps that fit the budget; its quality there is interpolated between its measured step counts, so two
    families are compared where they would actually run. Quality = fidelity to the exact path (PSNR vs it).
    World adherence, measured on a few calibration prompts, is too noisy to rank plans (a weak model's cheap
    plan can out-score its exact path by chance); it is a guard instead: families more than
    ADHERENCE_TOLERANCE below the exact plan's rank last."""
    if not knobs:
        raise LatencyError("no calibrated plans for this model; run `vidrt calibrate` first")
    kw = dict(tokens=tokens, batch=batch, voxels=voxels, cfg=cfg, kv_tokens=kv_tokens,
              commit_kv_tokens=commit_kv_tokens)
    exact = max(knobs, key=lambda k: (k.plan.cache is None and k.plan.cfg_interval == 1, k.plan.steps))
    floor = None if exact.adherence is None else exact.adherence - ADHERENCE_TOLERANCE
    families: dict[tuple, list[Knob]] = {}
    for k in knobs:
        families.setdefault((k.plan.cache, k.plan.threshold, k.plan.cfg_interval), []).append(k)
    scored, fastest = [], None
    for fam in families.values():
        fam.sort(key=lambda k: k.plan.steps)
        xs = [k.plan.steps for k in fam]
        frac = lambda n: _interp(n, xs, [k.computed_fraction for k in fam])  # noqa: E731
        time_at = lambda n: predict_seconds(dataclasses.replace(fam[0].plan, steps=n), cost,  # noqa: E731
                                            computed_fraction=frac(n), **kw)
        t_min = time_at(xs[0])
        if fastest is None or t_min < fastest[0]:
            fastest = (t_min, fam[0].plan)
        if t_min > target_s:
            continue
        n = xs[0]
        while n < xs[-1] and time_at(n + 1) <= target_s:
            n += 1
        psnr = _interp(n, xs, [min(k.psnr, 60.0) if k.psnr is not None else -1.0 for k in fam])
        ads = [k.adherence for k in fam]
        guard = floor is None or None in ads or _interp(n, xs, ads) >= floor
        plan = dataclasses.replace(fam[0].plan, steps=n)
        scored.append(((guard, psnr, n, -plan.cfg_interval, -plan.threshold), time_at(n), plan))
    if not scored:
        raise LatencyError(f"latency target {target_s:.2f}s is impossible here: the fastest plan "
                           f"({fastest[1].label()}) is predicted at {fastest[0]:.2f}s on {cost.key['device']}; "
                           f"raise the target, lower the resolution or frame count, or use a faster precision/backend")
    _, t, plan = max(scored, key=lambda s: (s[0], -s[1]))
    return Schedule(plan, t, target_s, len(scored), decode_s=cost.vae_decode(voxels), load_factor=cost.load_factor,
                    load_check=cost.load_check)


class Controller:
    """Watches the denoising loop against its time budget and raises the TeaCache threshold when the
    projected loop time overshoots (the re-plan; steps cannot change mid-run with multistep samplers)."""

    def __init__(self, schedule: Schedule, loop_budget_s: float, start: float):
        self.schedule = schedule
        self.budget = loop_budget_s
        self.start = start

    def after_step(self, index: int, block_cache) -> None:
        steps = self.schedule.plan.steps
        done = index + 1
        # projections from the first steps are noise (warm-up, allocator): judge after a quarter of the run
        if block_cache is None or done < max(2, steps // 4) or steps - done <= 1:
            return
        if self.schedule.replans and index - self.schedule.replans[-1]["after_step"] < max(2, steps // 4):
            return  # give the last raise time to show in the projection (raising every step compounds)
        elapsed = time.perf_counter() - self.start
        projected = elapsed / done * steps
        if projected > self.budget * 1.05:
            old = block_cache.threshold
            block_cache.threshold = max(old * 1.5, old + 0.05)
            self.schedule.replans.append({"after_step": index, "elapsed_s": round(elapsed, 3),
                                          "projected_loop_s": round(projected, 3), "budget_s": round(self.budget, 3),
                                          "threshold": [old, block_cache.threshold]})
            logger.info("behind schedule after step %d (projected %.2fs > %.2fs): cache threshold %.3g -> %.3g",
                        index, projected, self.budget, old, block_cache.threshold)


def load_knobs(calibration: dict) -> list[Knob]:
    out = []
    for d in calibration.get("knobs", []):
        out.append(Knob(Plan(**d["plan"]), d["computed_fraction"], d["psnr"], d.get("adherence")))
    return out


def knobs_to_json(knobs: Sequence[Knob]) -> list[dict]:
    return [{"plan": dataclasses.asdict(k.plan), "computed_fraction": k.computed_fraction, "psnr": k.psnr,
             "adherence": k.adherence} for k in knobs]


_WARNED: set = set()


def knobs_for(pipe, default_steps: int) -> list[Knob]:
    """The plans the scheduler may choose for ``pipe``: its calibration's measured knobs, or (uncalibrated)
    plans that differ only in steps and CFG mode, ranked by steps."""
    from vidrt.caching.calibration import load_calibration

    knobs = load_knobs(load_calibration(pipe.source)) if pipe.source else []
    if knobs:
        return knobs
    if pipe.source not in _WARNED:
        _WARNED.add(pipe.source)
        logger.warning("no quality calibration for %s; planning over steps and CFG mode only "
                       "(run `vidrt calibrate` for cache-aware plans)", pipe.source or "this model")
    return [Knob(p, 1.0, psnr=None) for p in candidate_plans(default_steps) if p.cache is None]
