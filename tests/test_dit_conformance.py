"""The DiT matches diffusers' WanTransformer3DModel on the same weights (rel. error <= 1e-4, fp32)."""
import pytest
import torch

from vidrt.models.dit import DiTConfig, WanDiT

CONFIGS = {
    "p122_h2x12": dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12),
    "p111_h2x12": dict(patch_size=(1, 1, 1), num_attention_heads=2, attention_head_dim=12),
    "p144_h3x16": dict(patch_size=(1, 4, 4), num_attention_heads=3, attention_head_dim=16),
    "p222_h2x24": dict(patch_size=(2, 2, 2), num_attention_heads=2, attention_head_dim=24),
}


def _pair(cfg):
    from diffusers import WanTransformer3DModel

    ref = WanTransformer3DModel(in_channels=4, out_channels=4, text_dim=16, freq_dim=32, ffn_dim=48, num_layers=2,
                                cross_attn_norm=True, rope_max_seq_len=64, **cfg).eval()
    ours = WanDiT(DiTConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _rel(a, b):
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("frames,h,w", [(1, 16, 16), (2, 8, 24), (4, 16, 8)])
def test_transformer_matches_diffusers(name, frames, h, w):
    ref, ours = _pair(CONFIGS[name])
    pt = CONFIGS[name]["patch_size"][0]
    frames = max(frames, pt) // pt * pt
    x = torch.randn(2, 4, frames, h, w)
    t = torch.tensor([999.0, 17.5])
    ctx = torch.randn(2, 7, 16)
    with torch.no_grad():
        a = ref(x, t, ctx).sample
        b = ours(x, t, ctx)
        c = ours(x, t, context_kv=ours.prepare_context(ctx))  # cached cross-attention K/V: same numbers
    assert a.shape == b.shape == x.shape
    assert _rel(a, b) <= 1e-4
    assert torch.equal(b, c)


def test_per_token_timesteps_match_diffusers():
    """Diffusion-forcing style timestep per token (causal variants) matches diffusers' ts_seq_len path."""
    ref, ours = _pair(CONFIGS["p122_h2x12"])
    x = torch.randn(1, 4, 3, 8, 8)
    t = torch.cat([torch.full((16,), 900.0), torch.full((16,), 500.0), torch.full((16,), 100.0)])[None]
    ctx = torch.randn(1, 5, 16)
    with torch.no_grad():
        assert _rel(ref(x, t, ctx).sample, ours(x, t, ctx)) <= 1e-4


def test_bad_latent_shapes_are_clear():
    from vidrt.errors import ShapeError

    _, ours = _pair(CONFIGS["p144_h3x16"])
    with pytest.raises(ShapeError, match="not divisible by the patch size"):
        ours(torch.randn(1, 4, 1, 6, 8), torch.tensor([1.0]), torch.randn(1, 3, 16))
    with pytest.raises(ShapeError, match="channels"):
        ours(torch.randn(1, 3, 1, 8, 8), torch.tensor([1.0]), torch.randn(1, 3, 16))
    with pytest.raises(ShapeError, match="timestep"):
        ours(torch.randn(2, 4, 1, 8, 8), torch.tensor([1.0, 2.0, 3.0]), torch.randn(2, 3, 16))


def test_config_from_original_wan_layout():
    cfg = DiTConfig.from_dict({"model_type": "t2v", "dim": 1536, "num_heads": 12, "num_layers": 30, "ffn_dim": 8960,
                               "freq_dim": 256, "in_dim": 16, "out_dim": 16, "text_len": 512, "eps": 1e-6,
                               "patch_size": [1, 2, 2], "window_size": [-1, -1], "qk_norm": True,
                               "cross_attn_norm": True})
    assert (cfg.num_attention_heads, cfg.attention_head_dim, cfg.num_layers, cfg.text_dim) == (12, 128, 30, 4096)
    from vidrt.errors import CheckpointError

    with pytest.raises(CheckpointError, match="text-to-video"):
        DiTConfig.from_dict({"model_type": "i2v", "dim": 64, "num_heads": 2, "num_layers": 1, "ffn_dim": 8})
