"""Video results: uint8 frames, fps, run statistics, and saving to MP4 / PNG / GIF."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from vidrt.errors import ConfigError, ShapeError

# What Video.save writes; JPEG holds a single image, .png / .webp are animated when the clip has several frames.
CLIP_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".gif", ".png", ".webp")   # also what vidrt stream writes
SINGLE_IMAGE_SUFFIXES = (".jpg", ".jpeg")
VIDEO_SUFFIXES = CLIP_SUFFIXES + SINGLE_IMAGE_SUFFIXES


def from_frames(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (3, T, H, W) float video in [-1, 1] (what the VAE encodes; ``to_frames``
    inverts it)."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def to_frames(video: torch.Tensor) -> np.ndarray:
    """Decoded (3, T, H, W) video in [-1, 1] -> (T, H, W, 3) uint8, rounding like diffusers."""
    x = (video.float() / 2 + 0.5).clamp(0, 1)
    return (x.permute(1, 2, 3, 0).cpu().numpy() * 255).round().astype(np.uint8)


@dataclass
class Video:
    """A generated clip: ``frames`` (T, H, W, 3) uint8 at ``fps``; ``stats`` holds timings and settings."""

    frames: np.ndarray
    fps: float = 16.0
    prompt: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    latents: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ShapeError(f"Video frames must be (T, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def save(self, path: str | Path, quality: int = 8) -> Path:
        """Write .mp4 (H.264 via imageio-ffmpeg), .gif, .png/.webp (animated when the clip has several frames, like
        ``vidrt stream``'s PNGs), or .jpg (a 1-frame video only)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise ConfigError(f"cannot save {path.name}: use one of {', '.join(VIDEO_SUFFIXES)}")
        if suffix in SINGLE_IMAGE_SUFFIXES and self.num_frames != 1:
            raise ConfigError(f"cannot save {self.num_frames} frames as {path.name}: a JPEG holds one image; use "
                              ".mp4, .gif or .png (animated)")
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix in (".mp4", ".mkv", ".mov", ".avi"):
            from vidrt.mp4 import Mp4Writer

            with Mp4Writer(path, fps=self.fps, quality=quality) as w:
                w.write(self.frames)
        else:
            from PIL import Image

            imgs = [Image.fromarray(f) for f in self.frames]
            if len(imgs) == 1 and suffix != ".gif":
                imgs[0].save(path)
            else:
                imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / self.fps), loop=0)
        return path
