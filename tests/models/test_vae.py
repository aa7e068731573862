"""The Wan causal VAE against diffusers' AutoencoderKLWan on tiny random models (same weights)."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file

from vidrt.checkpoints.wan_vae_keys import (is_original_vae_state, vae_config_from_original_state,
                                            vae_key_renamer, vae_key_to_original, vae_state_from_original,
                                            vae_state_to_original)
from vidrt.errors import CheckpointError, ConfigError, ShapeError
from vidrt.models.vae import VAEConfig, WanVAE

diffusers = pytest.importorskip("diffusers")

# Two structures: Wan 2.1's (4x time, 8x space) shrunk, and a different one (2x time, 4x space,
# two residual blocks per stage) so nothing depends on Wan's exact stage count.
CONFIGS = {
    "wan21": dict(base_dim=16, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                  temperal_downsample=[False, True, True],
                  latents_mean=[0.3, -0.2, 0.1, 0.5], latents_std=[1.5, 0.7, 2.0, 1.1]),
    "other": dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=2, temperal_downsample=[True, False],
                  scale_factor_temporal=2, scale_factor_spatial=4),
    # Wan 2.2's (TI2V-5B) shrunk: residual stages with parameter-free shortcuts, 2x2 patchify, 16x space
    "wan22": dict(base_dim=8, decoder_base_dim=12, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                  temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
                  out_channels=12, scale_factor_spatial=16,
                  latents_mean=[0.3, -0.2, 0.1, 0.5], latents_std=[1.5, 0.7, 2.0, 1.1]),
    # ... and with the real one's stage widths [1, 2, 4, 4] and two residual blocks per stage (a decoder stage that
    # halves the width: its shortcut repeats channels 4x, not 8x; the resample after two / three residual blocks)
    "wan22_deep": dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                       temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
                       out_channels=12, scale_factor_spatial=16,
                       latents_mean=[0.3, -0.2, 0.1, 0.5], latents_std=[1.5, 0.7, 2.0, 1.1]),
}


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial norm gains and biases, so a swapped or missing weight changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(diffusers AutoencoderKLWan, vidrt WanVAE loaded from its saved folder, folder)."""
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLWan(**CONFIGS[request.param]).eval()
    _perturb(ref, seed=1)
    folder = tmp_path_factory.mktemp(f"vae_{request.param}")
    ref.save_pretrained(folder)
    vae = WanVAE(VAEConfig.from_json(folder)).eval()
    vae.load_state_dict(load_file(str(folder / "diffusion_pytorch_model.safetensors")), strict=True)
    return ref, vae, folder


def _latents(vae: WanVAE, t: int, h: int, w: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, vae.z_dim, t, h, w, generator=torch.Generator().manual_seed(seed))


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# --------------------------------------------------------------------------------------- decode

@pytest.mark.parametrize("t,h,w", [(1, 3, 5), (2, 4, 2), (4, 3, 5)])
def test_decode_matches_diffusers(pair, t, h, w):
    ref, vae, _ = pair
    z = _latents(vae, t, h, w, batch=2 if t == 2 else 1)
    with torch.no_grad():
        want = ref.decode(z).sample
        got = vae.decode(z)
    s, tf = vae.spatial_factor, vae.temporal_factor
    assert got.shape == (z.shape[0], 3, 1 + tf * (t - 1), h * s, w * s)
    assert want.std() > 0.05  # a real signal, not a clamped constant
    assert _err(got, want) <= 1e-4


def test_decode_one_pass_equals_frame_by_frame(pair):
    _, vae, _ = pair
    z = _latents(vae, 5, 3, 4, seed=3)
    with torch.no_grad():
        assert _err(vae.decode(z, chunk_frames=None), vae.decode(z, chunk_frames=1)) <= 1e-5
        assert _err(vae.decode(z, chunk_frames=2), vae.decode(z, chunk_frames=1)) <= 1e-5
        assert _err(vae.decode(z), vae.decode(z, chunk_frames=1)) <= 1e-5  # "auto"
    with pytest.raises(ShapeError, match="chunk_frames"):
        vae.decode(z, chunk_frames=0)


