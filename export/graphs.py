"""Export-friendly forward passes of the three networks, written over the runtime's own modules.

The runtime modules are traced as they are where possible; three things are re-expressed so the
graphs stay shape-generic (one ONNX file serves every batch, frame count, height, width, text length):

- DiT RoPE: the runtime builds cos/sin tables per grid in fp64 (Python ints). Here the tables for
  positions 0..rope_max_seq_len-1 are the same fp32 values, stored once, and sliced in-graph to the
  token grid read from the latents' shape.
- VAE decoder: the runtime streams latent frames through a temporal cache with Python branches on
  the frame count. Here the one-shot decode (identical frames, tested in the runtime) is written
  without branches: the causal time upsampler zeroes frame 0 instead of slicing it off, so a
  1-frame clip takes the same graph as a long one.
- Text encoder: UMT5 hidden states zeroed after each prompt's tokens, as ``TextEncoder.encode``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidrt.kernels.reference import Rope3D, build_rope_3d
from vidrt.models.dit import WanDiT
from vidrt.models.vae import Resample, ResidualUpBlock, WanVAE, _frames_to_images, _images_to_frames, unpatchify


class DiTGraph(nn.Module):
    """latents (B, C, T, H, W), timestep (B,), context (B, Lt, text_dim) -> velocity (B, C, T, H, W).

    Inputs and output are fp32 whatever the DiT's dtype (casts happen inside), so callers and
    engines see one signature for every export precision.
    """

    def __init__(self, dit: WanDiT):
        super().__init__()
        self.dit = dit
        cfg = dit.config
        full = build_rope_3d(cfg.attention_head_dim, (cfg.rope_max_seq_len,) * 3, cfg.rope_theta)
        for a in range(3):
            self.register_buffer(f"rope_cos{a}", full.cos[a], persistent=False)
            self.register_buffer(f"rope_sin{a}", full.sin[a], persistent=False)

    def _rope(self, grid, frame_offset=0, device=None) -> Rope3D:
        cos = tuple(getattr(self, f"rope_cos{a}")[:grid[a]] for a in range(3))
        sin = tuple(getattr(self, f"rope_sin{a}")[:grid[a]] for a in range(3))
        return Rope3D(grid, cos, sin)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        dtype = self.dit.patch_embedding.weight.dtype
        self.dit.rope = self._rope  # instance attribute shadows WanDiT.rope during the trace only
        try:
            out = self.dit(latents.to(dtype), timestep, context.to(dtype))
        finally:
            del self.dit.rope
        return out.float()


class VAEDecoderGraph(nn.Module):
    """DiT-space latents (B, z, T', H', W') -> video (B, 3, 1 + 4(T'-1), 8H', 8W') in [-1, 1]."""

    def __init__(self, vae: WanVAE):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        dec = vae.decoder
        x = vae.post_quant_conv(vae.denormalize(latents.to(vae.dtype)))
        x = dec.conv_in(x)
        x = dec.mid_block(x, None)
        for block in dec.up_blocks:
            residual = isinstance(block, ResidualUpBlock)   # Wan 2.2: a shortcut around the stage
            shortcut = block.avg_shortcut(x, first_chunk=True) if residual and block.avg_shortcut else None
            for resnet in block.resnets:
                x = resnet(x, None)
            up = block.upsampler if residual else block.upsamplers[0] if block.upsamplers is not None else None
            if up is not None:
                x = _resample(up, x)
            if shortcut is not None:
                x = x + shortcut
        x = unpatchify(dec.conv_out(F.silu(dec.norm_out(x))), vae.config.patch_size)
        return x.clamp(-1.0, 1.0).float()


def _resample(r: Resample, x: torch.Tensor) -> torch.Tensor:
    if r.mode == "upsample3d":
        x = _double_time(r, x)
    b = x.shape[0]
    y = _frames_to_images(x)
    if r.mode.startswith("upsample"):
        # nearest-exact at an integer 2x scale picks the same pixels as nearest (ONNX Resize 'nearest')
        y = r.resample[1](F.interpolate(y, scale_factor=2.0, mode="nearest"))
    else:
        y = r.resample(y)
    return _images_to_frames(y, b)


def _double_time(r: Resample, x: torch.Tensor) -> torch.Tensor:
    """One-shot causal 2x time upsampling without a branch on the frame count.

    Frame 0 passes alone; frames 1.. go through the causal time conv from a zero past. Zeroing
    frame 0 before the conv gives frame 1 exactly that zero past; the conv's outputs for frame 0
    are then dropped (an empty slice for a 1-frame clip).
    """
    b, c, t, h, w = x.shape
    keep = (torch.arange(t, device=x.device) > 0).to(x.dtype).view(1, 1, t, 1, 1)
    y = r.time_conv(x * keep)  # (B, 2C, T, H, W): two output frames per input frame
    y = y.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
    return torch.cat([x[:, :, :1], y[:, :, 2:]], dim=2)


class TextEncoderGraph(nn.Module):
    """input_ids, attention_mask (B, L) int64 -> hidden states (B, L, text_dim) fp32, zero after each prompt."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)).float()
