"""benchmarks/bench_storage.py on the embedded model: the VAE's fp16 rounding and the DiTs' int8 storage measured,
with the numbers bounded where they are known (fp16 weights move a decode by a pixel level or so; int8 rows halve
a DiT's bytes with under half a percent of weight error)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_storage_bench_on_the_embedded_model(tmp_path):
    import vidrt.pipeline as P

    if not (P.embedded_model_path() / "model_index.json").is_file():
        pytest.skip("this build has no embedded model")
    bench = load_script(ROOT / "benchmarks/bench_storage.py")
    assert bench.main(["--prompts", "1", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "storage.json").read_text())
    assert [x["size"] for x in r["vae"]] == ["1x64x64", "17x64x64", "33x64x64"]
    for x in r["vae"]:
        assert 20 < x["psnr_fp32"] < 60 and abs(x["psnr_fp16"] - x["psnr_fp32"]) < 0.1
        assert x["psnr_between"] > 55 and 0 <= x["max_pixel_diff"] <= 3
    for x in r["dit"]:
        assert x["int8_mb"] < 0.6 * x["shipped_mb"] and 0 < x["max_rel_weight_error"] < 0.005
    assert "| default-causal |" in (tmp_path / "storage.md").read_text()
