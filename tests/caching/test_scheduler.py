"""Latency scheduler: planning on a known cost model, impossible targets, deadlines, re-planning."""
import dataclasses
import json
import time

import pytest

import vidrt
from vidrt.caching.scheduler import (Controller, CostModel, Knob, Plan, Schedule, candidate_plans, choose_plan,
                                     predict_seconds)

COST = CostModel({"device": "cpu"}, text_s=0.1, dit=(0.01, 1e-4, 0.0), vae=(0.05, 0.0))  # 0.01 + 1e-4*tokens*batch
SHAPE = dict(tokens=100, batch=1, voxels=1000, cfg=True)


def knobs():
    out = []
    for p in candidate_plans(20, thresholds=(0.1, 0.3)):
        frac = {0.0: 1.0, 0.1: 0.7, 0.3: 0.45}[p.threshold]
        psnr = 60.0 - 40.0 * (1 - p.steps / 20) - 6 * (1 - frac) * 3 - (4.0 if p.cfg_interval > 1 else 0.0)
        out.append(Knob(p, frac, psnr))
    return out


def test_prediction_counts_cfg_and_cache():
    full = predict_seconds(Plan(10), COST, **SHAPE)
    assert full == pytest.approx(0.1 + 10 * (0.01 + 1e-4 * 200) + 0.05)
    cached = predict_seconds(Plan(10, "teacache", 0.1), COST, computed_fraction=0.5, **SHAPE)
    assert cached == pytest.approx(0.1 + 0.5 * 10 * 0.03 + 0.05)
    half_cfg = predict_seconds(Plan(10, None, 0.0, 2), COST, **SHAPE)
    assert full > half_cfg > full * 0.6
    # the per-step rest of the loop (sampler update, CFG mix) counts once per step, cache or not
    stepped = dataclasses.replace(COST, step_s=0.002)
    assert predict_seconds(Plan(10), stepped, **SHAPE) == pytest.approx(full + 10 * 0.002)
    assert predict_seconds(Plan(10, "teacache", 0.1), stepped, computed_fraction=0.5, **SHAPE) == \
        pytest.approx(cached + 10 * 0.002)


def test_best_quality_within_target_and_monotone():
    ks = knobs()
    exact = predict_seconds(Plan(20), COST, **SHAPE)
    targets = [exact * f for f in (0.3, 0.45, 0.6, 0.8, 1.0)]
    chosen = [choose_plan(t, COST, ks, **SHAPE) for t in targets]
    for sch, t in zip(chosen, targets):
        assert sch.predicted_s <= t
        assert sch.predicted_s >= 0.8 * t  # the budget is filled, not wasted
    assert chosen[-1].plan == Plan(20)  # enough time: the exact plan
    steps = [c.plan.steps for c in chosen]
    assert steps == sorted(steps)  # quality knob (steps) monotone in the target


def test_noisy_adherence_does_not_outrank_fidelity():
    """World adherence from a few calibration prompts is noise on a weak model: a cheap plan that happened to
    score higher must not beat the exact plan when both fit; a plan far below the exact adherence ranks last."""
    ks = [Knob(k.plan, k.computed_fraction, k.psnr, adherence=0.20) for k in knobs()]
    lucky = next(i for i, k in enumerate(ks) if k.plan == Plan(7, "teacache", 0.3, 2))
    ks[lucky] = Knob(ks[lucky].plan, ks[lucky].computed_fraction, ks[lucky].psnr, adherence=0.26)
    exact_t = predict_seconds(Plan(20), COST, **SHAPE)
    assert choose_plan(exact_t, COST, ks, **SHAPE).plan == Plan(20)
    # a fitting plan whose adherence is far below the exact plan's (a real failure) is passed over
    best = choose_plan(exact_t * 0.8, COST, ks, **SHAPE).plan
    guarded = [Knob(k.plan, k.computed_fraction, k.psnr, adherence=0.05 if k.plan == best else 0.20) for k in ks]
    assert choose_plan(exact_t * 0.8, COST, guarded, **SHAPE).plan != best


def test_impossible_target_names_the_fastest_plan():
    with pytest.raises(vidrt.LatencyError, match=r"impossible.*fastest plan.*predicted at \d+\.\d+s"):
        choose_plan(0.05, COST, knobs(), **SHAPE)


def test_controller_raises_threshold_when_behind():
    class Block:
        threshold = 0.1

    sch = Schedule(Plan(10, "teacache", 0.1), 1.0, 1.0, 1)
    ctl = Controller(sch, loop_budget_s=0.01, start=time.perf_counter() - 0.5)  # far behind
    blk = Block()
    ctl.after_step(2, blk)
    assert blk.threshold > 0.1 and sch.replans and sch.replans[0]["after_step"] == 2


