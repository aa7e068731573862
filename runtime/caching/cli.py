"""`vidrt calibrate`: fit TeaCache's polynomial, measure each speed plan's quality, time this device."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidrt.cli import _add_model_args, _load, command


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

    pipe = _load(args)
    d = pipe.defaults
    prompts = (Path(args.prompts).read_text().split("\n") if args.prompts else list(DEFAULT_PROMPTS))
    prompts = [p.strip() for p in prompts if p.strip()]
    h, w = args.height or d.height, args.width or d.width
    frames = args.frames or min(d.num_frames, 17)
    steps = args.steps or d.steps
    gen = dict(height=h, width=w, num_frames=frames, steps=steps)
    with tqdm(total=len(prompts), desc="fit teacache", unit="prompt") as bar:
        coeffs = fit_teacache(pipe, prompts, progress=lambda i: bar.update(), **gen)
    pipe.teacache_coefficients = tuple(coeffs)
    cost = calibrate_cost(pipe, refresh=True)
    data = {"teacache_coefficients": coeffs, "calibrated_at": {"height": h, "width": w, "num_frames": frames,
                                                              "steps": steps, "prompts": prompts}}
    if not args.skip_quality:
        thresholds = [float(x) for x in args.thresholds.split(",") if x]
        plans = candidate_plans(steps, thresholds)
        with tqdm(total=len(plans) * len(prompts), desc="measure plans", unit="run") as bar:
            knobs = measure_knobs(pipe, plans, prompts, height=h, width=w, num_frames=frames, exact_steps=steps,
                                  progress=bar.update)
        data["knobs"] = knobs_to_json(knobs)
    path = save_calibration(pipe.source, data)
    print(f"calibration written to {path}; TeaCache coefficients {['%.4g' % c for c in coeffs]}; "
          f"DiT call ~{cost.dit_call(64, 2) * 1000:.1f} ms at 64 tokens x 2")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 0
