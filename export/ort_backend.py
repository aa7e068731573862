"""onnxruntime backend: the Pipeline's DiT, VAE decoder and text encoder as ORT sessions.

The sampler loop stays the one in ``Pipeline.__call__``; only the three networks are swapped for
objects with the same call signatures. Tensors go in and out through IO binding on torch buffers
(no copies on CPU; on CUDA with the CUDA execution provider, device pointers are bound directly).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from vidrt.errors import BackendUnavailableError, CheckpointError, ConfigError, ShapeError
from vidrt.models.dit import DiTConfig
from vidrt.models.text import TextEncoder

logger = logging.getLogger(__name__)

_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32}


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("backend='onnxruntime' needs onnxruntime: pip install 'vidrt[onnx]' "
                                      "(onnxruntime-gpu for CUDA); or use backend='torch'") from None
    return onnxruntime


class OrtSession:
    """One ONNX graph in an onnxruntime InferenceSession, run on torch tensors through IO binding."""

    def __init__(self, path: Union[str, Path], device: torch.device, threads: Optional[int] = None):
        ort = require_onnxruntime()
        self.path = Path(path)
        self.device = device
        available = ort.get_available_providers()
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError(
                    f"backend='onnxruntime' on {device} needs onnxruntime-gpu (CUDAExecutionProvider); this "
                    f"onnxruntime has {available}. Install onnxruntime-gpu or use device='cpu'")
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        elif device.type == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise BackendUnavailableError(f"backend='onnxruntime' runs on cpu or cuda, not {device.type}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001 -- onnxruntime's own exception classes
            if type(e).__name__ in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile"):
                raise CheckpointError(f"{self.path} is corrupt or truncated ({type(e).__name__}); run `vidrt export "
                                      "onnx` again for this folder") from None
            raise CheckpointError(f"onnxruntime cannot load {self.path} ({type(e).__name__}: {e}); run `vidrt export "
                                  "onnx` again with this vidrt and onnxruntime, or use backend='torch'") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, torch.Tensor], output_shapes: dict[str, Sequence[int]],
            output_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Bind ``inputs`` (contiguous, on the session's device) and preallocated outputs; run; return outputs."""
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ShapeError(f"{self.path.name} needs inputs {sorted(missing)}")
        binding = self.session.io_binding()
        dev_type = "cuda" if self.device.type == "cuda" else "cpu"
        dev_id = self.device.index or 0
        keep = []
        for name in self.input_names:
            t = inputs[name].to(self.device).contiguous()
            keep.append(t)
            binding.bind_input(name, dev_type, dev_id, _NP[t.dtype], tuple(t.shape), t.data_ptr())
        outs = {}
        for name in self.output_names:
            o = torch.empty(tuple(output_shapes[name]), dtype=output_dtype, device=self.device)
            binding.bind_output(name, dev_type, dev_id, _NP[o.dtype], tuple(o.shape), o.data_ptr())
            outs[name] = o
        if dev_type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return outs


class OrtTransformer:
    """Stands in for ``WanDiT`` in the sampler loop: same call signature, the DiT graph inside.

    ``prepare_context`` returns the text context itself inside a one-element K/V-style list, so the
    Pipeline's per-block slicing (cond / uncond halves) works unchanged; the graph embeds the text.
    """

    def __init__(self, session: OrtSession, config: DiTConfig):
        self.session = session
        self.config = config
        # Pipeline.dtype reads transformer.patch_embedding.weight.dtype: the graph's I/O dtype is fp32.
        self.patch_embedding = SimpleNamespace(weight=torch.empty(0, dtype=torch.float32))
        self.blocks = ()

    def set_attention_backend(self, name: str) -> None:
        if name != "sdpa":
            logger.warning("attention=%r is ignored by backend='onnxruntime' (the graph has its own attention)", name)

    def prepare_context(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(context, context)]

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, context: Optional[torch.Tensor] = None, *,
                 context_kv=None, mask=None, frame_offset: int = 0, step_cache=None) -> torch.Tensor:
        if mask is not None or frame_offset or step_cache is not None:
            raise ConfigError("backend='onnxruntime' runs the full bidirectional DiT only (no masks, frame offsets "
                              "or step caches); use backend='torch' for causal / cached generation")
        if context is None:
            if not context_kv:
                raise ShapeError("the ONNX DiT needs the text context")
            context = context_kv[0][0]
        b = latents.shape[0]
        ts = timestep.reshape(-1) if timestep.ndim else timestep.expand(b)
        if ts.numel() != b:
            raise ShapeError(f"the ONNX DiT takes one timestep per batch element ({b}), got {ts.numel()}; "
                             "per-token timesteps need backend='torch'")
        out = self.session.run({"latents": latents.float(), "timestep": ts.float(), "context": context.float()},
                               {"velocity": latents.shape})
        return out["velocity"]


class _OrtUMT5:
    """The callable TextEncoder expects: (ids, mask) -> object with last_hidden_state."""

    def __init__(self, session: OrtSession, text_dim: int):
        self.session = session
        self.text_dim = text_dim

    def eval(self):
        return self

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor):
        out = self.session.run({"input_ids": ids.long(), "attention_mask": mask.long()},
                               {"hidden_states": (*ids.shape, self.text_dim)})
        return SimpleNamespace(last_hidden_state=out["hidden_states"])


