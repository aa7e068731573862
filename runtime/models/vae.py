"""Wan causal 3D VAE (2.1, and 2.2's residual one): encode video to latents, decode latents to video, chunk by chunk.

The module tree and parameter names are those of diffusers' ``AutoencoderKLWan`` so a diffusers
``vae/`` state dict loads with ``strict=True`` (original Wan names: ``vidrt.checkpoints.wan_vae_keys``).

Time is causal: every temporal convolution only looks back. Each such layer keeps the last input
frames it needs in a :class:`TemporalCache` owned by a stream, so a clip can be decoded a few
latent frames at a time in constant memory and still give exactly the frames of a one-shot
decode. The cache lives in the stream object, never in the module, so streams can interleave.

Frame counts: T video frames <-> 1 + (T - 1) / 4 latent frames (Wan 2.1: 4x time, 8x space). The
first latent frame stands for one video frame (an image), every later one for four.

Wan 2.2's VAE (TI2V-5B; ``is_residual``, ``patch_size`` 2: 4x time, 16x space, 48 channels) adds parameter-free
shortcuts around each down / up block (pixels folded into channels and averaged, or channels repeated and unfolded)
and folds 2x2 pixels into channels before the encoder (``patchify``). Its shortcuts work within one chunk, as in
diffusers, so streams must chunk as diffusers does (first frame alone or 1 + 4k frames, then multiples of 4).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidrt.errors import ConfigError, ShapeError
from vidrt.models.config_types import check_config, field_types

logger = logging.getLogger(__name__)

__all__ = ["VAEConfig", "WanVAE", "LatentDistribution", "TemporalCache", "StreamDecoder", "StreamEncoder",
           "frame_local_convs"]

# Activation memory one "auto" decode pass may use; Wan 2.1 at 480p needs more than this per latent frame
# (so it decodes frame by frame, like diffusers), small videos decode in one pass.
DECODE_BUDGET_BYTES = 1 << 30

WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

# Wan 2.2's VAE (TI2V-5B, 48 channels): the per-channel statistics its release uses (diffusers' converter config)
WAN22_LATENTS_MEAN = (-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813,
                      0.0891, 0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108,
                      -0.2158, 0.2502, -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313,
                      -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944,
                      0.3573, -0.0548, -0.1681, -0.0667)
WAN22_LATENTS_STD = (0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
                     0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
                     0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
                     0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744)


# ----------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class VAEConfig:
    """Structure of the VAE, as in diffusers' ``vae/config.json`` (AutoencoderKLWan). Defaults: Wan 2.1."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    decoder_base_dim: Optional[int] = None
    in_channels: int = 3   # of the encoder's first conv: 3 x patch_size^2 with a patchify
    out_channels: int = 3
    is_residual: bool = False   # Wan 2.2: parameter-free shortcuts around every down / up block
    patch_size: Optional[int] = None   # Wan 2.2: p x p pixels folded into channels around the encoder / decoder

    # Informational keys: derived from the structure here, checked for consistency only.
    _DERIVED = ("scale_factor_temporal", "scale_factor_spatial")

    def __post_init__(self) -> None:
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.dim_mult) < 1 or min(self.dim_mult) < 1 or self.base_dim < 1 or self.z_dim < 1:
            raise ConfigError(f"VAE config: base_dim={self.base_dim}, z_dim={self.z_dim}, dim_mult={self.dim_mult} "
                              "must be positive; fix vae/config.json")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(f"VAE config: temperal_downsample has {len(self.temperal_downsample)} entries but "
                              f"dim_mult={list(self.dim_mult)} needs {len(self.dim_mult) - 1} (one per downsample)")
        if self.attn_scales:
            raise ConfigError(f"VAE config: attn_scales={list(self.attn_scales)} is not supported (Wan 2.1 uses []; "
                              "diffusers and the original Wan code disagree on decoder attention there)")
        for name in ("latents_mean", "latents_std"):
            if len(getattr(self, name)) != self.z_dim:
                raise ConfigError(f"VAE config: {name} has {len(getattr(self, name))} values but z_dim={self.z_dim}; "
                                  f"write {self.z_dim} per-channel values for {name} into vae/config.json")
        if any(s <= 0 for s in self.latents_std):
            raise ConfigError("VAE config: latents_std must be positive; fix vae/config.json")
        if self.patch_size is not None and self.patch_size < 1:
            raise ConfigError(f"VAE config: patch_size={self.patch_size}; use null (no patchify) or an integer >= 1")
        p = self.patch_size or 1
        if self.in_channels != 3 * p * p or self.out_channels != 3 * p * p:
            raise ConfigError(f"VAE config: in_channels={self.in_channels}, out_channels={self.out_channels} with "
                              f"patch_size={self.patch_size}: an RGB video VAE has 3 x patch_size^2 = {3 * p * p} "
                              "of each; fix vae/config.json")

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame (after the first): 4 for Wan 2.1."""
        return 2 ** sum(bool(t) for t in self.temperal_downsample)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along H and W: 8 for Wan 2.1, 16 for Wan 2.2's (8 x its 2x2 patchify)."""
        return 2 ** (len(self.dim_mult) - 1) * (self.patch_size or 1)

    @property
    def video_channels(self) -> int:
        """Colour channels of the video (in_channels without the patchify's folding)."""
        return self.in_channels // (self.patch_size or 1) ** 2

    def video_frames(self, latent_frames: int) -> int:
        """Video frames decoded from ``latent_frames`` latent frames."""
        return 1 + self.temporal_factor * (latent_frames - 1)

    def latent_frames(self, video_frames: int) -> int:
        """Latent frames encoding ``video_frames`` video frames (which must be 1 + k * temporal_factor)."""
        if video_frames < 1 or (video_frames - 1) % self.temporal_factor:
            raise ShapeError(f"the VAE takes 1 + {self.temporal_factor}k video frames, got {video_frames}; "
                             f"use e.g. {1 + self.temporal_factor * max(0, (video_frames - 1) // self.temporal_factor)}")
        return 1 + (video_frames - 1) // self.temporal_factor

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "VAE config") -> "VAEConfig":
        """Build from a diffusers AutoencoderKLWan config dict; unknown keys are logged and ignored.

        ``where`` (the file it came from) names the source in errors about wrong value types."""
        check_config(data, {}, where)
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                if value is not None or key == "decoder_base_dim":
                    kwargs[key] = value
            elif key not in cls._DERIVED:
                logger.debug("VAE config: ignoring unknown key %r", key)
        check_config(kwargs, field_types(cls), where)
        config = cls(**kwargs)
        for key, have in (("scale_factor_temporal", config.temporal_factor),
                          ("scale_factor_spatial", config.spatial_factor)):
            if data.get(key) is not None and data[key] != have:
                logger.warning("VAE config: %s=%s but the layer structure gives %s; using %s",
                               key, data[key], have, have)
        return config

    @classmethod
    def from_json(cls, path: Union[str, Path]) -> "VAEConfig":
        """Read a config.json (or the folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read VAE config {path}: {exc}; point to a diffusers vae/config.json") from exc
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The diffusers-style dict (lists, not tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ------------------------------------------------------------------------------------ stream state

class TemporalCache:
    """Per-stream state of the causal layers: for each layer, the past frames it still needs.

    Keyed by layer object; the layers themselves stay stateless, so any number of caches (streams)
    can be used with one module at the same time.
    """

    def __init__(self) -> None:
        self._state: dict[nn.Module, Any] = {}

    def get(self, layer: nn.Module) -> Any:
        return self._state.get(layer)

    def put(self, layer: nn.Module, value: Any) -> None:
        self._state[layer] = value

    def clear(self) -> None:
        self._state.clear()

    def nbytes(self) -> int:
        """Bytes held in cached frames (constant in clip length)."""
        return sum(v.numel() * v.element_size() for v in self._state.values() if isinstance(v, torch.Tensor))

    def __len__(self) -> int:
        return len(self._state)


# ------------------------------------------------------------------------------------------ layers

def _frames_to_images(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _images_to_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W)."""
    bt, c, h, w = x.shape
    return x.view(batch, bt // batch, c, h, w).transpose(1, 2)


def _use_onednn(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())  # exported graphs: plain conv


class CausalConv3d(nn.Conv3d):
    """Conv3d that pads time only on the past side: with zeros at the clip start, else with cached frames.

    A conv whose past taps are all zero (vidrt's frame-local VAE, docs/default_model.md) needs neither the
    look-back nor its cache: at inference it runs on each frame with its last tap alone, a third of the
    work for the same output. ``skip_zero_past`` (class-wide) switches that off to measure against it.
    """

    skip_zero_past: bool = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, tuple[int, int, int]],
                 stride: Union[int, tuple[int, int, int]] = 1, padding: Union[int, tuple[int, int, int]] = 0):
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        self.past_frames = 2 * pt  # the look-back of a centred kernel moved entirely to the past
        self.space_pad = (pw, pw, ph, ph)  # one explicit pad is faster on CPU than the conv's own padding
        self._last_tap: Optional[tuple[tuple, Optional[torch.Tensor]]] = None  # (weight version, tap or None)

    def _frame_local_weight(self) -> Optional[torch.Tensor]:
        """The last tap as a contiguous 1-frame kernel when every past tap is zero, else None (memoised per
        weight version, so loading or training new weights re-checks)."""
        key = (self.weight._version, self.weight.data_ptr(), self.weight.dtype)
        if self._last_tap is None or self._last_tap[0] != key:
            w = self.weight.detach()
            tap = None if w[:, :, :-1].any() else w[:, :, -1:].contiguous()
            self._last_tap = (key, tap)
        return self._last_tap[1]

    def forward(self, x: torch.Tensor, cache: Optional[TemporalCache] = None) -> torch.Tensor:
        if self.skip_zero_past and self.past_frames and self.stride[0] == 1 and not torch.is_grad_enabled():
            tap = self._frame_local_weight()
            if tap is not None:
                if any(self.space_pad):
                    x = F.pad(x, self.space_pad)
                if _use_onednn(x):
                    return torch.mkldnn_convolution(x, tap, self.bias, (0, 0, 0), self.stride, self.dilation,
                                                    self.groups)
                return F.conv3d(x, tap, self.bias, self.stride, 0, self.dilation, self.groups)
        missing = self.past_frames
        if missing and cache is not None:
            past = cache.get(self)
            if past is not None:
                x = torch.cat([past, x], dim=2)
                missing -= past.shape[2]
            cache.put(self, x[:, :, -self.past_frames:].clone())
        if missing or any(self.space_pad):
            x = F.pad(x, (*self.space_pad, missing, 0))
        if _use_onednn(x):
            # PyTorch picks its slow reference conv3d for small single-clip inputs (N*C*T*H <= 20480);
            # oneDNN is 1.5-2x faster there and computes the same convolution.
            return torch.mkldnn_convolution(x, self.weight, self.bias, (0, 0, 0), self.stride, self.dilation,
                                            self.groups)
        return super().forward(x)