def test_auto_chunk_is_frame_by_frame_at_480p_and_bigger_for_small_clips():
    with torch.device("meta"):
        big = WanVAE(VAEConfig())
    assert big.auto_chunk_frames(1, 60, 104) == 1
    assert big.auto_chunk_frames(1, 16, 16) >= 4                  # 128x128 video: several frames per pass
    assert big.auto_chunk_frames(1, 16, 16, budget_bytes=1) == 1


@pytest.mark.parametrize("chunks", [[1, 2, 3], [3, 2, 1], [2, 1, 1, 2]])
def test_stream_decode_equals_one_shot(pair, chunks):
    _, vae, _ = pair
    z = _latents(vae, sum(chunks), 3, 2, seed=4)
    with torch.no_grad():
        whole = vae.decode(z)
    stream = vae.stream_decoder()
    parts, start = [], 0
    for i, n in enumerate(chunks):
        part = stream.decode(z[:, :, start:start + n])
        assert part.shape[2] == (1 + vae.temporal_factor * (n - 1) if i == 0 else vae.temporal_factor * n)
        parts.append(part)
        start += n
    assert _err(torch.cat(parts, dim=2), whole) <= 1e-5


def test_two_streams_interleaved_and_cache_is_flat(pair):
    _, vae, _ = pair
    za, zb = _latents(vae, 6, 2, 3, seed=5), _latents(vae, 6, 2, 3, seed=6)
    with torch.no_grad():
        want_a, want_b = vae.decode(za), vae.decode(zb)
    sa, sb = vae.stream_decoder(), vae.stream_decoder()
    got_a, got_b, sizes = [], [], []
    for i in range(6):
        got_a.append(sa.decode(za[:, :, i:i + 1]))
        got_b.append(sb.decode(zb[:, :, i:i + 1]))
        sizes.append(sa.cache.nbytes())
    assert _err(torch.cat(got_a, 2), want_a) <= 1e-5
    assert _err(torch.cat(got_b, 2), want_b) <= 1e-5
    assert sizes[0] < sizes[2] and sizes[2] == sizes[3] == sizes[5]  # fills up, then stays constant


def test_stream_rejects_a_size_change(pair):
    _, vae, _ = pair
    stream = vae.stream_decoder()
    stream.decode(_latents(vae, 1, 2, 3))
    with pytest.raises(ShapeError, match="new stream_decoder"):
        stream.decode(_latents(vae, 1, 3, 3))
    stream.reset()
    assert stream.decode(_latents(vae, 1, 3, 3)).shape[2] == 1


@pytest.mark.parametrize("bad", [(1, 3, 2, 3, 3), (3, 2, 3, 3)])
def test_wrong_latent_shape_raises(pair, bad):
    _, vae, _ = pair
    shape = tuple(vae.z_dim + 1 if s == 3 and i == 1 else s for i, s in enumerate(bad))
    with pytest.raises(ShapeError, match=rf"\(B, {vae.z_dim}, T', H', W'\).*got shape"):
        vae.decode(torch.zeros(shape))


# --------------------------------------------------------------------------------------- encode

