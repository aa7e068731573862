"""TensorRT: everything that needs no TensorRT runtime runs here; engine tests skip without tensorrt + GPU."""
import importlib.util

import pytest
import torch

import vidrt
from vidrt.export.tensorrt_build import (Request, check_graph_for_tensorrt, check_precision_for_gpu,
                                         derive_profiles, engine_cache_key)

onnx = pytest.importorskip("onnx")
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
NEEDS_TRT = pytest.mark.skipif(not HAVE_TRT, reason="needs the tensorrt package and a CUDA GPU (no machine here has "
                                                    "TensorRT: engine builds are untested in this project)")


@pytest.fixture(scope="module")
def manifest(onnx_dir):
    from vidrt.export.onnx_export import load_manifest

    return load_manifest(onnx_dir)


def test_profiles_cover_requests(manifest):
    reqs = [Request(17, 64, 48, 1), Request(1, 16, 32, 2), Request(33, 32, 32, 1, cfg=False)]
    p = derive_profiles(manifest, reqs)
    lat = p["transformer"].shapes["latents"]
    assert lat[0] == (1, 16, 1, 2, 4)  # min: CFG-free batch 1, 1 latent frame, 16x32 -> 2x4
    assert lat[2] == (4, 16, 9, 8, 6)  # max: batch 2 x CFG, 33 frames -> 9, 64x48 -> 8x6
    assert lat[1] == (4, 16, 1, 2, 4)  # opt: the largest batch request
    L = manifest["text"]["max_length"]
    assert p["transformer"].shapes["context"][2] == (4, L, 16)
    assert p["vae_decoder"].shapes["latents"][2] == (2, 16, 9, 8, 6)
    assert p["text_encoder"].shapes["input_ids"] == ((1, L), (4, L), (4, L))
    for r in reqs:
        b = r.batch * (2 if r.cfg else 1)
        assert p["transformer"].covers("latents", (b, 16, (r.num_frames - 1) // 4 + 1, r.height // 8, r.width // 8))
    assert not p["transformer"].covers("latents", (1, 16, 10, 2, 4))
    with pytest.raises(vidrt.ShapeError, match="4k\\+1"):
        derive_profiles(manifest, [Request(6, 16, 16)])
    with pytest.raises(vidrt.ShapeError, match="multiple of 16x16"):
        derive_profiles(manifest, [Request(5, 20, 16)])


def test_engine_cache_key_changes_with_every_part(manifest):
    prof = derive_profiles(manifest, [Request(5, 32, 32)])["transformer"]
    base = dict(model_hash="abc", component="transformer", profile=prof, precision="fp16", trt_version="10.3.0",
                gpu="NVIDIA H100", capability=(9, 0), graph_sha256="g")
    k = engine_cache_key(**base)
    assert len(k) == 24 and k == engine_cache_key(**base)
    other = derive_profiles(manifest, [Request(9, 32, 32)])["transformer"]
    for change in (dict(model_hash="abd"), dict(profile=other), dict(precision="bf16"), dict(trt_version="10.4.0"),
                   dict(gpu="NVIDIA L4"), dict(capability=(8, 9)), dict(component="vae_decoder"),
                   dict(graph_sha256="h")):
        assert engine_cache_key(**{**base, **change}) != k, change


def test_precision_flags_by_gpu():
    check_precision_for_gpu("fp8", (9, 0))
    check_precision_for_gpu("bf16", (8, 0))
    with pytest.raises(vidrt.DeviceError, match="8.9.*choose one of fp32, fp16, bf16, int8$"):
        check_precision_for_gpu("fp8", (8, 6))
    with pytest.raises(vidrt.DeviceError, match="choose one of fp32, fp16, int8$"):
        check_precision_for_gpu("bf16", (7, 5))
    with pytest.raises(vidrt.ConfigError, match="fp32, fp16, bf16, fp8, int8"):
        check_precision_for_gpu("int4", (9, 0))


def test_exported_graphs_pass_tensorrt_checks(onnx_dir):
    from vidrt.export.onnx_export import FILES

    for f in FILES.values():
        assert [i for i in check_graph_for_tensorrt(onnx_dir / f) if i.severity == "error"] == []
    warn = check_graph_for_tensorrt(onnx_dir / "transformer.onnx", "fp8")
    assert any("Q/DQ" in i.message for i in warn)


def test_graph_checks_catch_what_tensorrt_rejects(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Unique", ["x"], ["u"]), helper.make_node("Cast", ["u"], ["c"], to=TensorProto.DOUBLE),
             helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 15)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    msgs = [i.message for i in check_graph_for_tensorrt(tmp_path / "bad.onnx") if i.severity == "error"]
    assert any("opset 15" in m for m in msgs) and any("Unique" in m for m in msgs)
    assert any("casts to double" in m for m in msgs) and any("x is double" in m for m in msgs)
    assert any("no rank" in m for m in msgs)


def test_tensorrt_backend_unavailable_is_clear(onnx_dir):
    if HAVE_TRT:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(vidrt.BackendUnavailableError, match="backend='onnxruntime'"):
        vidrt.Pipeline.from_pretrained(onnx_dir, backend="tensorrt")


def test_export_cli_check_only(onnx_dir, tmp_path, capsys):
    import json

    from vidrt.cli import main

    assert main(["export", "tensorrt", "--onnx", str(onnx_dir), "--shapes", "32x32x5,16x16x1", "--check-only",
                 "--json", str(tmp_path / "t.json")]) == 0
    rep = json.loads((tmp_path / "t.json").read_text())
    assert rep["profiles"]["transformer"]["latents"]["max"] == [2, 16, 2, 4, 4]
    assert "graphs ready for TensorRT" in capsys.readouterr().out
    assert main(["export", "tensorrt", "--onnx", str(onnx_dir), "--shapes", "32x32", "--check-only"]) == 2


@NEEDS_TRT
def test_tensorrt_pipeline_matches_torch(onnx_dir, tiny_wan, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("VIDRT_CACHE", str(tmp_path))
    ref = vidrt.Pipeline.from_pretrained(tiny_wan, device="cuda")
    pipe = vidrt.Pipeline.from_pretrained(onnx_dir, backend="tensorrt", device="cuda", precision="fp32")
    kw = dict(num_frames=1, height=16, width=16, steps=2, seed=0, progress=False)
    a, b = ref("a red circle", **kw).frames, pipe("a red circle", **kw).frames
    assert 10 * np.log10(255 ** 2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-12)) >= 40
