"""fp8 / int8 quantization: rounding against independent references, kernels vs emulation, policy, errors."""
import pytest
import torch

import vidrt
from vidrt.quant import (FP8Linear, Int8DynamicLinear, Int8WeightOnlyLinear, dequantize, fp8_matmul_emulated,
                         fp8_supported, model_bytes, quantize_dit, quantize_fp8, quantize_int8, torchao_available)

ALL_E4M3 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
FINITE_E4M3 = torch.unique(ALL_E4M3[torch.isfinite(ALL_E4M3)])


def test_fp8_codes_are_nearest_e4m3_values():
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, 16)[:, None]
    q, s = quantize_fp8(x)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (16, 1)
    v = x / s  # the value each code should round
    dist = (v[..., None] - FINITE_E4M3).abs()
    nearest = FINITE_E4M3[dist.argmin(-1)]
    two_best = dist.topk(2, largest=False).values
    clear = (two_best[..., 1] - two_best[..., 0]) > 1e-6 * v.abs().clamp_min(1)  # skip exact ties
    assert torch.equal(q.float()[clear], nearest[clear])
    assert torch.equal(q.float().abs().amax(1), torch.full((16,), 448.0))  # every row's max maps to 448
    rel = ((dequantize(q, s) - x).abs() / x.abs().clamp_min(1e-30))[x.abs() > s * 2 ** -6]  # normal range
    assert rel.max() <= 2 ** -4 + 1e-6  # half an ulp of a 3-bit mantissa


def test_int8_codes_round_half_even_and_reconstruct():
    x = torch.tensor([[127.0, 0.5, 1.5, -2.5, -127.0, 3.49]])
    q, s = quantize_int8(x)
    assert s.item() == 1.0 and q.tolist() == [[127, 0, 2, -2, -127, 3]]
    y = torch.randn(8, 40)
    q, s = quantize_int8(y)
    assert (dequantize(q, s) - y).abs().max() <= s.max() / 2 + 1e-7


