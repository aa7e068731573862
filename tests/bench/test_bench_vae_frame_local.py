"""benchmarks/bench_vae_frame_local.py: both paths run on the same frame-local weights and agree."""
from __future__ import annotations

import json
from pathlib import Path

from vidrt.testing import load_script

REPO = Path(__file__).resolve().parents[2]


def test_frame_local_bench_reports_both_paths_and_they_agree(tmp_path):
    bench = load_script(REPO / "benchmarks" / "bench_vae_frame_local.py")
    out = tmp_path / "r.json"
    assert bench.main(["--repeats", "1", "--sizes", "5x32x32", "--json", str(out),
                       "--markdown", str(tmp_path / "r.md")]) == 0
    (res,) = json.loads(out.read_text())["results"]
    for op in ("encode", "decode"):
        assert res[op]["fast_ms"] > 0 and res[op]["full_ms"] > 0
        assert res[op]["max_abs_diff"] <= 1e-5
    assert "| 5x32x32 | decode |" in (tmp_path / "r.md").read_text()
    from vidrt.models.vae import CausalConv3d

    assert CausalConv3d.skip_zero_past  # the switch is restored
