"""vidrt: an inference runtime for text-to-video diffusion transformers.

``vidrt.Pipeline`` and ``vidrt.Video`` are imported on first use, so ``import vidrt`` stays light
(no transformers, triton or other optional packages at import time).
"""
from vidrt.errors import (BackendUnavailableError, CheckpointError, ConfigError, DeviceError, LatencyError,
                          PromptError, ShapeError, VidrtError)

__version__ = "0.1.0"

__all__ = ["Pipeline", "StepState", "Regions", "Video", "Shot", "VidrtError", "ShapeError", "ConfigError", "CheckpointError",
           "DeviceError", "PromptError", "BackendUnavailableError", "LatencyError", "__version__"]

_LAZY = {"Pipeline": "vidrt.pipeline", "StepState": "vidrt.pipeline", "Regions": "vidrt.regions",
         "Video": "vidrt.video", "Shot": "vidrt.longclip.shots"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidrt' has no attribute {name!r}")
