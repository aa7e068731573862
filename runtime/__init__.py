"""vidrt: an inference runtime for text-to-video diffusion transformers."""
from vidrt.errors import (BackendUnavailableError, CheckpointError, ConfigError, DeviceError, PromptError,
                          ShapeError, VidrtError)

__version__ = "0.1.0"

__all__ = ["VidrtError", "ShapeError", "ConfigError", "CheckpointError", "DeviceError", "PromptError",
           "BackendUnavailableError", "__version__"]