class OrtTextEncoder(TextEncoder):
    """TextEncoder (same tokenisation, truncation warning and zero padding) over the ONNX UMT5 graph."""

    def __init__(self, tokenizer, session: OrtSession, text_dim: int, max_length: int):
        super().__init__(tokenizer, _OrtUMT5(session, text_dim), max_length)
        self._device = session.device

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


class OrtDecoder:
    """Replaces ``Pipeline.decode``: final latents -> video (B, 3, T, H, W) in [-1, 1] in one graph call."""

    def __init__(self, session: OrtSession, temporal_factor: int, spatial_factor: int):
        self.session = session
        self.temporal_factor = temporal_factor
        self.spatial_factor = spatial_factor

    def __call__(self, latents: torch.Tensor, progress: bool = False) -> torch.Tensor:
        b, _, t, h, w = latents.shape
        shape = (b, 3, 1 + self.temporal_factor * (t - 1), h * self.spatial_factor, w * self.spatial_factor)
        with tqdm(total=1, desc="decode", disable=not progress, leave=False) as bar:
            out = self.session.run({"latents": latents.float()}, {"video": shape})["video"]
            bar.update()
        return out


def build_pipeline(cls, path, *, device: torch.device, precision: str, attention: str = "sdpa",
                   threads: Optional[int] = None):
    """A ``cls`` (Pipeline) whose networks run in onnxruntime, from an exported folder or a checkpoint.

    A checkpoint folder is exported first into the ONNX cache (``$VIDRT_CACHE`` or ~/.cache/vidrt),
    keyed by model hash and precision, and reused after that.
    """
    from vidrt.checkpoints.load import load_tokenizer
    from vidrt.export.onnx_export import MANIFEST, graph_files, load_manifest
    from vidrt.pipeline import GenerationDefaults

    require_onnxruntime()
    onnx_dir = resolve_onnx_dir(path, precision)
    m = load_manifest(onnx_dir)
    if precision not in ("fp32", m["precision"]):
        fix = (f"export it again with `vidrt export onnx --precision {precision}`" if precision == "fp16" else
               f"use backend='torch' for precision={precision!r} (backend='onnxruntime' runs fp32/fp16 graphs only)")
        raise ConfigError(f"{onnx_dir} was exported at {m['precision']}, not {precision}; pass "
                          f"precision={m['precision']!r}, or {fix}")
    files = graph_files(m)
    missing = [f for f in files.values() if not (onnx_dir / f).is_file()]
    if missing:
        raise ConfigError(f"{onnx_dir} lacks {missing}; export all the graphs (`vidrt export onnx`) for a full "
                          "pipeline")
    where = onnx_dir / MANIFEST
    cfg = DiTConfig.from_dict(m["dit_config"], where=f"{where} (dit_config)")
    sess = {k: OrtSession(onnx_dir / f, device, threads) for k, f in files.items()}
    tokenizer = load_tokenizer(onnx_dir / "tokenizer")
    defaults = GenerationDefaults.from_dict(m["defaults"], where=f"{where} (defaults)")
    text = OrtTextEncoder(tokenizer, sess["text_encoder"], m["text"]["text_dim"], m["text"]["max_length"])
    decoder = OrtDecoder(sess["vae_decoder"], m["vae"]["temporal_factor"], m["vae"]["spatial_factor"])
    pipe = cls(OrtTransformer(sess["transformer"], cfg), decoder, text, scheduler_config=m["scheduler_config"],
               defaults=defaults, device=device, precision=m["precision"], attention=attention,
               source=str(onnx_dir), vae_scale_temporal=m["vae"]["temporal_factor"],
               vae_scale_spatial=m["vae"]["spatial_factor"],
               transformer_2=OrtTransformer(sess["transformer_2"], cfg) if "transformer_2" in sess else None,
               boundary_ratio=m.get("boundary_ratio"))
    pipe.decode = decoder
    pipe.backend = "onnxruntime"
    pipe.onnx_manifest = m
    return pipe


def cache_root() -> Path:
    return Path(os.environ.get("VIDRT_CACHE", Path.home() / ".cache" / "vidrt"))


def resolve_onnx_dir(path, precision: str) -> Path:
    """An exported folder as is; a checkpoint folder -> its cached export (made on first use)."""
    from vidrt.export.onnx_export import export_onnx, is_onnx_dir, model_hash
    from vidrt.pipeline import EMBEDDED_MODEL, embedded_model_path

    if is_onnx_dir(path):
        return Path(path)
    src = embedded_model_path() if path is None or str(path) == EMBEDDED_MODEL else Path(path)
    export_precision = precision if precision in ("fp32", "fp16") else None
    if export_precision is None:
        raise ConfigError(f"backend='onnxruntime' runs fp32 or fp16 graphs, not precision={precision!r}; "
                          "fp8/int8 are modes of backend='torch'")
    target = cache_root() / "onnx" / f"{model_hash(src)}-{export_precision}"
    if not is_onnx_dir(target):
        logger.info("exporting %s to ONNX cache %s", src, target)
        export_onnx(src, target, precision=export_precision)
    return target
