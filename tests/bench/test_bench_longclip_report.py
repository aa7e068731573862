"""benchmarks/bench_longclip.py's report on a real result: the shot list as criteria and per-shot objects."""
from __future__ import annotations

import json
from pathlib import Path

from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_shot_list_is_reported_per_criterion_and_per_shot():
    bench = load_script(ROOT / "benchmarks/bench_longclip.py")
    result = json.loads((ROOT / "benchmarks/results/longclip.json").read_text())
    sl = result["long"]["shot_list_score"]
    md = bench._markdown(result)
    assert f"continuity {sl['continuity']:.2f}" in md
    if sl.get("identity") is not None:
        assert f"identity {sl['identity']:.2f}" in md
    lines = [x for x in md.splitlines() if x.startswith("- shot ")]
    assert len(lines) == len(sl["shots"]) and "red circle present" in lines[0]
