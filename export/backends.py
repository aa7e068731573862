"""Inference backends of the Pipeline's networks: torch (the runtime itself), onnxruntime, tensorrt."""
from __future__ import annotations

from vidrt.errors import ConfigError

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def check_backend_name(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def build_pipeline(cls, path, *, backend: str, device, precision: str, attention: str = "sdpa"):
    """A ``cls`` (Pipeline) whose DiT, VAE decoder and text encoder run on ``backend`` (not "torch")."""
    check_backend_name(backend)
    if backend == "onnxruntime":
        from vidrt.export.ort_backend import build_pipeline as build
    elif backend == "tensorrt":
        from vidrt.export.tensorrt_runner import build_pipeline as build
    else:
        raise ConfigError("backend='torch' is the Pipeline's own path; call Pipeline.from_pretrained without backend=")
    return build(cls, path, device=device, precision=precision, attention=attention)