def test_pipeline_latency_target_and_deadline(tiny_wan, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDRT_CACHE_DIR", str(tmp_path))
    from vidrt.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(tiny_wan)
    kw = dict(height=32, width=32, num_frames=5, steps=6, progress=False, max_sequence_length=16)
    v = pipe("a red circle", latency_target=60.0, **kw)
    from vidrt.caching.scheduler import calibrate_cost

    assert 0.0 <= calibrate_cost(pipe).step_s < 1.0   # measured with the model, cached per key
    s = v.stats["schedule"]
    assert s["plan"]["steps"] == 6 and s["predicted_s"] <= 60.0 and s["actual_s"] > 0
    with pytest.raises(vidrt.LatencyError, match="impossible"):
        pipe("a red circle", latency_target=1e-4, **kw)
    with pytest.raises(vidrt.LatencyError, match="deadline already passed"):
        pipe("a red circle", deadline=time.time() - 1, **kw)

    # a deadline mid-run: stop cleanly after some steps, still return a decoded clip
    calls = {"n": 0}
    real = pipe.transformer.forward

    def slow(*a, **k):
        calls["n"] += 1
        time.sleep(0.15)
        return real(*a, **k)

    monkeypatch.setattr(pipe.transformer, "forward", slow)
    v = pipe("a red circle", deadline=time.time() + 0.4, **{**kw, "steps": 20})
    st = v.stats["stopped"]
    assert st["reason"] == "deadline" and 1 <= st["completed_steps"] < 20
    assert v.frames.shape == (5, 32, 32, 3)


def test_cost_model_is_rescaled_when_the_machine_slows_down(tiny_wan, tmp_path, monkeypatch):
    """A cached cost model from a less loaded moment: the DiT call timed now against its prediction rescales
    every term (and the plan records the factor); within 10 % the model is kept as is; beyond 25 % off it is
    measured again and the new measurement replaces the cached one."""
    monkeypatch.setenv("VIDRT_CACHE_DIR", str(tmp_path))
    from vidrt.caching import scheduler
    from vidrt.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(tiny_wan)
    cost = scheduler.calibrate_cost(pipe)
    fast = cost.scaled(1 / 1.2)  # "calibrated" while the machine was 1.2x faster than now
    assert fast.load_factor == pytest.approx(1 / 1.2)
    assert fast.dit_call(100, 2) == pytest.approx(cost.dit_call(100, 2) / 1.2)
    timer = scheduler._dit_call_timer
    monkeypatch.setattr(scheduler, "_dit_call_timer",
                        lambda p: (lambda grid, b: fast.dit_call(grid[0] * grid[1] * grid[2], b) * 1.2))
    back = scheduler.rescaled_for_load(pipe, fast)
    assert back.load_factor == pytest.approx(1.0) and back.load_check == "rescaled"
    for a, b in zip((back.text_s, *back.dit, *back.vae, back.step_s), (cost.text_s, *cost.dit, *cost.vae, cost.step_s)):
        assert a == pytest.approx(b)
    monkeypatch.setattr(scheduler, "_dit_call_timer",
                        lambda p: (lambda grid, b: cost.dit_call(grid[0] * grid[1] * grid[2], b) * 1.05))
    kept = scheduler.rescaled_for_load(pipe, cost)
    assert kept.load_check == "kept" and kept.dit == cost.dit and kept.load_factor == 1.0
    # 4x off: measured again (with this fake timer every DiT call now takes 4x the cached model's time)
    monkeypatch.setattr(scheduler, "_dit_call_timer",
                        lambda p: (lambda grid, b: cost.dit_call(grid[0] * grid[1] * grid[2], b) * 4.0))
    path = scheduler._key_file(scheduler.cost_key(pipe))
    again = scheduler.rescaled_for_load(pipe, cost)
    assert again.load_check == "recalibrated" and again.load_factor == pytest.approx(4.0)
    assert again.dit_call(300, 2) == pytest.approx(4.0 * cost.dit_call(300, 2), rel=1e-3)
    cached = scheduler.CostModel.from_json(json.loads(path.read_text()))
    assert cached.dit_call(300, 2) == pytest.approx(again.dit_call(300, 2))  # the new measurement is cached
    assert "load_check" not in json.loads(path.read_text())
    monkeypatch.setattr(scheduler, "_dit_call_timer", timer)
    # the real timer on this model: a positive time, and the pipeline's plan records the factor it used
    assert timer(pipe)((1, 2, 2), 2) > 0
    v = pipe("a red circle", latency_target=60.0, height=32, width=32, num_frames=5, steps=4, progress=False,
             max_sequence_length=16)
    assert v.stats["schedule"]["load_factor"] > 0


def test_load_probe_times_the_request_grid(tiny_wan, tmp_path, monkeypatch):
    """The probe grid is the request's token grid, cut to PROBE_MAX_TOKENS (frames first); Pipeline.plan probes it."""
    monkeypatch.setenv("VIDRT_CACHE_DIR", str(tmp_path))
    from vidrt.caching import scheduler
    from vidrt.caching.scheduler import PROBE_MAX_TOKENS, probe_grid
    from vidrt.pipeline import Pipeline

    assert probe_grid((5, 8, 8)) == (5, 8, 8) and PROBE_MAX_TOKENS == 320
    assert probe_grid((9, 8, 8)) == (5, 8, 8)          # 576 tokens: frames cut first
    assert probe_grid((9, 16, 16)) == (1, 16, 16)      # 256 tokens: one frame fits
    assert probe_grid((3, 32, 32)) == (1, 10, 32)      # one frame is too big: rows cut next
    for g in ((1, 1, 1), (2, 3, 4), (17, 45, 80), (1, 1, 999)):
        t, h, w = probe_grid(g)
        assert 1 <= t <= g[0] and 1 <= h <= g[1] and 1 <= w <= g[2] and t * h * w <= max(PROBE_MAX_TOKENS, 1)
    pipe = Pipeline.from_pretrained(tiny_wan)
    scheduler.calibrate_cost(pipe)
    grids = []
    real = scheduler._dit_call_timer

    def spy(p):
        timer = real(p)
        return lambda grid, b: (grids.append(grid), timer(grid, b))[1]

    monkeypatch.setattr(scheduler, "_dit_call_timer", spy)
    pipe("a red circle", latency_target=60.0, height=32, width=32, num_frames=5, steps=2, progress=False,
         max_sequence_length=16)
    pt, ph, pw = pipe.transformer.config.patch_size
    assert grids[0] == probe_grid((2 // pt, 4 // ph, 4 // pw))


def test_prediction_counts_cached_keys_and_the_commit():
    """A KV-cached chunk attends to its past: every call's attention term grows with the cached tokens, and the
    chunk's commit forward is one more call; nothing changes without them."""
    cost = CostModel({"device": "cpu"}, text_s=0.1, dit=(0.01, 1e-4, 1e-6), vae=(0.05, 0.0))
    kw = dict(tokens=100, batch=1, voxels=10, cfg=True)
    plain = predict_seconds(Plan(4), cost, **kw)
    assert plain == pytest.approx(predict_seconds(Plan(4), cost, kv_tokens=0, commit_kv_tokens=None, **kw))
    cached = predict_seconds(Plan(4), cost, kv_tokens=300, **kw)
    assert cached - plain == pytest.approx(4 * 1e-6 * 100 * 300 * 2)    # 4 CFG steps at batch 2
    committed = predict_seconds(Plan(4), cost, kv_tokens=300, commit_kv_tokens=100, **kw)
    assert committed - cached == pytest.approx(cost.dit_call(100, 2, 100))


def test_predict_prices_guidance_per_step():
    """cfg as a function of the step count: each step's guidance priced on its own (two-expert models with one scale
    <= 1, guidance intervals), between all-guided and none."""
    from vidrt.caching.scheduler import Plan, predict_seconds

    kw = dict(tokens=256, batch=1, voxels=64)
    plan = Plan(8, None, 0.0, 1)
    every, never = (predict_seconds(plan, COST, cfg=c, **kw) for c in (True, False))
    assert predict_seconds(plan, COST, cfg=lambda n: [True] * n, **kw) == pytest.approx(every)
    assert predict_seconds(plan, COST, cfg=lambda n: [False] * n, **kw) == pytest.approx(never)
    half = predict_seconds(plan, COST, cfg=lambda n: [i < n // 2 for i in range(n)], **kw)
    one_call = COST.dit_call(256, 1)
    assert half == pytest.approx(never + 4 * (COST.dit_call(256, 2) - one_call))


def test_cost_fit_never_prices_more_work_as_cheaper():
    """Overhead-dominated, noisy timings (a tiny model) fit by plain least squares give a negative per-token term,
    so a CFG call (batch 2) is priced below an unguided one; the fit keeps every term >= 0 and is exact on clean
    data."""
    import numpy as np

    from vidrt.caching.scheduler import nonnegative_fit

    n = np.array([16, 16, 108, 108, 320, 320], float)
    b = np.array([1, 2, 1, 2, 1, 2], float)
    x = np.stack([np.ones_like(n), n * b, n * n * b], 1)
    exact = np.array([2e-3, 3e-6, 1e-9])
    assert nonnegative_fit(x, x @ exact) == pytest.approx(exact, rel=1e-6)
    noisy = np.array([5.1e-3, 5.0e-3, 5.2e-3, 4.9e-3, 5.0e-3, 4.8e-3])   # flat: more work measured a bit faster
    plain, *_ = np.linalg.lstsq(x, noisy, rcond=None)
    assert plain[1] < 0 or plain[2] < 0
    fit = nonnegative_fit(x, noisy)
    assert (fit >= 0).all() and fit[0] == pytest.approx(noisy.mean(), rel=1e-6)
    cost = CostModel({}, 0.0, tuple(fit), (0.0, 0.0))
    assert cost.dit_call(320, 2) >= cost.dit_call(320, 1) >= cost.dit_call(16, 1)
