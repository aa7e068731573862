"""Fused adaLN modulate, RMSNorm and gated residual vs their torch references (and diffusers' Wan ops)."""
import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'vidrt[triton]')")

from vidrt.kernels.adaln import layernorm_modulate, layernorm_modulate_reference  # noqa: E402
from vidrt.kernels.gated_residual import gated_residual, gated_residual_reference  # noqa: E402
from vidrt.kernels.rmsnorm import rms_norm, rms_norm_reference  # noqa: E402

# the interpreter truncates fp32 -> bf16 (GPUs round to nearest): allow 1 bf16 ulp more
RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1.6e-2}


def _rand(*shape, dtype=torch.float32, device="cpu", seed=0, mean=0.0, std=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * std + mean).to(device, dtype)


def _close(a, b, dtype):
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a.float(), b.float(), rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("per_token", [False, True])
def test_adaln_matches_reference(dtype, per_token, device):
    b, n, c = 2, 37, 96
    x = _rand(b, n, c, dtype=dtype, device=device, mean=0.5, std=3.0)
    scale = _rand(b, n if per_token else 1, c, device=device, seed=1, std=0.3)   # fp32, as Wan's temb path
    shift = _rand(b, n if per_token else 1, c, device=device, seed=2)
    _close(layernorm_modulate(x, shift, scale), layernorm_modulate_reference(x, shift, scale), dtype)


def test_adaln_matches_diffusers_wan_formula(device):
    x = _rand(1, 5, 130, dtype=torch.bfloat16, device=device)
    scale, shift = _rand(1, 1, 130, device=device, seed=3), _rand(1, 1, 130, device=device, seed=4)
    norm = torch.nn.LayerNorm(130, eps=1e-6, elementwise_affine=False)
    wan = (norm(x.float()) * (1 + scale) + shift).type_as(x)
    _close(layernorm_modulate(x, shift, scale, eps=1e-6), wan, torch.bfloat16)
    out32 = layernorm_modulate(x, shift, scale, out_dtype=torch.float32)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, norm(x.float()) * (1 + scale) + shift, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rmsnorm_matches_torch_rmsnorm_across_heads(dtype, device):
    b, n, heads, hd = 2, 11, 3, 32
    x = _rand(b, n, heads * hd, dtype=dtype, device=device, std=2.0)
    norm = torch.nn.RMSNorm(heads * hd, eps=1e-6).to(device)
    with torch.no_grad():
        norm.weight.copy_(_rand(heads * hd, seed=5))
    w = norm.weight.detach().to(dtype)
    _close(rms_norm(x, w), rms_norm_reference(x, w), dtype)
    if dtype == torch.float32:
        torch.testing.assert_close(rms_norm(x, w), norm(x), rtol=1e-5, atol=1e-5)


def test_rmsnorm_any_leading_shape_and_noncontiguous(device):
    x = _rand(3, 4, 5, 48, device=device).transpose(0, 1)
    w = _rand(48, seed=6, device=device)
    _close(rms_norm(x, w), rms_norm_reference(x, w), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_token", [False, True])
def test_gated_residual(dtype, per_token, device):
    b, n, c = 2, 9, 300
    x = _rand(b, n, c, dtype=dtype, device=device)
    y = _rand(b, n, c, dtype=dtype, device=device, seed=7)
    gate = _rand(b, n if per_token else 1, c, device=device, seed=8)
    out = gated_residual(x, y, gate)
    _close(out, gated_residual_reference(x, y, gate), dtype)
    wan = (x.float() + y * gate).type_as(x)
    _close(out, wan, dtype)


def test_single_token_and_broadcast_batch(device):
    x = _rand(3, 1, 64, device=device)
    scale, shift = _rand(1, 1, 64, device=device, seed=9), _rand(3, 1, 64, device=device, seed=10)
    _close(layernorm_modulate(x, shift, scale), layernorm_modulate_reference(x, shift, scale), torch.float32)


def test_bad_inputs(device):
    x = _rand(2, 5, 32, device=device)
    with pytest.raises(ValueError, match=r"scale has shape \(2, 5, 16\)"):
        layernorm_modulate(x, x, x[..., :16])
    with pytest.raises(ValueError, match=r"shift has shape \(2, 2, 32\)"):
        layernorm_modulate(x, x[:, :2], x[:, :1])
    with pytest.raises(ValueError, match="batch, tokens, channels"):
        layernorm_modulate(x[0], x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="weight shape"):
        rms_norm(x, torch.ones(31, device=device))
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        rms_norm(x.double(), torch.ones(32, device=device))
    with pytest.raises(ValueError, match="one shape"):
        gated_residual(x, x[:, :4], x[:, :1])
    with pytest.raises(ValueError, match="gate has shape"):
        gated_residual(x, x, x[:1, :2])


@pytest.mark.parametrize("per_token", [False, True])
def test_dit_block_call_pattern_with_strided_modulation_views(per_token, device):
    """As runtime/models/dit.py calls them: shift/scale/gate unbound from a (B, 1|L, 6, C) tensor."""
    b, n, c = 2, 7, 64
    x = _rand(b, n, c, dtype=torch.bfloat16, device=device)
    y = _rand(b, n, c, dtype=torch.bfloat16, device=device, seed=11)
    mod = _rand(b, n if per_token else 1, 6, c, device=device, seed=12)
    shift, scale, gate = mod.unbind(-2)[:3]
    assert not shift.is_contiguous()
    norm = torch.nn.LayerNorm(c, eps=1e-6, elementwise_affine=False)
    _close(layernorm_modulate(x, shift, scale, 1e-6), (norm(x.float()) * (1 + scale) + shift).type_as(x), torch.bfloat16)
    _close(gated_residual(x, y, gate), (x.float() + y.float() * gate).type_as(x), torch.bfloat16)
