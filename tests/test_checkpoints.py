"""Checkpoint formats: original Wan layout, component swaps, and clear errors for bad checkpoints."""
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from functools import partial

from vidrt.metrics import psnr as _psnr

psnr = partial(_psnr, peak=1.0)  # frames as floats in [0, 1]

from vidrt.checkpoints.wan_original import dit_key_to_original
from vidrt.errors import CheckpointError
from vidrt.pipeline import Pipeline
from vidrt.testing import to_original_layout

GEN = dict(height=32, width=32, num_frames=5, steps=2, seed=0, max_sequence_length=16, progress=False)


def test_original_wan_layout_gives_same_frames(tiny_wan, tmp_path):
    orig = to_original_layout(tiny_wan, tmp_path / "orig")
    a = Pipeline.from_pretrained(tiny_wan)("a red circle moves left", **GEN)
    b = Pipeline.from_pretrained(orig)("a red circle moves left", **GEN)
    assert b.frames.shape == a.frames.shape
    assert psnr(a.frames / 255.0, b.frames / 255.0) >= 60.0


def test_transformer_swap_folder_and_bare_file(tiny_wan, tmp_path):
    base = Pipeline.from_pretrained(tiny_wan)
    sd = {k: v.clone() for k, v in base.transformer.state_dict().items()}
    sd["proj_out.bias"] += 0.5  # a "fine-tuned" DiT
    save_file(sd, tmp_path / "finetuned.safetensors")
    swapped = Pipeline.from_pretrained(tiny_wan, transformer=tmp_path / "finetuned.safetensors")
    assert torch.equal(swapped.transformer.proj_out.bias, sd["proj_out.bias"])
    a, b = base("a blue square", **GEN), swapped("a blue square", **GEN)
    assert not np.array_equal(a.frames, b.frames)
    # a diffusers transformer folder swaps in the same way (here: the base one -> identical frames)
    same = Pipeline.from_pretrained(tiny_wan, transformer=tiny_wan / "transformer")
    assert np.array_equal(same("a blue square", **GEN).frames, a.frames)
    # an original-layout bare file with Wan's key names also loads
    torch.save({dit_key_to_original(k): v for k, v in sd.items()}, tmp_path / "orig_keys.pth")
    c = Pipeline.from_pretrained(tiny_wan, transformer=tmp_path / "orig_keys.pth")
    assert torch.equal(c.transformer.proj_out.bias, sd["proj_out.bias"])


def test_precision_load_keeps_fp32_modules(tiny_wan):
    pipe = Pipeline.from_pretrained(tiny_wan, precision="bf16")
    dit = pipe.transformer
    assert dit.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert dit.blocks[0].scale_shift_table.dtype == torch.float32
    assert dit.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    v = pipe("a red circle", **GEN)
    ref = Pipeline.from_pretrained(tiny_wan)("a red circle", **GEN)
    assert 20.0 <= psnr(v.frames / 255.0, ref.frames / 255.0) < float("inf")


@pytest.fixture
def broken(tiny_wan, tmp_path):
    dst = tmp_path / "broken"
    shutil.copytree(tiny_wan, dst)
    return dst


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Pipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="neither a diffusers"):
        Pipeline.from_pretrained(tmp_path)


def test_missing_component_is_clear(broken):
    shutil.rmtree(broken / "vae")
    with pytest.raises(CheckpointError, match="lacks component folder.*vae"):
        Pipeline.from_pretrained(broken)


def test_corrupt_weights_are_clear(broken):
    f = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: 200])
    with pytest.raises(CheckpointError, match="corrupt"):
        Pipeline.from_pretrained(broken)


def test_missing_and_mismatched_keys_are_named(broken):
    f = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(f)
    del sd["blocks.1.attn2.to_k.weight"]
    sd["blocks.0.ffn.net.2.bias"] = torch.zeros(3)
    sd["extra.thing"] = torch.zeros(1)
    save_file(sd, f)
    with pytest.raises(CheckpointError) as e:
        Pipeline.from_pretrained(broken)
    msg = str(e.value)
    assert "blocks.1.attn2.to_k.weight" in msg and "missing" in msg
    assert "extra.thing" in msg and "unexpected" in msg
    assert "blocks.0.ffn.net.2.bias" in msg and "shape" in msg


def test_pickle_with_objects_is_refused(tiny_wan, tmp_path):
    import collections

    bad = tmp_path / "evil.pth"
    torch.save({"weight": collections.Counter(a=1)}, bad)  # not a tensor: weights_only refuses it
    with pytest.raises(CheckpointError, match="cannot read weights|not a flat tensor"):
        Pipeline.from_pretrained(tiny_wan, transformer=bad)


def test_corrupt_json_is_clear(broken):
    (broken / "transformer" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Pipeline.from_pretrained(broken)


def test_original_wan22_ti2v_release_gives_the_diffusers_folders_frames(tmp_path):
    """TI2V-5B's original layout (model_type "ti2v", Wan2.2_VAE.pth with vae2_2.py's names, structure read off the
    tensors) gives the frames of the same model's diffusers folder; its release settings (24 fps, shift 5) apply."""
    from vidrt.testing import make_tiny_wan

    folder = make_tiny_wan(tmp_path / "ti2v", wan22_vae=True)
    orig = to_original_layout(folder, tmp_path / "orig")
    assert (orig / "Wan2.2_VAE.pth").is_file()
    shutil.copy(to_original_layout(make_tiny_wan(tmp_path / "w21"), tmp_path / "o21") / "Wan2.1_VAE.pth", orig)
    # (a stray Wan 2.1 VAE beside it: the ti2v model takes its own Wan2.2_VAE.pth)
    (orig / "vae_config.json").unlink()   # the structure from the tensors alone (Wan 2.1's 16-channel statistics)
    p = Pipeline.from_pretrained(orig)
    assert p.vae.config.is_residual and p.vae.spatial_factor == 16 and p.defaults.fps == 24.0
    assert p.scheduler_config["flow_shift"] == 5.0
    kw = dict(height=32, width=32, num_frames=5, steps=2, seed=0, max_sequence_length=16, progress=False, shift=3.0)
    a = Pipeline.from_pretrained(folder)("a red circle moves left", **kw)
    b = p("a red circle moves left", **kw)
    assert psnr(a.frames / 255.0, b.frames / 255.0) >= 60.0
