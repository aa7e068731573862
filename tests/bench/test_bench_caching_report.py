"""benchmarks/bench_caching.py keeps what it measured: a latency target that became impossible mid-run (the machine
slowed down since the targets were chosen) is a skipped row, not the end of a 30-minute run (session 11 lost one
that way), and the report writes partial results."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vidrt.errors import LatencyError
from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[2]


class _Pipe:
    """Meets any latency target at 0.9x it, except those under ``floor`` seconds, which it refuses."""

    source = "stub/model"

    def __init__(self, floor: float):
        self.floor, self.cost_load_check, self.checks = floor, True, []

    def __call__(self, prompt, *, latency_target, **kw):
        self.checks.append(self.cost_load_check)
        if latency_target < self.floor:
            raise LatencyError(f"latency target {latency_target:.2f}s is impossible here")
        frames = np.full((1, 8, 8, 3), 100, np.uint8)
        return SimpleNamespace(frames=frames, stats={"total_s": 0.9 * latency_target,
                                                     "schedule": {"label": "10 steps", "load_factor": 1.0}})


def test_an_impossible_target_is_a_skipped_row_and_the_report_keeps_the_rest(tmp_path):
    bench = load_script(ROOT / "benchmarks/bench_caching.py")
    pipe = _Pipe(floor=1.0)
    gen = {"height": 64, "width": 64, "num_frames": 17, "steps": 20, "guidance": 3.0, "seed": 0, "progress": False}
    exact = SimpleNamespace(frames=np.full((1, 8, 8, 3), 100, np.uint8))
    rows = [bench.target_row(pipe, gen, t, exact, runs=2) for t in (0.5, 2.0)]
    assert rows[0] == {"target_s": 0.5, "skipped": "latency target 0.50s is impossible here"}
    assert rows[1]["actual_over_target_median"] == pytest.approx(0.9) and rows[1]["plan"] == "10 steps"
    assert pipe.cost_load_check is True and pipe.checks.count(False) == 2   # restored after the interleaved runs
    args = SimpleNamespace(json=str(tmp_path / "c.json"), markdown=str(tmp_path / "c.md"))
    bench.report(args, pipe, gen, ["a red circle moves right"], [], rows)
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["scheduler_summary"] == {"within_15pct": 1, "within_15pct_without_load_check": 1, "targets": 1,
                                        "skipped": 1, "quality_monotone": True}
    md = (tmp_path / "c.md").read_text()
    assert "| 0.50 s | skipped: latency target 0.50s is impossible here |" in md
    assert "1 of 1 measured targets within +-15 %" in md
