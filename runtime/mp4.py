"""Progressive MP4 writing: frames go to ffmpeg as they are made, so an interrupted run keeps a playable file."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class Mp4Writer:
    """H.264 writer fed chunk by chunk; ``close()`` (or leaving the ``with``) finalises the file.

    Uses fragmented MP4 so every finished fragment is playable even if the process dies later.
    """

    def __init__(self, path: str | Path, fps: float = 16.0, quality: int = 8):
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._w = imageio.get_writer(
            str(self.path), fps=fps, codec="libx264", quality=quality, macro_block_size=1,
            ffmpeg_log_level="error", pixelformat="yuv420p",
            output_params=["-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-g", str(max(1, int(fps)))],
        )
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        """Append (T, H, W, 3) uint8 frames (or one (H, W, 3) frame)."""
        frames = frames[None] if frames.ndim == 3 else frames
        for f in frames:
            self._w.append_data(f)
            self.frames_written += 1

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
