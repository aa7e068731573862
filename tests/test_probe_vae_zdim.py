"""tools/probe_vae_zdim.py: widening the VAE's latent keeps its reconstructions exactly, and the new channels carry
signal the decoder can learn to use."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidrt.models.vae import VAEConfig, WanVAE
from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
tool = load_script(ROOT / "tools/probe_vae_zdim.py")


def _vae() -> WanVAE:
    torch.manual_seed(0)
    vae = WanVAE(VAEConfig(base_dim=4, z_dim=4, dim_mult=(1, 1, 2, 2), latents_mean=(0.1,) * 4,
                           latents_std=(2.0,) * 4)).eval()
    with torch.no_grad():   # random biases too, so a wrong channel map would show
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vae


def test_widening_keeps_encode_and_decode():
    vae = _vae()
    wide = tool.widen_latent(vae, 7).eval()
    assert wide.config.z_dim == 7
    assert wide.config.latents_std[:4] == (2.0,) * 4 and wide.config.latents_std[4:] == (1.0,) * 3
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        z_old, z_new = vae.encode(x), wide.encode(x)
        assert torch.allclose(z_new[:, :4], z_old, atol=1e-5)
        assert z_new[:, 4:].abs().mean() > 0          # the new channels carry something
        assert torch.allclose(wide.decode(z_new), vae.decode(z_old), atol=1e-5)
        # the decoder ignores the new channels until trained
        noise_on_new = torch.nn.functional.pad(torch.randn_like(z_old[:, :3]), (0, 0) * 3 + (4, 0))
        assert torch.allclose(wide.decode(z_new + noise_on_new), vae.decode(z_old), atol=1e-5)


def test_widening_to_the_same_width_is_a_copy_and_narrowing_is_refused():
    vae = _vae()
    same = tool.widen_latent(vae, 4)
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), vae.state_dict().values()))
    with pytest.raises(ValueError, match="widening only adds channels"):
        tool.widen_latent(vae, 3)