class RMSNorm(nn.Module):
    """L2-normalise over channels, times sqrt(dim) and a learned per-channel gain (Wan's RMS_norm)."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x.dtype in (torch.float16, torch.bfloat16)  # normalise in fp32 for half types, as diffusers
        return F.normalize(x.float() if low else x, dim=1).to(x.dtype) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    """norm -> SiLU -> causal conv, twice, plus a (1x1x1 conv when the width changes) shortcut."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        h = self.conv_shortcut(x)
        x = self.conv1(F.silu(self.norm1(x)), cache)
        x = self.conv2(self.dropout(F.silu(self.norm2(x))), cache)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: Optional[TemporalCache] = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.to_qkv(self.norm(_frames_to_images(x)))             # (BT, 3C, H, W)
        q, k, v = y.flatten(2).transpose(1, 2).unsqueeze(1).chunk(3, dim=-1)  # each (BT, 1, HW, C)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return _images_to_frames(self.proj(y), b) + x


class Upsample2x(nn.Upsample):
    """Nearest-exact 2x upsampling, computed in fp32 (bf16 nearest is not supported everywhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


class Resample(nn.Module):
    """Spatial 2x up/down per frame, with an optional causal 2x up/down in time (the ``time_conv``).

    Time semantics (identical to Wan / diffusers chunked inference):
    - upsample3d: the clip's first frame passes through alone (it is an image); every later frame
      becomes two, via a causal time conv that starts afresh (zero past) at the second frame.
    - downsample3d: the first frame passes through; then each window of 3 frames at stride 2
      (frames 0-2, 2-4, ...) becomes one frame.
    """

    def __init__(self, dim: int, mode: str, out_dim: Optional[int] = None):
        super().__init__()
        self.mode = mode
        out_dim = dim // 2 if out_dim is None else out_dim
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(Upsample2x(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, out_dim, 3, padding=1))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_time(x, cache)
        b = x.shape[0]
        x = _images_to_frames(self.resample(_frames_to_images(x)), b)
        if self.mode == "downsample3d":
            x = self._halve_time(x, cache)
        return x

    def _double_time(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        first = None
        if cache.get(self) is None:  # the clip's first frame: no temporal upsampling
            cache.put(self, True)
            first, x = x[:, :, :1], x[:, :, 1:]
        if x.shape[2] > 0:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, cache)  # (B, 2C, T, H, W): the two output frames of each input frame
            x = y.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        if first is None:
            return x
        return torch.cat([first, x], dim=2) if x.shape[2] else first

    def _halve_time(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        pending = cache.get(self)
        out = []
        if pending is None:  # the clip's first frame passes through and also starts the first window
            out.append(x[:, :, :1])
            buf = x
        else:
            buf = torch.cat([pending, x], dim=2)
        windows = (buf.shape[2] - 1) // 2
        if windows > 0:
            out.append(self.time_conv(buf[:, :, : 1 + 2 * windows]))
        cache.put(self, buf[:, :, 2 * windows:].clone())
        return out[0] if len(out) == 1 else torch.cat(out, dim=2)


class AverageDown(nn.Module):
    """Wan 2.2's down-block shortcut: fold (time x height x width) blocks of ``factor_t x factor_s x factor_s``
    into channels and average them in groups down to ``out_dim`` channels. No parameters; works within one chunk,
    whose front is zero-padded to a multiple of ``factor_t`` (the clip's first frame is paired with a zero frame)."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        factor = factor_t * factor_s * factor_s
        if in_dim * factor % out_dim:
            raise ConfigError(f"VAE: a residual down block from {in_dim} to {out_dim} channels cannot average "
                              f"{in_dim * factor} folded channels into {out_dim}; check dim_mult")
        self.group = in_dim * factor // out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        x = F.pad(x, (0, 0, 0, 0, (ft - x.shape[2] % ft) % ft, 0))
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        return x.reshape(b, self.out_dim, self.group, t // ft, h // fs, w // fs).mean(dim=2)


class RepeatUp(nn.Module):
    """Wan 2.2's up-block shortcut: repeat channels and unfold them into ``factor_t x factor_s x factor_s`` blocks.
    No parameters. On a clip's first chunk the first latent frame stands for one frame: its extra copies are cut."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        factor = factor_t * factor_s * factor_s
        if out_dim * factor % in_dim:
            raise ConfigError(f"VAE: a residual up block from {in_dim} to {out_dim} channels cannot unfold them; "
                              "check dim_mult")
        self.repeats = out_dim * factor // in_dim

    def forward(self, x: torch.Tensor, first_chunk: bool = False) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        x = x.repeat_interleave(self.repeats, dim=1)
        b, _, t, h, w = x.shape
        x = x.view(b, self.out_dim, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1:] if first_chunk else x


class ResidualDownBlock(nn.Module):
    """Wan 2.2 encoder stage: residual blocks and an optional 2x downsampler, plus the averaging shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, temporal: bool, down: bool):
        super().__init__()
        self.avg_shortcut = AverageDown(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nn.ModuleList([ResidualBlock(a, b, dropout) for a, b in zip(dims[:-1], dims[1:])])
        self.downsampler = Resample(out_dim, "downsample3d" if temporal else "downsample2d") if down else None

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        shortcut = self.avg_shortcut(x)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache)
        return x + shortcut


class ResidualUpBlock(nn.Module):
    """Wan 2.2 decoder stage: num_res_blocks + 1 residual blocks and an optional 2x upsampler (keeping the width),
    plus the repeating shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, temporal: bool, up: bool):
        super().__init__()
        self.avg_shortcut = RepeatUp(in_dim, out_dim, 2 if temporal else 1, 2) if up else None
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList([ResidualBlock(a, b, dropout) for a, b in zip(dims[:-1], dims[1:])])
        self.upsampler = (Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim=out_dim)
                          if up else None)

    def forward(self, x: torch.Tensor, cache: TemporalCache, first_chunk: bool = False) -> torch.Tensor:
        shortcut = None if self.avg_shortcut is None else self.avg_shortcut(x, first_chunk)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsampler is not None:
            x = self.upsampler(x, cache)
        return x if shortcut is None else x + shortcut


def patchify(x: torch.Tensor, p: Optional[int]) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C p p, T, H/p, W/p): each p x p pixel block into channels (diffusers' order)."""
    if not p or p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: Optional[int]) -> torch.Tensor:
    """The inverse of :func:`patchify`."""
    if not p or p == 1:
        return x
    b, cpp, t, h, w = x.shape
    c = cpp // (p * p)
    x = x.view(b, c, p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c, t, h * p, w * p)


