"""The one error family of vidrt: every message names the problem and the fix."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class VidrtError(Exception):
    """Base class of every error vidrt raises on purpose."""


class ShapeError(VidrtError, ValueError):
    """A requested size, frame count or tensor shape the model cannot take."""


class ConfigError(VidrtError, ValueError):
    """An unknown option value: precision, attention backend, sampler, cache policy."""


class CheckpointError(VidrtError):
    """A missing, corrupt or mismatched checkpoint."""


class DeviceError(VidrtError):
    """A device (or a mode on it) that is not available here."""


class PromptError(VidrtError, ValueError):
    """A prompt or shot list that cannot be used."""


class BackendUnavailableError(DeviceError):
    """An optional backend (triton, flash-attn, onnxruntime, tensorrt) that is not installed or cannot run."""


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocator failure (CPU or CUDA), to be re-raised as an error naming the size."""
    import torch

    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                  if k is not None)
    msg = str(e).lower()
    return isinstance(e, (MemoryError, *kinds)) or "out of memory" in msg or "can't allocate memory" in msg


@contextmanager
def out_of_memory_as_shape_error(message: str) -> Iterator[None]:
    """Re-raise an allocator failure inside the block as a ShapeError: ``message`` (what was asked and the fix) and
    the allocator's first line; every other error passes unchanged."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:  # torch's OutOfMemoryError is a RuntimeError too
        if not is_out_of_memory(e):
            raise
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ShapeError(f"{message} ({cause})") from e


class LatencyError(VidrtError):
    """A latency target or deadline that no plan can meet."""
