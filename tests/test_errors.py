"""The README's bad-input table: every row raises the named VidrtError with a message naming the fix."""
import logging

import pytest
import torch

import vidrt
from vidrt.cli import main as cli_main
from vidrt.pipeline import Pipeline

SMALL = dict(height=32, width=32, steps=1, progress=False, max_sequence_length=16)


@pytest.fixture(scope="module")
def pipe(tiny_wan):
    return Pipeline.from_pretrained(tiny_wan)


@pytest.mark.parametrize("frames", [0, 2, 4, 6, 32])
def test_frame_count_not_4k_plus_1(pipe, frames):
    with pytest.raises(vidrt.ShapeError, match=r"4k\+1.*Use \d+ or \d+"):
        pipe("a red circle", num_frames=frames, **SMALL)


@pytest.mark.parametrize("h,w", [(30, 32), (32, 40), (0, 32)])
def test_size_not_multiple_of_16(pipe, h, w):
    args = {**SMALL, "height": h, "width": w}
    with pytest.raises(vidrt.ShapeError, match="multiples of 16x16"):
        pipe("a red circle", num_frames=1, **args)


def test_wrong_latents_shape(pipe):
    with pytest.raises(vidrt.ShapeError, match="latents have shape"):
        pipe("a red circle", num_frames=5, latents=torch.randn(1, 16, 1, 4, 4), **SMALL)


def test_unknown_precision_and_backend(tiny_wan):
    with pytest.raises(vidrt.ConfigError, match="unknown precision 'fp64'.*fp32, bf16, fp16"):
        Pipeline.from_pretrained(tiny_wan, precision="fp64")
    with pytest.raises(vidrt.ConfigError, match="unknown attention backend 'xformers'.*sdpa"):
        Pipeline.from_pretrained(tiny_wan, attention="xformers")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_not_available(tiny_wan):
    with pytest.raises(vidrt.DeviceError, match="CUDA is not available.*device='cpu'"):
        Pipeline.from_pretrained(tiny_wan, device="cuda")


def test_unknown_sampler_and_bad_steps(pipe):
    with pytest.raises(vidrt.ConfigError):
        pipe("a red circle", num_frames=1, sampler="ddim", **SMALL)
    with pytest.raises(vidrt.ConfigError, match="steps"):
        pipe("a red circle", num_frames=1, **{**SMALL, "steps": 0})


def test_long_text_truncates_with_warning(pipe, caplog):
    long = " ".join(["red circle"] * 20)
    with caplog.at_level(logging.WARNING):
        v = pipe(long, num_frames=1, **SMALL)
    assert v.frames.shape == (1, 32, 32, 3)
    assert any("truncated" in r.message for r in caplog.records)


def test_unknown_words_warn_naming_them(pipe, caplog):
    with caplog.at_level(logging.WARNING):
        pipe("a red circle moves sideways", num_frames=1, **SMALL)
    msgs = [r.message for r in caplog.records if "vocabulary" in r.message]
    assert len(msgs) == 1 and "'sideways'" in msgs[0] and "'red'" not in msgs[0] and "grammar" in msgs[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipe("a red circle moves right", num_frames=1, **SMALL)
    assert not [r for r in caplog.records if "vocabulary" in r.message]


def test_cli_reports_errors_without_traceback(tiny_wan, capsys):
    rc = cli_main(["generate", "a red circle", "--model", str(tiny_wan), "--frames", "6", "--steps", "1",
                   "--height", "32", "--width", "32"])
    err = capsys.readouterr().err
    assert rc == 2 and "4k+1" in err and "Traceback" not in err


def test_cli_generate_writes_mp4_and_json(tiny_wan, tmp_path):
    import json

    import imageio.v3 as iio

    out, js = tmp_path / "clip.mp4", tmp_path / "run.json"
    rc = cli_main(["generate", "a red circle moves right", "--model", str(tiny_wan), "--frames", "9", "--steps", "2",
                   "--height", "32", "--width", "48", "-o", str(out), "--json", str(js)])
    assert rc == 0
    frames = iio.imread(out)
    assert frames.shape == (9, 32, 48, 3)
    stats = json.loads(js.read_text())
    assert stats["num_frames"] == 9 and stats["steps"] == 2 and stats["total_s"] > 0


def test_image_save_png(pipe, tmp_path):
    from PIL import Image

    v = pipe("a blue square", num_frames=1, **SMALL)
    p = v.save(tmp_path / "img.png")
    assert Image.open(p).size == (32, 32)
    with pytest.raises(vidrt.ConfigError, match="cannot save x.flv: use one of .mp4"):
        v.save(tmp_path / "x.flv")


def test_cli_info(capsys):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch:" in out and "sdpa: ok" in out


def test_embedded_causal_model_loads_or_says_how_to_get_it(monkeypatch, tmp_path):
    """'default-causal' = the embedded VAE + text encoder with the causal DiT; absent -> a CheckpointError
    naming the fix (checked with the package's causal folder pointed at an empty directory)."""
    import vidrt.pipeline as P

    if P.embedded_causal_transformer() is not None:
        pipe = vidrt.Pipeline.from_pretrained("default-causal")
        assert pipe.transformer.config.num_frame_per_block > 0
    real = P.embedded_model_path
    monkeypatch.setattr(P, "embedded_model_path", lambda causal=False: tmp_path if causal else real())
    with pytest.raises(vidrt.CheckpointError, match="train it with tools/train_default_model.py"):
        vidrt.Pipeline.from_pretrained("default-causal")
    with pytest.raises(vidrt.ConfigError, match="already names its transformer"):
        vidrt.Pipeline.from_pretrained("default-causal", transformer=tmp_path)


def test_embedded_models_fit_the_package_budget():
    """The embedded default model and its causal DiT ship as package data: safetensors <= 40 MB together, and
    the causal DiT has the default DiT's architecture (it runs on the same VAE and text encoder)."""
    import json

    import vidrt.pipeline as P

    base, causal = P.embedded_model_path(), P.embedded_model_path(causal=True)
    if not (base / "model_index.json").is_file():
        pytest.skip("this build has no embedded model")
    size = sum(f.stat().st_size for d in (base, causal) for f in d.rglob("*.safetensors"))
    assert size <= 40e6, f"embedded models take {size / 1e6:.1f} MB of safetensors (budget 40 MB)"
    if P.embedded_causal_transformer() is not None:
        a, b = (json.loads((d / "transformer" / "config.json").read_text()) for d in (base, causal))
        keys = ("num_attention_heads", "attention_head_dim", "num_layers", "ffn_dim", "text_dim")
        assert all(a[k] == b[k] for k in keys)


def test_cli_stream_defaults_to_the_embedded_causal_model(tmp_path):
    """`vidrt stream` without --model runs the embedded causal variant (KV-cached chunks) when it is bundled."""
    import json

    import vidrt.pipeline as P

    if P.embedded_causal_transformer() is None:
        pytest.skip("this build has no embedded causal model")
    out, js = tmp_path / "s.mp4", tmp_path / "s.json"
    assert cli_main(["stream", "a red circle moves right", "--seconds", "1.5", "--steps", "2", "-o", str(out),
                     "--json", str(js), "--no-progress", "--threads", "1"]) == 0
    rec = json.loads(js.read_text())
    assert rec["mode"].startswith("causal") and len(rec["chunks"]) >= 2 and out.stat().st_size > 0