def frame_local_convs(module: nn.Module) -> list[CausalConv3d]:
    """The causal convs that a frame-local VAE restricts to their own frame: every one with a time kernel
    except the time resamplers' (which compress or expand time and must look back)."""
    keep = {id(m.time_conv) for m in module.modules() if isinstance(m, Resample) and hasattr(m, "time_conv")}
    return [m for m in module.modules()
            if isinstance(m, CausalConv3d) and m.weight.shape[2] > 1 and id(m) not in keep]


class MidBlock(nn.Module):
    """Residual block, attention, residual block at the lowest resolution."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.attentions = nn.ModuleList([AttentionBlock(dim)])
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, dropout), ResidualBlock(dim, dim, dropout)])

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        return self.resnets[1](self.attentions[0](x), cache)


class UpBlock(nn.Module):
    """num_res_blocks + 1 residual blocks, then an optional 2x upsampler."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, upsample: Optional[str]):
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList([ResidualBlock(a, b, dropout) for a, b in zip(dims[:-1], dims[1:])])
        self.upsamplers = nn.ModuleList([Resample(out_dim, upsample)]) if upsample else None

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        return x if self.upsamplers is None else self.upsamplers[0](x, cache)


class Encoder(nn.Module):
    """Video (B, 3, T, H, W) -> moments (B, 2z, T', H', W') before ``quant_conv``."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        dims = [config.base_dim * m for m in (1, *config.dim_mult)]
        self.conv_in = CausalConv3d(config.in_channels, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        last = len(config.dim_mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if config.is_residual:   # Wan 2.2: one block per stage, its downsampler inside
                blocks.append(ResidualDownBlock(in_dim, out_dim, config.num_res_blocks, config.dropout,
                                                temporal=i != last and config.temperal_downsample[i], down=i != last))
                continue
            for _ in range(config.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, config.dropout))
                in_dim = out_dim
            if i != last:
                blocks.append(Resample(out_dim, "downsample3d" if config.temperal_downsample[i] else "downsample2d"))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(dims[-1], config.dropout)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], config.z_dim * 2, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class Decoder(nn.Module):
    """Latents (B, z, T', H', W') after ``post_quant_conv`` -> video (B, 3, T, H, W), unclamped."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        base = config.decoder_base_dim or config.base_dim
        mult = config.dim_mult
        dims = [base * m for m in (mult[-1], *mult[::-1])]
        temperal_upsample = config.temperal_downsample[::-1]
        self.conv_in = CausalConv3d(config.z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], config.dropout)
        blocks = []
        last = len(mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if config.is_residual:   # Wan 2.2: the upsampler keeps the width
                blocks.append(ResidualUpBlock(in_dim, out_dim, config.num_res_blocks, config.dropout,
                                              temporal=i != last and temperal_upsample[i], up=i != last))
                continue
            if i > 0:  # the previous upsampler halved the width
                in_dim //= 2
            upsample = None if i == last else "upsample3d" if temperal_upsample[i] else "upsample2d"
            blocks.append(UpBlock(in_dim, out_dim, config.num_res_blocks, config.dropout, upsample))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], config.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: TemporalCache, first_chunk: bool = False) -> torch.Tensor:
        """``first_chunk``: ``x`` starts the clip (Wan 2.2's shortcuts cut the first latent frame's copies)."""
        x = self.conv_in(x, cache)
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache, first_chunk) if isinstance(block, ResidualUpBlock) else block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


