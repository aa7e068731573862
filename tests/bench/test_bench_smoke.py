"""CI smoke test: `vidrt bench` on a tiny shape with the diffusers baseline, through vidrt.cli.main."""

import pytest

from vidrt.bench import schema
from vidrt.cli import main
from vidrt.pipeline import embedded_model_path


def test_smoke_run_writes_valid_plausible_results(smoke_run, tiny_wan):
    rc, doc, paths = smoke_run
    assert rc == 0
    assert schema.validate(doc) == []
    assert doc["schema"] == "vidrt.bench/1"
    assert doc["environment"]["device"] == "cpu" and doc["environment"]["threads"] == 1
    assert doc["settings"] == {"steps": 2, "guidance": 5.0, "text_len": 16, "warmup": 1, "repeats": 3, "seed": 0,
                               "baseline": "diffusers"}
    assert doc["model"]["config"]["num_attention_heads"] == 2 and doc["model"]["config"]["dit_parameters"] > 0
    assert [c["id"] for c in doc["cases"]] == ["16x16x5-b1", "32x32x5-b1"]
    for case, tokens in zip(doc["cases"], (2 * 1 * 1, 2 * 2 * 2)):  # T'=2, H'/2 x W'/2 patches
        assert case["tokens"] == tokens
        assert case["latent_shape"] == [1, 16, 2, case["height"] // 8, case["width"] // 8]
        ours, ref = case["results"]
        assert (ours["runtime"], ours["label"], ref["runtime"]) == ("vidrt", "vidrt fp32 sdpa", "diffusers")
        for r in (ours, ref):
            lat = r["latency_s"]
            assert lat["n"] == 3 and len(lat["samples"]) == 3
            assert 0 < lat["min"] <= lat["p10"] <= lat["median"] <= lat["p90"] <= lat["max"] < 60
            st = {k: r["stages"][k]["median"] for k in ("text_s", "dit_s", "dit_per_step_s", "vae_s")}
            assert all(v > 0 for v in st.values())
            assert st["dit_per_step_s"] == pytest.approx(st["dit_s"] / 2, rel=1e-6)
            # the stages are parts of the call: they cannot add up to more than it
            assert st["text_s"] + st["dit_s"] + st["vae_s"] <= lat["max"] * 1.01
            th = r["throughput"]
            assert th["videos_per_min"] == pytest.approx(60 / lat["median"])
            assert th["frames_per_s"] == pytest.approx(5 / lat["median"])
            assert th["dit_tokens_per_s"] == pytest.approx(tokens * 2 * 2 / st["dit_s"])  # CFG x 2 steps
            mem = r["memory"]
            assert mem["peak_rss_mb"] >= mem["start_rss_mb"] > 50 and mem["peak_rss_delta_mb"] >= 0
            assert mem["cuda_max_allocated_mb"] is None
        # the exact path is the reference; diffusers on the same latents draws the same frames
        assert ours["quality"]["is_exact_reference"] and ours["quality"]["psnr_vs_exact_db"] is None
        psnr = ref["quality"]["psnr_vs_exact_db"]
        assert psnr is None or psnr >= 40
        assert ours["speedup_vs_baseline"] == pytest.approx(ref["latency_s"]["median"] / ours["latency_s"]["median"])
        assert set(ours["stage_speedup_vs_baseline"]) == {"text_s", "dit_per_step_s", "vae_s"}
        assert ref["speedup_vs_baseline"] is None
    assert any("adherence" in n for n in doc["notes"])
    md = paths["md"].read_text()
    assert md.count("| vidrt fp32 sdpa |") == 2 and md.count("| diffusers fp32 |") == 2
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batch_sweep_and_precision_quality(tiny_wan, tmp_path):
    out = tmp_path / "r.json"
    rc = main(["bench", "--model", str(tiny_wan), "--shapes", "16x16x5", "--batch", "1,2", "--steps", "2",
               "--repeats", "1", "--warmup", "0", "--text-len", "8", "--precision", "bf16", "--quality", "on",
               "--no-progress", "--json", str(out)])
    assert rc == 0
    import json

    doc = json.loads(out.read_text())
    assert [c["batch"] for c in doc["cases"]] == [1, 2]
    b2 = doc["cases"][1]
    assert len(b2["prompts"]) == 2 and b2["latent_shape"][0] == 2
    (r,) = b2["results"]
    assert r["label"] == "vidrt bf16 sdpa" and not r["quality"]["is_exact_reference"]
    # bf16 drifts from the fp32 exact path, but not into noise
    assert r["quality"]["psnr_vs_exact_db"] is not None and 15 < r["quality"]["psnr_vs_exact_db"] < 100
    assert r["throughput"]["frames_per_s"] == pytest.approx(2 * 5 / r["latency_s"]["median"])


@pytest.mark.parametrize("extra, words", [
    (["--backend", "onnx"], ["--backend onnx is not available yet", "--backend torch"]),
    (["--backend", "tvm"], ["--backend tvm is unknown"]),
    (["--cache", "magic"], ["--cache magic is not available", "none"]),
    (["--baseline", "xformers"], ["unknown baseline", "diffusers"]),
    (["--shapes", "17x16x5"], ["multiples of 16"]),
    (["--shapes", "16x16"], ["HxWxF"]),
    (["--shapes", "16x16x6"], ["4k+1", "5 or 9"]),
    (["--batch", "0"], ["positive integers"]),
    (["--repeats", "0"], ["repeats >= 1"]),
    (["--attention", "nope"], ["unknown attention backend"]),
])
def test_bad_options_exit_2_with_the_fix(tiny_wan, capsys, extra, words):
    args = ["bench", "--model", str(tiny_wan), "--shapes", "16x16x5", "--steps", "1", "--no-progress"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidrt bench: error:")
    for w in words:
        assert w in err


def test_device_is_checked_before_a_random_model_is_built(capsys, tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--model", "random:wan1.3b", "--workdir", str(tmp_path), "--device", "cuda"]) == 2
    assert "device='cpu'" in capsys.readouterr().err
    assert not (tmp_path / "random-wan1.3b").exists()


def test_model_default_and_random_presets(capsys, tmp_path):
    if (embedded_model_path() / "model_index.json").is_file():
        pytest.skip("the embedded model is present in this build (the missing-model error cannot happen)")
    assert main(["bench", "--model", "default", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "embedded default model is not in this build" in err and "--model random:" in err
    assert main(["bench", "--model", "random:huge", "--no-progress"]) == 2
    assert "random:tiny" in capsys.readouterr().err
    assert main(["bench", "--model", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_random_tiny_preset_is_built_and_run(tmp_path, capsys):
    args = ["bench", "--model", "random:tiny", "--workdir", str(tmp_path), "--shapes", "16x16x1", "--steps", "1",
            "--repeats", "1", "--warmup", "0", "--text-len", "4", "--no-progress"]
    assert main(args) == 0
    assert (tmp_path / "random-tiny" / "model_index.json").is_file()
    assert "random weights" in capsys.readouterr().out


def test_embedded_model_gets_world_prompts_and_adherence(tiny_wan, monkeypatch):
    """The embedded-model path (world prompts, PSNR vs exact at bf16, adherence) on the tiny model standing in."""
    from vidrt.bench import runner
    from vidrt.bench.model_spec import ModelSpec
    from vidrt.world import parse

    monkeypatch.setattr(runner, "resolve_model", lambda spec, workdir=None: ModelSpec("default", tiny_wan, True, False))
    doc = runner.run_bench(runner.BenchConfig(model="default", shapes=[(16, 16, 5)], steps=1, precision="bf16",
                                              warmup=0, repeats=1, text_len=8), progress=False)
    case = doc["cases"][0]
    parse(case["prompts"][0])  # a prompt of the world grammar
    q = case["results"][0]["quality"]
    assert 0.0 <= q["adherence"] <= 1.0 and q["psnr_vs_exact_db"] is not None
    assert not any("adherence" in n for n in doc["notes"])
    assert doc["model"]["embedded"] is True
