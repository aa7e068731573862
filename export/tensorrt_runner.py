"""TensorRT backend: the Pipeline's networks as TensorRT engines, torch CUDA tensors in and out.

Written against TensorRT 10's documented Python API (``Runtime.deserialize_cuda_engine``,
``IExecutionContext.set_input_shape / set_tensor_address / execute_async_v3``): inputs and outputs
are torch tensors on the GPU whose device pointers are bound directly, no host copies. The engine
objects plug into the same wrappers as the onnxruntime backend (they share the ``run`` contract).
NOTE: untested on real engines in this project (no machine here has TensorRT).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import torch

from vidrt.errors import BackendUnavailableError, ShapeError
from vidrt.export.tensorrt_build import Request, build_engines, require_tensorrt

logger = logging.getLogger(__name__)


class TrtEngine:
    """One deserialized engine with its execution context; ``run`` has OrtSession's contract."""

    def __init__(self, path: str | Path, device: torch.device):
        trt = require_tensorrt()
        if device.type != "cuda":
            raise BackendUnavailableError("backend='tensorrt' runs on CUDA devices only; use device='cuda' or "
                                          "backend='onnxruntime' on CPU")
        self.path = Path(path)
        self.device = device
        self._trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BackendUnavailableError(f"TensorRT could not load {self.path} (built by another TensorRT "
                                          "version or GPU?); delete it to rebuild")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def run(self, inputs: dict[str, torch.Tensor], output_shapes: dict[str, Sequence[int]],
            output_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        keep = []
        for name in self.input_names:
            t = inputs[name].to(self.device).contiguous()
            if t.dtype == torch.int64 and self.engine.get_tensor_dtype(name) == self._trt.int32:
                t = t.int()
            keep.append(t)
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise ShapeError(f"{self.path.name}: input {name} shape {tuple(t.shape)} is outside the engine's "
                                 "optimization profile; rebuild with `vidrt export tensorrt` for these sizes")
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if tuple(output_shapes[name]) != shape:
                raise ShapeError(f"{self.path.name}: output {name} would be {shape}, expected "
                                 f"{tuple(output_shapes[name])}")
            o = torch.empty(shape, dtype=output_dtype, device=self.device)
            self.context.set_tensor_address(name, o.data_ptr())
            outs[name] = o
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendUnavailableError(f"TensorRT execution of {self.path.name} failed")
        return outs


def default_requests(defaults, max_batch: int = 1) -> list[Request]:
    """Requests an engine built on first use covers: 1 frame at 16x16 up to the model's default clip."""
    return [Request(1, 16, 16, 1), Request(defaults.num_frames, defaults.height, defaults.width, max_batch)]


def build_pipeline(cls, path, *, device: torch.device, precision: str, attention: str = "sdpa",
                   requests: Optional[Sequence[Request]] = None):
    """A ``cls`` (Pipeline) on TensorRT engines built (or reused from the engine cache) from the ONNX folder."""
    from vidrt.checkpoints.load import load_tokenizer
    from vidrt.export.onnx_export import MANIFEST, load_manifest
    from vidrt.export.ort_backend import OrtDecoder, OrtTextEncoder, OrtTransformer, resolve_onnx_dir
    from vidrt.models.dit import DiTConfig
    from vidrt.pipeline import GenerationDefaults

    require_tensorrt()
    if device.type != "cuda":
        raise BackendUnavailableError("backend='tensorrt' needs device='cuda'; on CPU use backend='onnxruntime'")
    onnx_dir = resolve_onnx_dir(path, "fp32")  # engines take their precision from builder flags
    m = load_manifest(onnx_dir)
    defaults = GenerationDefaults.from_dict(m["defaults"], where=f"{onnx_dir / MANIFEST} (defaults)")
    engines = build_engines(onnx_dir, list(requests or default_requests(defaults)), precision=precision)
    eng = {k: TrtEngine(p, device) for k, p in engines.items()}
    tokenizer = load_tokenizer(onnx_dir / "tokenizer")
    text = OrtTextEncoder(tokenizer, eng["text_encoder"], m["text"]["text_dim"], m["text"]["max_length"])
    decoder = OrtDecoder(eng["vae_decoder"], m["vae"]["temporal_factor"], m["vae"]["spatial_factor"])
    cfg = DiTConfig.from_dict(m["dit_config"], where=f"{onnx_dir / MANIFEST} (dit_config)")
    pipe = cls(OrtTransformer(eng["transformer"], cfg), decoder, text,
               scheduler_config=m["scheduler_config"], defaults=defaults, device=device, precision=precision,
               attention=attention, source=str(onnx_dir), vae_scale_temporal=m["vae"]["temporal_factor"],
               vae_scale_spatial=m["vae"]["spatial_factor"],
               transformer_2=OrtTransformer(eng["transformer_2"], cfg) if "transformer_2" in eng else None,
               boundary_ratio=m.get("boundary_ratio"))
    pipe.decode = decoder
    pipe.backend = "tensorrt"
    pipe.onnx_manifest = m
    return pipe
