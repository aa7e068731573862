"""int8 weight storage (vidrt.quant.storage): what is written, what loaders read back, and the errors."""
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import vidrt
from vidrt.checkpoints.load import load_transformer
from vidrt.checkpoints.state import LazyStateDict, weight_files
from vidrt.errors import CheckpointError
from vidrt.quant import dequantize, quantize_dit, quantize_int8
from vidrt.quant.storage import int8_state, save_int8


def _int8_copy(tiny_wan, tmp_path):
    """tiny_wan with its transformer stored in int8 (the rest of the folder as it is)."""
    out = tmp_path / "wan_int8"
    shutil.copytree(tiny_wan, out)
    src = LazyStateDict(weight_files(tiny_wan / "transformer"))
    for f in (out / "transformer").glob("*.safetensors"):
        f.unlink()
    save_int8({k: src[k] for k in src}, out / "transformer" / "diffusion_pytorch_model.safetensors")
    return out


def test_int8_storage_writes_block_linears_as_int8_rows(tiny_wan, tmp_path):
    """Only the policy's block linears become int8 + one fp32 scale per row, the rest fp16 (as an fp16 export); the
    codes are the int8 precision mode's, and the state must be float to start."""
    out = _int8_copy(tiny_wan, tmp_path)
    with safe_open(str(out / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
        q = f.get_tensor("blocks.0.attn1.to_q.weight")
        s = f.get_tensor("blocks.0.attn1.to_q.weight_scale")
    int8 = sorted(k for k, d in dtypes.items() if d == "I8")
    assert len(int8) == 2 * 10 and all(k.startswith("blocks.") for k in int8)   # 2 blocks x (4 + 4 + 2)
    assert all(dtypes[k + "_scale"] == "F32" for k in int8)
    assert dtypes["blocks.0.scale_shift_table"] == "F16" and dtypes["blocks.0.norm2.weight"] == "F16"
    assert dtypes["proj_out.weight"] == "F16" and dtypes["patch_embedding.weight"] == "F16"
    w = LazyStateDict(weight_files(tiny_wan / "transformer"))["blocks.0.attn1.to_q.weight"]
    q_ref, s_ref = quantize_int8(w)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref) and s.shape == (w.shape[0], 1)
    with pytest.raises(ValueError, match="already holds int8 storage"):
        int8_state({"a.weight": q.float(), "a.weight_scale": s})


def test_int8_storage_loads_as_the_dequantized_weights(tiny_wan, tmp_path):
    """Loaders see the same keys as the float checkpoint (scales are not keys) and the weights q * scale; the int8
    precision mode on the stored model holds exactly the codes it holds on the original; a pipeline on the stored
    transformer generates close to the original."""
    out = _int8_copy(tiny_wan, tmp_path)
    ref_state = LazyStateDict(weight_files(tiny_wan / "transformer"))
    state = LazyStateDict(weight_files(out / "transformer"))
    assert sorted(state) == sorted(ref_state) and len(state) == len(ref_state)
    with pytest.raises(KeyError):
        state["blocks.0.attn1.to_q.weight_scale"]
    ref, dit = load_transformer(tiny_wan / "transformer"), load_transformer(out / "transformer")
    w = ref.blocks[1].ffn.net[2].weight
    assert torch.equal(dit.blocks[1].ffn.net[2].weight, dequantize(*quantize_int8(w)))
    assert not torch.equal(dit.blocks[1].ffn.net[2].weight, w)   # lossy: the check above can fail
    assert torch.equal(dit.blocks[0].scale_shift_table, ref.blocks[0].scale_shift_table.half().float())
    assert dit.blocks[0].scale_shift_table.dtype == torch.float32   # fp32-kept modules load as fp32
    assert torch.equal(dit.proj_out.weight, ref.proj_out.weight.half().float())
    quantize_dit(ref, "int8")
    quantize_dit(dit, "int8")
    for name, m in ref.named_modules():
        if hasattr(m, "qweight"):
            other = dit.get_submodule(name)
            assert torch.equal(m.qweight, other.qweight), name
            torch.testing.assert_close(m.weight_scale, other.weight_scale, rtol=1e-6, atol=0)

    kw = dict(num_frames=5, height=16, width=32, steps=2, seed=0, progress=False, output="latent")
    base = vidrt.Pipeline.from_pretrained(tiny_wan)("a red circle moves left", **kw)
    lat = vidrt.Pipeline.from_pretrained(out)("a red circle moves left", **kw)
    err = ((lat - base).norm() / base.norm()).item()
    assert 0 < err < 0.02, err


def test_int8_storage_with_bad_scales_is_named(tiny_wan, tmp_path):
    out = _int8_copy(tiny_wan, tmp_path)
    path = out / "transformer" / "diffusion_pytorch_model.safetensors"
    state = LazyStateDict([path])
    raw = {k: state._raw(k) for k in state._where}
    raw["blocks.0.attn1.to_q.weight_scale"] = raw["blocks.0.attn1.to_q.weight_scale"][:3]
    del state
    save_file(raw, str(path))
    with pytest.raises(CheckpointError, match="one scale per row"):
        load_transformer(out / "transformer")
