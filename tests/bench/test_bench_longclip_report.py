"""benchmarks/bench_longclip.py's report on a real result: the shot list as criteria and per-shot objects."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_drift_table_runs_each_kv_window(tmp_path, monkeypatch):
    """--drift with --window-frames: one row per KV window, each stream given that window, the table saying which."""
    from vidrt.pipeline import Pipeline

    bench = load_script(ROOT / "benchmarks/bench_longclip.py")
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    windows = []
    real_stream = Pipeline.stream

    def spy(self, shots, **kw):
        windows.append(kw.get("window_frames"))
        return real_stream(self, shots, **kw)

    monkeypatch.setattr(Pipeline, "stream", spy)
    assert bench.main(["--random", "--chunk-frames", "1", "--drift", "2", "--seconds", "6", "--height", "32",
                       "--width", "32", "--steps", "1", "--context-noise", "0", "--window-frames", "1,2",
                       "--name", "d"]) == 0
    assert windows == [1, 1, 2, 2]
    res = json.loads((tmp_path / "d.json").read_text())
    assert [r["window_frames"] for r in res["rows"]] == [1, 2]
    assert all(len(r["adherence_per_5s"]) == 1 and len(r["per_prompt"]) == 2 for r in res["rows"])
    assert all(abs(sum(r["per_prompt"]) / 2 - r["mean"]) < 1e-3 for r in res["rows"])
    md = (tmp_path / "d.md").read_text()
    assert "KV window (latent frames)" in md and "| 0 | window | 1 |" in md and "| 0 | window | 2 |" in md
    # a stream too short for one 5 s window is refused by name, not an IndexError
    with pytest.raises(SystemExit, match="--seconds 6 or more"):
        bench.main(["--random", "--chunk-frames", "1", "--drift", "1", "--seconds", "3", "--height", "32", "--width",
                    "32", "--steps", "1", "--context-noise", "0", "--name", "e"])
