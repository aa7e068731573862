"""`vidrt calibrate`: fit TeaCache's polynomial, measure each speed plan's quality, time this device."""
from __future__ import annotations

import argparse
import json

from vidrt.cli import _add_model_args, _load, check_output, check_positive, command, read_prompts, write_text
from vidrt.errors import ConfigError

DEGREE = 4  # of TeaCache's rescaling polynomial


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < v < float("inf") for v in values):
        raise ConfigError(f"--thresholds {text!r}: give TeaCache thresholds above 0 as a comma list, e.g. 0.1,0.2,0.4")
    return values


def _check_points(n_prompts: int, steps: int) -> None:
    """Each prompt gives steps - 1 calibration points (consecutive-step pairs); the fit needs more than DEGREE."""
    points = n_prompts * (steps - 1)
    if points <= DEGREE:
        need = DEGREE // n_prompts + 2
        raise ConfigError(f"{n_prompts} prompt(s) x {steps} steps give only {points} calibration points; the "
                          f"degree-{DEGREE} TeaCache fit needs at least {DEGREE + 1}: use --steps {need} or more, "
                          "or more prompts")


def _add(p: argparse.ArgumentParser) -> None:
    _add_model_args(p)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="exact-path steps (default: the model's)")
    p.add_argument("--prompts", default=None, help="file with one prompt per line (default: world prompts)")
    p.add_argument("--thresholds", default="0.1,0.2,0.4", help="TeaCache thresholds to measure")
    p.add_argument("--skip-quality", action="store_true", help="only fit TeaCache and time the device")
    p.add_argument("--json", default=None, help="also write the calibration here")


@command("calibrate", "fit step-cache and latency-scheduler calibration for a model on this device")(_add)
def _calibrate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from vidrt.caching.calibration import DEFAULT_PROMPTS, fit_teacache, measure_knobs, save_calibration
    from vidrt.caching.scheduler import calibrate_cost, candidate_plans, knobs_to_json

    check_positive(args, "threads", "steps", "height", "width", "frames")
    check_output(args.json, "--json")
    prompts = read_prompts(args.prompts) if args.prompts else list(DEFAULT_PROMPTS)
    thresholds = _thresholds(args.thresholds)
    if args.steps is not None:
        _check_points(len(prompts), args.steps)
    pipe = _load(args)
    d = pipe.defaults
    h = d.height if args.height is None else args.height
    w = d.width if args.width is None else args.width
    frames = min(d.num_frames, 17) if args.frames is None else args.frames
    steps = d.steps if args.steps is None else args.steps
    _check_points(len(prompts), steps)
    gen = dict(height=h, width=w, num_frames=frames, steps=steps)
    with tqdm(total=len(prompts), desc="fit teacache", unit="prompt") as bar:
        try:
            fits = fit_teacache(pipe, prompts, degree=DEGREE, progress=lambda i: bar.update(), **gen)
        except ValueError as e:
            if "calibration points" not in str(e):
                raise
            raise ConfigError(str(e)) from None
    coeffs = fits[0]
    pipe.teacache_coefficients = tuple(coeffs)
    data = {"teacache_coefficients": coeffs}
    if len(fits) > 1:   # a two-expert model: transformer_2's own rescaling
        pipe.teacache_coefficients_2 = tuple(fits[1])
        data["teacache_coefficients_2"] = fits[1]
    cost = calibrate_cost(pipe, refresh=True)
    data["calibrated_at"] = {"height": h, "width": w, "num_frames": frames, "steps": steps, "prompts": prompts}
    if not args.skip_quality:
        plans = candidate_plans(steps, thresholds)
        with tqdm(total=len(plans) * len(prompts), desc="measure plans", unit="run") as bar:
            knobs = measure_knobs(pipe, plans, prompts, height=h, width=w, num_frames=frames, exact_steps=steps,
                                  progress=bar.update)
        data["knobs"] = knobs_to_json(knobs)
    path = save_calibration(pipe.source, data)
    print(f"calibration written to {path}; TeaCache coefficients "
          f"{' / '.join(str(['%.4g' % c for c in f]) for f in fits)}; "
          f"DiT call ~{cost.dit_call(64, 2) * 1000:.1f} ms at 64 tokens x 2")
    if args.json:
        write_text(args.json, json.dumps(data, indent=2))
    return 0
