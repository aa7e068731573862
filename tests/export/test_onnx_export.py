"""ONNX export: checked graphs, manifest, really dynamic axes, and onnxruntime generation == torch."""
import json

import numpy as np
import pytest
import torch

from vidrt.errors import CheckpointError, ConfigError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_manifest_and_checked_graphs(onnx_dir, tiny_wan):
    from vidrt.export.onnx_export import FILES, MANIFEST, load_manifest, model_hash

    m = load_manifest(onnx_dir)
    assert m["model_hash"] == model_hash(tiny_wan) and len(m["model_hash"]) == 16
    assert m["opset"] >= 18 and m["precision"] == "fp32"
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    for name, file in FILES.items():
        g = m["graphs"][name]
        assert g["file"] == file and not g["external_data"]
        model = onnx.load(str(onnx_dir / file))
        onnx.checker.check_model(model)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    dit_in = m["graphs"]["transformer"]["inputs"]
    assert dit_in["latents"]["shape"] == ["batch", 16, "latent_frames", "latent_height", "latent_width"]
    assert dit_in["context"]["shape"] == ["batch", "text_len", 16]
    assert m["graphs"]["text_encoder"]["inputs"]["input_ids"]["shape"] == ["batch", "text_len"]
    assert json.loads((onnx_dir / MANIFEST).read_text())["dit_config"]["num_layers"] == 2