def test_fp8_emulation_matches_float64_reference():
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(48, 24)
    x = torch.randn(10, 48, generator=g)
    layer = FP8Linear(lin, torch.float32)
    xq, xs = quantize_fp8(x)
    ref = (dequantize(xq, xs).double() @ layer.dequantized_weight().double().t() + lin.bias.double()).float()
    out = layer(x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(out, fp8_matmul_emulated(xq, xs, layer.qweight, layer.weight_scale, layer.bias, torch.float32))
    exact = lin(x)
    assert 1e-3 < ((out - exact).norm() / exact.norm()).item() < 0.08  # fp8 error: present, bounded


@pytest.mark.skipif(not fp8_supported(torch.device("cuda")) if torch.cuda.is_available() else True,
                    reason="needs a CUDA GPU with fp8 (compute capability >= 8.9) for torch._scaled_mm")
def test_fp8_scaled_mm_matches_emulation_on_gpu():
    lin = torch.nn.Linear(256, 128).cuda()
    layer = FP8Linear(lin, torch.bfloat16)
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    gpu = layer(x).float()
    layer.emulate = True
    emu = layer(x).float()
    assert (gpu - emu).abs().max() <= 2e-2 * emu.abs().max()


def test_int8_dynamic_int_mm_equals_exact_emulation():
    lin = torch.nn.Linear(40, 24)
    layer = Int8DynamicLinear(lin, torch.float32)
    x = torch.randn(3, 7, 40)
    fast = layer(x)
    layer.emulate = True
    assert torch.equal(fast, layer(x))
    assert fast.shape == (3, 7, 24)
    assert ((fast - lin(x)).norm() / lin(x).norm()).item() < 0.03


@pytest.mark.parametrize("in_features", [64, 40])  # 64: torch's int8 weight-only kernel; 40: dequantized matmul
def test_int8_weight_only_kernel_and_fallback(in_features):
    lin = torch.nn.Linear(in_features, 24)
    layer = Int8WeightOnlyLinear(lin, torch.float32)
    x = torch.randn(5, in_features)
    out = layer(x)
    ref = x @ layer.dequantized_weight().t() + lin.bias
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert ((out - lin(x)).norm() / lin(x).norm()).item() < 0.02


def _dit(tiny_wan):
    from vidrt.checkpoints.load import load_transformer

    return load_transformer(tiny_wan / "transformer")


def test_policy_quantizes_block_linears_only(tiny_wan):
    dit = _dit(tiny_wan)
    before = model_bytes(dit)
    report = quantize_dit(dit, "fp8")
    assert report.engine == "vidrt" and len(report.quantized) == 2 * 10  # 2 blocks x (4 + 4 + 2)
    assert all(n.startswith("blocks.") for n in report.quantized)
    assert isinstance(dit.blocks[0].ffn.net[2], FP8Linear) and isinstance(dit.blocks[1].attn2.to_out[0], FP8Linear)
    assert isinstance(dit.proj_out, torch.nn.Linear) and dit.proj_out.weight.dtype == torch.bfloat16
    assert dit.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert dit.condition_embedder.time_proj.weight.dtype == torch.bfloat16
    assert dit.blocks[0].scale_shift_table.dtype == torch.float32
    assert dit.blocks[0].norm2.weight.dtype == torch.float32
    assert report.model_bytes == model_bytes(dit) < 0.5 * before


@pytest.mark.skipif(not torchao_available(), reason="torchao is not installed (pip install 'vidrt[quant]')")
@pytest.mark.parametrize("mode", ["int8", "int8_dynamic"])
def test_torchao_engine_agrees_with_vidrt_layers(tiny_wan, mode):
    g = torch.Generator().manual_seed(3)
    x, t, c = torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([700.0]), torch.randn(1, 5, 16, generator=g)
    ref = _dit(tiny_wan)(x, t, c)
    outs = {}
    for engine in ("vidrt", "torchao"):
        dit = _dit(tiny_wan)
        assert quantize_dit(dit, mode, engine=engine).engine == engine
        outs[engine] = dit(x.bfloat16(), t, c.bfloat16()).float()
    for out in outs.values():
        assert ((out - ref).norm() / ref.norm()).item() < 0.03
    assert ((outs["vidrt"] - outs["torchao"]).norm() / ref.norm()).item() < 0.03


def test_pipeline_quantized_modes_generate_close_to_fp32(tiny_wan):
    ref = vidrt.Pipeline.from_pretrained(tiny_wan)
    kw = dict(num_frames=5, height=16, width=32, steps=2, seed=0, progress=False)
    base = ref("a red circle moves left", output="latent", **kw)
    for mode in ("fp8", "int8", "int8_dynamic"):
        pipe = vidrt.Pipeline.from_pretrained(tiny_wan, precision=mode)
        assert pipe.precision == mode and pipe.dtype == torch.bfloat16
        lat = pipe("a red circle moves left", output="latent", **kw)
        err = ((lat - base).norm() / base.norm()).item()
        assert 0 < err < 0.05, (mode, err)


def test_precision_errors(monkeypatch):
    from vidrt.precision import check_precision, device_precisions

    with pytest.raises(vidrt.ConfigError, match="fp32, bf16, fp16, fp8, int8, int8_dynamic"):
        check_precision("int4", torch.device("cpu"))
    assert all(v == "ok" for v in device_precisions(torch.device("cpu")).values())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0))
    with pytest.raises(vidrt.DeviceError, match=r"8\.9.*choose one of fp32, bf16, fp16, int8, int8_dynamic$"):
        check_precision("fp8", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(vidrt.DeviceError, match="choose one of fp32, fp16$"):
        check_precision("int8", torch.device("cuda"))
    with pytest.raises(vidrt.DeviceError, match="CPU or CUDA"):
        check_precision("fp8", torch.device("mps"))


def test_bad_quant_requests(tiny_wan):
    with pytest.raises(vidrt.ConfigError, match="fp8, int8, int8_dynamic"):
        quantize_dit(_dit(tiny_wan), "int4")
    with pytest.raises(vidrt.ConfigError, match="engine='vidrt'"):
        quantize_dit(_dit(tiny_wan), "fp8", engine="torchao")
    with pytest.raises(vidrt.ConfigError, match="VAE precision 'fp8'"):
        vidrt.Pipeline.from_pretrained(tiny_wan, vae_precision="fp8")
