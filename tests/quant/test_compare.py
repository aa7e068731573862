"""vidrt compare on a tiny model: report fields present and plausible."""
import json

import pytest


def test_compare_report_tiny(tiny_wan, tmp_path, capsys):
    from vidrt.cli import main

    out = tmp_path / "c.json"
    rc = main(["compare", "--model", str(tiny_wan), "--precision", "fp32,bf16,fp8,int8", "--backend", "torch",
               "--frames", "5", "--height", "16", "--width", "32", "--steps", "2", "--no-warmup",
               "--json", str(out), "--markdown", str(tmp_path / "c.md"), "--plot", str(tmp_path / "c.png")])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["schema"] == "vidrt.compare/1" and rep["request"]["latent_shape"] == [1, 16, 2, 2, 4]
    cases = {(c["backend"], c["precision"]): c for c in rep["cases"]}
    assert list(cases) == [("torch", "fp32"), ("torch", "bf16"), ("torch", "fp8"), ("torch", "int8")]
    fp32, bf16 = cases[("torch", "fp32")], cases[("torch", "bf16")]
    assert fp32["psnr_db"] == "inf" and fp32["ssim"] == pytest.approx(1.0) and fp32["speed_ratio"] == 1.0
    for c in cases.values():
        assert c["status"] == "ok" and c["step_s"] > 0 and c["total_s"] > c["step_s"]
        assert c["model_bytes"] > 0 and c["adherence"] is not None and 0 <= c["adherence"] <= 1
        assert len(c["per_prompt"]) == 2
    assert 20 < bf16["psnr_db"] < 200 and bf16["ssim"] <= 1.0
    assert cases[("torch", "fp8")]["model_bytes"] < cases[("torch", "bf16")]["model_bytes"] < fp32["model_bytes"]
    md = (tmp_path / "c.md").read_text()
    assert "| torch | fp8 |" in md and (tmp_path / "c.png").stat().st_size > 1000


def test_compare_bad_inputs(tiny_wan, tmp_path):
    import vidrt
    from vidrt.quant.compare import CompareConfig, run_compare

    with pytest.raises(vidrt.ConfigError, match="unknown precision 'fp4'"):
        run_compare(CompareConfig(model=str(tiny_wan), precisions=["fp4"]))
    with pytest.raises(vidrt.ConfigError, match="unknown backend"):
        run_compare(CompareConfig(model=str(tiny_wan), backends=["tvm"]))
    cfg = CompareConfig(model=str(tiny_wan), precisions=["fp16"], backends=["tensorrt"], num_frames=1, height=16,
                        width=16, steps=1, warmup=False, prompts=["a red circle"])
    rep = run_compare(cfg, progress=False)
    trt = rep["cases"][1]
    assert trt["backend"] == "tensorrt" and trt["status"] in ("skipped", "ok") and (trt["reason"] or trt["total_s"])