@pytest.mark.parametrize("shape,text_len", [((1, 16, 1, 2, 2), 3), ((3, 16, 2, 6, 4), 11), ((2, 16, 4, 4, 8), 5)])
def test_dit_graph_dynamic_shapes_match_torch(onnx_dir, tiny_wan, shape, text_len):
    from vidrt.checkpoints.load import load_transformer

    dit = load_transformer(tiny_wan / "transformer")
    sess = ort.InferenceSession(str(onnx_dir / "transformer.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(sum(shape))
    x, t = torch.randn(shape, generator=g), torch.rand(shape[0], generator=g) * 1000
    c = torch.randn(shape[0], text_len, 16, generator=g)
    out = sess.run(None, {"latents": x.numpy(), "timestep": t.numpy(), "context": c.numpy()})[0]
    ref = dit(x, t, c)
    assert out.shape == tuple(ref.shape)
    assert (torch.from_numpy(out) - ref).abs().max() / ref.abs().max() < 1e-5


@pytest.mark.parametrize("shape", [(1, 16, 1, 2, 2), (2, 16, 3, 3, 5)])
def test_vae_decoder_graph_matches_streamed_decode(onnx_dir, tiny_wan, shape):
    from vidrt.checkpoints.load import load_vae, resolve_layout

    vae = load_vae(resolve_layout(tiny_wan))
    sess = ort.InferenceSession(str(onnx_dir / "vae_decoder.onnx"), providers=["CPUExecutionProvider"])
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    stream = vae.stream_decoder()
    zr = vae.denormalize(z)
    ref = torch.cat([stream.decode(zr[:, :, i:i + 1]) for i in range(shape[2])], 2)  # the Pipeline's decode
    out = sess.run(None, {"latents": z.numpy()})[0]
    assert out.shape == (shape[0], 3, 1 + 4 * (shape[2] - 1), 8 * shape[3], 8 * shape[4])
    assert np.abs(out - ref.numpy()).max() < 1e-5


def test_onnxruntime_pipeline_matches_torch_on_three_shapes(onnx_dir, tiny_wan):
    """One exported folder, three request sizes (an image, non-square, several frames): frames PSNR >= 40 dB."""
    from vidrt import Pipeline

    ref = Pipeline.from_pretrained(tiny_wan)
    pipe = Pipeline.from_pretrained(onnx_dir, backend="onnxruntime")
    assert pipe.backend == "onnxruntime"
    for frames, h, w in [(1, 16, 16), (5, 16, 48), (9, 32, 16)]:
        kw = dict(num_frames=frames, height=h, width=w, steps=3, guidance=4.0, seed=frames, progress=False)
        a = ref(["a red circle moves left", "blue square"], **kw)
        b = pipe(["a red circle moves left", "blue square"], **kw)
        for va, vb in zip(a, b):
            assert vb.frames.shape == (frames, h, w, 3)
            assert psnr(va.frames, vb.frames) >= 40.0
        la = ref("green circle", output="latent", **kw)
        lb = pipe("green circle", output="latent", **kw)
        assert (la - lb).abs().max() / la.abs().max() < 1e-4


def test_checkpoint_folder_is_exported_into_cache(tiny_wan, tmp_path, monkeypatch):
    from vidrt import Pipeline

    monkeypatch.setenv("VIDRT_CACHE", str(tmp_path))
    pipe = Pipeline.from_pretrained(tiny_wan, backend="onnxruntime")
    cached = list((tmp_path / "onnx").iterdir())
    assert len(cached) == 1 and cached[0].name.endswith("-fp32")
    assert pipe.onnx_manifest["source"] == str(tiny_wan)


def test_fp16_export_keeps_fp32_policy_modules(tiny_wan, tmp_path):
    from vidrt.export.onnx_export import export_onnx

    m = export_onnx(tiny_wan, tmp_path / "fp16", precision="fp16", components=("transformer",))
    model = onnx.load(str(tmp_path / "fp16" / "transformer.onnx"))
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert m["precision"] == "fp16" and m["graphs"]["transformer"]["inputs"]["latents"]["dtype"] == "float32"
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    half = sum(sizes[n] for n, t in types.items() if t == onnx.TensorProto.FLOAT16)
    assert half > 0.8 * sum(sizes.values())  # block linears are fp16 (their names are folded into MatMuls)
    assert all(t == onnx.TensorProto.FLOAT for n, t in types.items() if "time_embedder" in n)
    assert all(t == onnx.TensorProto.FLOAT for n, t in types.items() if "scale_shift_table" in n)


def test_external_data_when_asked(tiny_wan, tmp_path):
    from vidrt.export.onnx_export import export_onnx

    m = export_onnx(tiny_wan, tmp_path / "ext", components=("transformer",), external_data=True)
    assert m["graphs"]["transformer"]["external_data"]
    assert (tmp_path / "ext" / "transformer.onnx.data").stat().st_size > 1000
    onnx.checker.check_model(str(tmp_path / "ext" / "transformer.onnx"))


def test_bad_requests(tiny_wan, onnx_dir, tmp_path):
    from vidrt import Pipeline
    from vidrt.export.onnx_export import export_onnx, load_manifest

    with pytest.raises(ConfigError, match="fp32, fp16"):
        export_onnx(tiny_wan, tmp_path / "x", precision="int4")
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(tiny_wan, tmp_path / "x", opset=13)
    with pytest.raises(CheckpointError, match="vidrt export onnx"):
        load_manifest(tmp_path)
    with pytest.raises(ConfigError, match="torch, onnxruntime, tensorrt"):
        Pipeline.from_pretrained(onnx_dir, backend="openvino")
    with pytest.raises(ConfigError, match="exported at fp32"):
        Pipeline.from_pretrained(onnx_dir, backend="onnxruntime", precision="fp16")
    pipe = Pipeline.from_pretrained(onnx_dir, backend="onnxruntime")
    with pytest.raises(ConfigError, match="backend='torch'"):
        pipe("a red circle", num_frames=1, height=16, width=16, steps=2, cache="teacache", cache_threshold=0.1,
             progress=False)


def test_wan22_vae_decoder_graph_matches_on_dynamic_shapes(tmp_path):
    """Wan 2.2's residual VAE (shortcuts, 2x2 unpatchify) exports as one shape-generic decoder graph."""
    from vidrt.checkpoints.load import load_vae, resolve_layout
    from vidrt.export.onnx_export import export_onnx
    from vidrt.testing import make_tiny_wan

    folder = make_tiny_wan(tmp_path / "ti2v", wan22_vae=True)
    export_onnx(folder, tmp_path / "onnx", components=("vae_decoder",))
    vae = load_vae(resolve_layout(folder))
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "vae_decoder.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 16, 1, 2, 2), (2, 16, 3, 4, 2), (1, 16, 4, 2, 3)]:
        z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        out = torch.from_numpy(sess.run(None, {"latents": z.numpy()})[0])
        with torch.no_grad():
            ref = vae.decode(vae.denormalize(z))
        assert out.shape == ref.shape == (shape[0], 3, 1 + 4 * (shape[2] - 1), 16 * shape[3], 16 * shape[4])
        assert float((out - ref).abs().max()) < 1e-4 and float(ref.std()) > 0.05


def test_verifier_travels_with_the_export(tiny_wan, tmp_path):
    """A model folder's best-of-N verifier is copied into its export, so candidates=N works on onnxruntime too."""
    import shutil

    from vidrt import Pipeline
    from vidrt.export.onnx_export import export_onnx
    from vidrt.world.verifier import VerifierConfig, WorldVerifier, save_verifier

    model = tmp_path / "wan"
    shutil.copytree(tiny_wan, model)
    save_verifier(WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2)), model / "verifier")
    export_onnx(model, tmp_path / "onnx")
    assert (tmp_path / "onnx" / "verifier" / "model.safetensors").is_file()
    pipe = Pipeline.from_pretrained(tmp_path / "onnx", backend="onnxruntime")
    video = pipe("a red circle", num_frames=5, height=32, width=32, steps=2, candidates=2, progress=False)
    assert video.stats["candidates"]["n"] == 2 and video.frames.shape == (5, 32, 32, 3)