@pytest.mark.parametrize("frames,h,w", [(1, 16, 24), (9, 16, 8)])
def test_encode_matches_diffusers(pair, frames, h, w):
    ref, vae, _ = pair
    frames = 1 + vae.temporal_factor * ((frames - 1) // 4)
    k = max(1, vae.spatial_factor // 8)   # Wan 2.2's x16: the same latent grid
    h, w = h * k, w * k
    video = torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        dist_ref = ref.encode(video).latent_dist
        mean = vae.encode(video)
        sample = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(11))
    want_sample = dist_ref.sample(generator=torch.Generator().manual_seed(11))
    assert mean.shape == (1, vae.z_dim, vae.config.latent_frames(frames), h // vae.spatial_factor,
                          w // vae.spatial_factor)
    assert _err(mean, dist_ref.mean) <= 1e-4
    assert _err(sample, want_sample) <= 1e-4
    assert _err(sample, mean) > 1e-3


def test_stream_encode_chunks_equal_one_shot(pair):
    _, vae, _ = pair
    tf, k = vae.temporal_factor, max(1, vae.spatial_factor // 8)
    video = torch.rand(1, 3, 1 + 3 * tf, 8 * k, 8 * k, generator=torch.Generator().manual_seed(8)) * 2 - 1
    with torch.no_grad():
        whole = vae.encode_distribution(video)
    stream = vae.stream_encoder()
    first = stream.encode(video[:, :, :1 + tf])      # 1 + k frames first
    rest = stream.encode(video[:, :, 1 + tf:])       # then a multiple of tf
    assert _err(torch.cat([first.mean, rest.mean], 2), whole.mean) <= 1e-5
    assert _err(torch.cat([first.logvar, rest.logvar], 2), whole.logvar) <= 1e-5
    with pytest.raises(ShapeError, match="multiple of"):
        stream.encode(video[:, :, :1])


def test_bad_video_raises(pair):
    _, vae, _ = pair
    s = vae.spatial_factor
    with pytest.raises(ShapeError, match="frames"):
        vae.encode(torch.zeros(1, 3, 1 + vae.temporal_factor + 1, s, s))
    with pytest.raises(ShapeError, match="divisible"):
        vae.encode(torch.zeros(1, 3, 1, s, s + s // 2))
    with pytest.raises(ShapeError, match=r"\(B, 3, T, H, W\)"):   # colour channels, not the patchified count
        vae.encode(torch.zeros(1, vae.config.in_channels + 1, 1, s, s))


# ------------------------------------------------------------------------------- precision, space

def test_bf16_follows_parameters(pair):
    _, vae, _ = pair
    low = WanVAE(vae.config).eval()
    low.load_state_dict(vae.state_dict())
    low = low.to(torch.bfloat16)
    z = _latents(vae, 2, 3, 2, seed=9)
    with torch.no_grad():
        out = low.decode(z)  # fp32 latents are cast to the module's dtype
        ref = vae.decode(z)
    assert out.dtype == torch.bfloat16
    assert _err(out, ref) < 0.1


def test_normalize_matches_pipeline_formula(pair):
    ref, vae, _ = pair
    z = _latents(vae, 2, 2, 2, seed=10)
    mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
    assert torch.equal(vae.denormalize(z), z / inv_std + mean)       # diffusers' WanPipeline decode
    assert _err(vae.normalize(vae.denormalize(z)), z) <= 1e-5


# ----------------------------------------------------------------------------- original Wan keys

def test_original_wan_keys_round_trip(pair):
    ref, vae, _ = pair
    state = vae.state_dict()
    original = vae_state_to_original(state, vae.config)
    assert is_original_vae_state(original) and not is_original_vae_state(state)
    assert set(original) != set(state) and len(original) == len(state)
    # structure read back from the original tensors alone
    extra = {k: getattr(vae.config, k) for k in ("latents_mean", "latents_std")}
    config = vae_config_from_original_state(original, **extra)
    assert config == vae.config
    loaded = WanVAE(config).eval()
    loaded.load_state_dict(vae_state_from_original(original, config), strict=True)
    z = _latents(vae, 3, 3, 2, seed=12)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), vae.decode(z))
        assert _err(loaded.decode(z), ref.decode(z).sample) <= 1e-4
    rename = vae_key_renamer(config)
    assert all(rename(vae_key_to_original(k, config)) == k for k in state)


def test_key_map_agrees_with_diffusers_converter_on_wan21_structure():
    """For Wan 2.1's real structure, our names must be what diffusers' converter expects."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    with torch.device("meta"):
        vae = WanVAE(VAEConfig(base_dim=8))  # Wan 2.1 layout, narrow
    state = vae.state_dict()
    converted = convert_wan_vae_to_diffusers(vae_state_to_original(state))
    assert sorted(converted) == sorted(state)
    assert vae_key_to_original("decoder.up_blocks.1.resnets.0.conv_shortcut.weight") == \
        "decoder.upsamples.4.shortcut.weight"
    assert vae_key_to_original("decoder.up_blocks.2.upsamplers.0.time_conv.bias") == \
        "decoder.upsamples.11.time_conv.bias"


def test_unknown_original_keys_are_named():
    with pytest.raises(CheckpointError, match="decoder.foo.weight"):
        vae_state_from_original({"conv1.weight": torch.zeros(1), "decoder.foo.weight": torch.zeros(1)})
    with pytest.raises(KeyError):
        vae_key_to_original("decoder.nothing.weight")


# ------------------------------------------------------------------------------------------ config

def test_config_from_dict_checks(caplog):
    base = dict(CONFIGS["wan21"])
    with caplog.at_level(logging.DEBUG, logger="vidrt.models.vae"):
        cfg = VAEConfig.from_dict({**base, "_class_name": "AutoencoderKLWan", "some_new_option": 3,
                                   "is_residual": False, "patch_size": None, "decoder_base_dim": None})
    assert cfg.dim_mult == (1, 2, 2, 2) and cfg.temporal_factor == 4 and cfg.spatial_factor == 8
    assert "some_new_option" in caplog.text
    wan22 = VAEConfig.from_dict({**base, "is_residual": True, "patch_size": 2, "in_channels": 12, "out_channels": 12})
    assert wan22.spatial_factor == 16 and wan22.video_channels == 3 and wan22.temporal_factor == 4
    with pytest.raises(ConfigError, match="in_channels=3, out_channels=3 with patch_size=2: an RGB video VAE has "
                                          "3 x patch_size\\^2 = 12"):
        VAEConfig.from_dict({**base, "patch_size": 2})
    with pytest.raises(ConfigError, match="in_channels=12, out_channels=12 with patch_size=None"):
        VAEConfig.from_dict({**base, "in_channels": 12, "out_channels": 12})
    with pytest.raises(ConfigError, match="patch_size=0"):
        VAEConfig.from_dict({**base, "patch_size": 0})
    with pytest.raises(ConfigError, match="latents_mean has 16 values but z_dim=4"):
        VAEConfig.from_dict({k: v for k, v in base.items() if k != "latents_mean"})
    with pytest.raises(ConfigError, match="temperal_downsample"):
        VAEConfig.from_dict({**base, "temperal_downsample": [True]})
    assert VAEConfig() == VAEConfig.from_dict(VAEConfig().to_dict())
    assert VAEConfig().video_frames(21) == 81 and VAEConfig().latent_frames(81) == 21
    with pytest.raises(ShapeError, match="1 \\+ 4k"):
        VAEConfig().latent_frames(80)


# ---------------------------------------------------------------------------------- frame-local convs

def _frame_local_copy(vae: WanVAE) -> tuple[WanVAE, int]:
    """The VAE with every causal conv's past taps zeroed but the time resamplers' (the training script's
    ``vae_frame_local``), and how many convs that restricted."""
    from vidrt.models.vae import frame_local_convs

    local = WanVAE(vae.config).eval()
    local.load_state_dict(vae.state_dict())
    convs = frame_local_convs(local)
    with torch.no_grad():
        for m in convs:
            m.weight[:, :, :-1] = 0
    assert all("time_conv" not in name for name, m in local.named_modules() if m in convs)
    return local, len(convs)


def test_frame_local_fast_path_equals_the_full_conv_and_diffusers(pair, monkeypatch):
    from vidrt.models.vae import CausalConv3d

    ref, vae, folder = pair
    local, n = _frame_local_copy(vae)
    assert n >= 6
    ref_local = type(ref).from_pretrained(folder).eval()
    ref_local.load_state_dict(local.state_dict())
    z = _latents(local, 4, 3, 5, seed=7)
    x = torch.rand(1, 3, 1 + vae.temporal_factor * 3, 3 * vae.spatial_factor, 2 * vae.spatial_factor) * 2 - 1
    with torch.no_grad():
        fast_dec, fast_enc = local.decode(z), local.encode(x)
        stream = local.stream_decoder()
        streamed = torch.cat([stream.decode(z[:, :, :1]), stream.decode(z[:, :, 1:])], dim=2)
        monkeypatch.setattr(CausalConv3d, "skip_zero_past", False)
        exact_dec, exact_enc = local.decode(z), local.encode(x)
        want = ref_local.decode(z).sample
    assert _err(fast_dec, exact_dec) <= 1e-5 and _err(fast_enc, exact_enc) <= 1e-5
    assert _err(streamed, exact_dec) <= 1e-5
    assert _err(fast_dec, want) <= 1e-4
    assert _err(fast_dec, vae.decode(z)) > 1e-2  # the zeroed taps mattered: this is another model
    # a conv that learns a non-zero past tap again leaves the fast path (the check follows the weights)
    conv = next(m for m in local.modules() if isinstance(m, CausalConv3d) and m.past_frames)
    assert conv._frame_local_weight() is not None
    with torch.no_grad():
        conv.weight[:, :, 0] += 0.1
    assert conv._frame_local_weight() is None


def test_wan22_original_names_are_the_ones_diffusers_converter_reads():
    """Wan2.2_VAE.pth names (wan/modules/vae2_2.py: one module per stage, its resample after the residual blocks)
    as diffusers' convert_vae_22 maps them; both directions."""
    from vidrt.checkpoints.wan_vae_keys import vae_key_from_original, vae_key_to_original

    cfg = VAEConfig.from_dict(CONFIGS["wan22"])   # num_res_blocks 1
    pairs = {
        "encoder.downsamples.0.downsamples.0.residual.0.gamma": "encoder.down_blocks.0.resnets.0.norm1.gamma",
        "encoder.downsamples.0.downsamples.0.shortcut.weight": "encoder.down_blocks.0.resnets.0.conv_shortcut.weight",
        "encoder.downsamples.1.downsamples.1.time_conv.weight": "encoder.down_blocks.1.downsampler.time_conv.weight",
        "encoder.downsamples.0.downsamples.1.resample.1.bias": "encoder.down_blocks.0.downsampler.resample.1.bias",
        "decoder.upsamples.0.upsamples.1.residual.6.weight": "decoder.up_blocks.0.resnets.1.conv2.weight",
        "decoder.upsamples.2.upsamples.2.resample.1.weight": "decoder.up_blocks.2.upsampler.resample.1.weight",
        "decoder.upsamples.0.upsamples.2.time_conv.bias": "decoder.up_blocks.0.upsampler.time_conv.bias",
        "decoder.middle.1.to_qkv.weight": "decoder.mid_block.attentions.0.to_qkv.weight",
        "encoder.conv1.weight": "encoder.conv_in.weight", "conv2.bias": "post_quant_conv.bias",
    }
    for original, ours in pairs.items():
        assert vae_key_from_original(original, cfg) == ours
        assert vae_key_to_original(ours, cfg) == original


def test_wan22_release_statistics_come_with_a_48_channel_original_vae():
    """A Wan2.2_VAE.pth holds no latent statistics: a 48-channel one gets the release's (the DiT was trained on
    latents normalised with them); its structure is read off the tensor shapes."""
    from vidrt.models.vae import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD

    cfg = VAEConfig(base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
                    is_residual=True, patch_size=2, in_channels=12, out_channels=12,
                    latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD)
    with torch.device("meta"):
        vae = WanVAE(cfg)
    original = vae_state_to_original(vae.state_dict(), cfg)
    assert vae_config_from_original_state(original) == cfg
    bad = dict(original)
    bad["encoder.conv1.weight"] = torch.empty(8, 13, 3, 3, 3, device="meta")
    with pytest.raises(CheckpointError, match="takes 13 channels"):
        vae_config_from_original_state(bad)