# ----------------------------------------------------------------------------------- distribution

@dataclass
class LatentDistribution:
    """Diagonal Gaussian over raw latents, from the encoder's moments (B, 2z, T', H', W')."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "LatentDistribution":
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(-30.0, 20.0))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """mean + std * noise; noise drawn on the generator's device (as diffusers' randn_tensor)."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)


# ------------------------------------------------------------------------------------------ model

class WanVAE(nn.Module):
    """Wan 2.1 (or 2.2, ``is_residual``) causal video VAE with diffusers' AutoencoderKLWan parameter names.

    ``decode`` / ``encode`` work on raw VAE latents; ``normalize`` / ``denormalize`` convert to and
    from the DiT's latent space with the config's per-channel mean/std.
    """

    def __init__(self, config: Optional[VAEConfig] = None):
        super().__init__()
        self.config = config or VAEConfig()
        z = self.config.z_dim
        self.encoder = Encoder(self.config)
        self.quant_conv = CausalConv3d(z * 2, z * 2, 1)
        self.post_quant_conv = CausalConv3d(z, z, 1)
        self.decoder = Decoder(self.config)

    # -- facts
    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.post_quant_conv.weight.device

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    # -- latent space
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latents_mean).view(shape).to(like.device, like.dtype)
        inv_std = 1.0 / torch.tensor(self.config.latents_std).view(shape).to(like.device, like.dtype)
        return mean, inv_std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the DiT's latent space: (z - mean) / std."""
        mean, inv_std = self._stats(z)
        return (z - mean) * inv_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """The DiT's latents -> raw VAE latents, exactly as diffusers' WanPipeline: z / (1/std) + mean."""
        mean, inv_std = self._stats(z)
        return z / inv_std + mean

    # -- decode
    def stream_decoder(self) -> "StreamDecoder":
        """A decoder that takes latent frames a chunk at a time and holds only the temporal cache."""
        return StreamDecoder(self)

    def decode(self, z: torch.Tensor, chunk_frames: Union[int, str, None] = "auto") -> torch.Tensor:
        """Raw latents (B, z, T', H', W') -> video (B, 3, 1 + 4(T'-1), sH', sW') in [-1, 1] (s: spatial_factor).

        ``chunk_frames`` latent frames are decoded per pass: 1 is diffusers' schedule (flattest
        memory), None the whole clip at once, "auto" as many as fit :data:`DECODE_BUDGET_BYTES` of
        activations (bigger passes are much faster on CPU). The frames are the same either way.
        """
        self.check_latents(z)
        b, _, t, h, w = z.shape
        if chunk_frames == "auto":
            step = self.auto_chunk_frames(b, h, w)
        else:
            step = t if chunk_frames is None else int(chunk_frames)
        if step < 1:
            raise ShapeError(f"chunk_frames must be >= 1, None or 'auto', got {chunk_frames!r}")
        stream = self.stream_decoder()
        s = self.spatial_factor
        out = None
        done = 0
        for start in range(0, t, step):
            frames = stream.decode(z[:, :, start:start + step])
            if out is None:
                out = frames.new_empty(b, frames.shape[1], self.config.video_frames(t), h * s, w * s)
            out[:, :, done:done + frames.shape[2]] = frames
            done += frames.shape[2]
        return out

    def auto_chunk_frames(self, batch: int, height: int, width: int,
                          budget_bytes: Optional[int] = None) -> int:
        """Latent frames per decode pass whose full-resolution activations fit ``budget_bytes``.

        Estimate: about 6 live tensors of (batch, base width, 4 frames, 8H', 8W') per latent frame (the decoder's
        resolution: before Wan 2.2's unpatchify).
        """
        cfg = self.config
        width_full = (cfg.decoder_base_dim or cfg.base_dim) * cfg.dim_mult[0]
        elem = torch.finfo(self.dtype).bits // 8 if self.dtype.is_floating_point else 4
        res = self.spatial_factor // (cfg.patch_size or 1)
        per_frame = 6 * batch * width_full * cfg.temporal_factor * height * width * res ** 2 * elem
        budget = DECODE_BUDGET_BYTES if budget_bytes is None else budget_bytes
        return max(1, int(budget // max(per_frame, 1)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`decode` (the runtime's hot path; what an exporter traces)."""
        return self.decode(z)

    def check_latents(self, z: torch.Tensor) -> None:
        if z.dim() != 5 or z.shape[1] != self.z_dim or min(z.shape) < 1:
            raise ShapeError(f"VAE decode takes raw latents (B, {self.z_dim}, T', H', W') with every size >= 1, "
                             f"got shape {tuple(z.shape)}; add a batch axis / check the latent channel count")

    # -- encode
    def stream_encoder(self) -> "StreamEncoder":
        """An encoder that takes video frames a chunk at a time (1 + 4k first, then 4k per call)."""
        return StreamEncoder(self)

    def encode_distribution(self, video: torch.Tensor, chunk_frames: int = 4) -> LatentDistribution:
        """Video (B, 3, 1 + 4k, H, W) in [-1, 1] -> latent distribution over (B, z, 1 + k, H/s, W/s).

        Frames go in as diffusers does: the first alone, then ``chunk_frames`` (a multiple of 4) at a time.
        """
        tf = self.temporal_factor
        if chunk_frames < tf or chunk_frames % tf:
            raise ShapeError(f"chunk_frames must be a positive multiple of {tf}, got {chunk_frames}")
        self.check_video(video)
        stream = self.stream_encoder()
        parts = [stream.encode(video[:, :, :1])]
        for start in range(1, video.shape[2], chunk_frames):
            parts.append(stream.encode(video[:, :, start:start + chunk_frames]))
        if len(parts) == 1:
            return parts[0]
        return LatentDistribution(torch.cat([p.mean for p in parts], 2), torch.cat([p.logvar for p in parts], 2))

    def encode(self, video: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Video (B, 3, 1 + 4k, H, W) in [-1, 1] -> raw latents: the mean, or a sample if ``sample``."""
        dist = self.encode_distribution(video)
        return dist.sample(generator) if sample else dist.mode()

    def check_video(self, video: torch.Tensor, first: bool = True) -> None:
        c, tf, s = self.config.video_channels, self.temporal_factor, self.spatial_factor
        if video.dim() != 5 or video.shape[1] != c:
            raise ShapeError(f"VAE encode takes video (B, {c}, T, H, W), got shape {tuple(video.shape)}")
        t, h, w = video.shape[2:]
        if h < 1 or w < 1 or h % s or w % s:
            raise ShapeError(f"VAE encode needs height and width divisible by {s}, got {h}x{w}; resize or crop")
        if first and (t < 1 or (t - 1) % tf):
            raise ShapeError(f"VAE encode takes 1 + {tf}k frames, got {t}; trim to {1 + tf * max(0, (t - 1) // tf)}")


class StreamDecoder:
    """Decodes latent frames chunk by chunk; the frames out equal the one-shot decode's, in order.

    The first call's chunk of T' frames gives 1 + 4(T'-1) video frames, every later one 4T'.
    Memory held between calls is the per-layer temporal cache only (a few frames per layer).
    """

    def __init__(self, vae: WanVAE):
        self.vae = vae
        self.cache = TemporalCache()
        self.latent_frames_seen = 0
        self._shape: Optional[tuple[int, int, int]] = None

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Next chunk of raw latents (B, z, t, H', W') -> its video frames (B, 3, n, sH', sW') in [-1, 1]."""
        vae = self.vae
        vae.check_latents(z)
        b, _, t, h, w = z.shape
        if self._shape is None:
            self._shape = (b, h, w)
        elif self._shape != (b, h, w):
            raise ShapeError(f"stream decode chunk has batch/height/width {(b, h, w)} but the stream started with "
                             f"{self._shape}; start a new stream_decoder() for a different size")
        z = z.to(device=vae.device, dtype=vae.dtype)
        x = vae.decoder(vae.post_quant_conv(z), self.cache, first_chunk=self.latent_frames_seen == 0)
        self.latent_frames_seen += t
        return unpatchify(x, vae.config.patch_size).clamp_(-1.0, 1.0)

    def reset(self) -> None:
        """Forget the past: the next chunk starts a new clip."""
        self.cache.clear()
        self.latent_frames_seen = 0
        self._shape = None


class StreamEncoder:
    """Encodes video frames chunk by chunk: 1 + 4k frames first, then 4k per call (k >= 1)."""

    def __init__(self, vae: WanVAE):
        self.vae = vae
        self.cache = TemporalCache()
        self.frames_seen = 0

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> LatentDistribution:
        """Next chunk of video (B, 3, t, H, W) in [-1, 1] -> latent distribution of its latent frames."""
        vae = self.vae
        first = self.frames_seen == 0
        vae.check_video(video, first=first)
        tf = vae.temporal_factor
        t = video.shape[2]
        if not first and (t < tf or t % tf):
            raise ShapeError(f"after the first chunk, stream encode takes a multiple of {tf} frames, got {t}")
        video = patchify(video.to(device=vae.device, dtype=vae.dtype), vae.config.patch_size)
        moments = vae.quant_conv(vae.encoder(video, self.cache))
        self.frames_seen += t
        return LatentDistribution.from_moments(moments)

    def reset(self) -> None:
        self.cache.clear()
        self.frames_seen = 0
