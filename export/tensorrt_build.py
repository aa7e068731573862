"""TensorRT engines from vidrt's ONNX graphs: optimization profiles, precision flags, timing and engine caches.

Everything except :func:`build_engine` runs without TensorRT and is tested on CPU: profile
derivation from requested generation sizes, cache keys, precision checks against a GPU's compute
capability, and the graph checks TensorRT needs (shapes, dtypes, unsupported ops).
:func:`build_engine` follows TensorRT 10's documented Python API (``trt.Builder``,
``trt.OnnxParser``, optimization profiles, ``build_serialized_network``). NOTE: no machine this
project was built on has TensorRT, so engine builds are untested on real GPUs here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from vidrt.errors import BackendUnavailableError, ConfigError, ShapeError

logger = logging.getLogger(__name__)

TRT_PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8")
# compute capability each builder precision needs
MIN_CAPABILITY = {"fp32": (0, 0), "fp16": (5, 3), "bf16": (8, 0), "fp8": (8, 9), "int8": (6, 1)}
# ONNX ops TensorRT 10's parser does not import (or only as plugins): the graph must not contain them.
UNSUPPORTED_OPS = frozenset({"Unique", "SequenceConstruct", "SequenceAt", "SequenceInsert", "SequenceEmpty",
                             "SplitToSequence", "ConcatFromSequence", "StringNormalizer", "TfIdfVectorizer",
                             "Optional", "OptionalGetElement", "OptionalHasElement", "ImageDecoder", "RegexFullMatch"})
# TensorRT has no float64 / complex / string tensors
UNSUPPORTED_DTYPES = {11: "double", 14: "complex64", 15: "complex128", 8: "string"}


@dataclass(frozen=True)
class Request:
    """One generation size an engine must serve."""

    num_frames: int
    height: int
    width: int
    batch: int = 1
    cfg: bool = True  # classifier-free guidance doubles the DiT's batch


@dataclass
class Profile:
    """Per-input (min, opt, max) shapes of one graph."""

    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: {"min": list(a), "opt": list(b), "max": list(c)} for k, (a, b, c) in sorted(self.shapes.items())}

    def covers(self, name: str, shape: Sequence[int]) -> bool:
        lo, _, hi = self.shapes[name]
        return len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))


def derive_profiles(manifest: dict[str, Any], requests: Sequence[Request],
                    opt: Optional[Request] = None) -> dict[str, Profile]:
    """min/opt/max profiles of the three graphs covering every request; ``opt`` defaults to the largest.

    Latent sizes follow the VAE (4x time, 8x space); the text length is the encoder's fixed padded
    length (the Pipeline pads every prompt to it).
    """
    if not requests:
        raise ConfigError("derive_profiles needs at least one request size")
    tf, sf = manifest["vae"]["temporal_factor"], manifest["vae"]["spatial_factor"]
    patch = manifest["dit_config"]["patch_size"]
    c_in, z = manifest["dit_config"]["in_channels"], manifest["vae"]["z_dim"]
    text_len, text_dim = manifest["text"]["max_length"], manifest["text"]["text_dim"]
    mult_h, mult_w = sf * patch[1], sf * patch[2]

    def latent(r: Request) -> tuple[int, int, int, int]:
        if r.num_frames < 1 or (r.num_frames - 1) % tf:
            raise ShapeError(f"profile request num_frames={r.num_frames} is not {tf}k+1")
        if r.height % mult_h or r.width % mult_w or r.height <= 0 or r.width <= 0:
            raise ShapeError(f"profile request {r.height}x{r.width} is not a multiple of {mult_h}x{mult_w}")
        if r.batch < 1:
            raise ShapeError(f"profile request batch={r.batch} must be >= 1")
        return r.batch, (r.num_frames - 1) // tf + 1, r.height // sf, r.width // sf

    lat = [latent(r) for r in requests]
    dit_b = [b * (2 if r.cfg else 1) for r, (b, *_) in zip(requests, lat)]
    o = opt or max(requests, key=lambda r: (r.batch, r.num_frames * r.height * r.width))
    ob, ot, oh, ow = latent(o)
    odb = ob * (2 if o.cfg else 1)

    def rng(values):
        return min(values), max(values)

    (b0, b1), (t0, t1) = rng([x[0] for x in lat]), rng([x[1] for x in lat])
    (h0, h1), (w0, w1) = rng([x[2] for x in lat]), rng([x[3] for x in lat])
    db0, db1 = rng(dit_b)
    tb0, tb1 = rng(dit_b)  # the text encoder sees prompts + negative prompts in one batch
    return {
        "transformer": Profile({
            "latents": ((db0, c_in, t0, h0, w0), (odb, c_in, ot, oh, ow), (db1, c_in, t1, h1, w1)),
            "timestep": ((db0,), (odb,), (db1,)),
            "context": ((db0, text_len, text_dim), (odb, text_len, text_dim), (db1, text_len, text_dim))}),
        "vae_decoder": Profile({"latents": ((b0, z, t0, h0, w0), (ob, z, ot, oh, ow), (b1, z, t1, h1, w1))}),
        "text_encoder": Profile({"input_ids": ((tb0, text_len), (odb, text_len), (tb1, text_len)),
                                 "attention_mask": ((tb0, text_len), (odb, text_len), (tb1, text_len))}),
    }


def check_precision_for_gpu(precision: str, capability: tuple[int, int]) -> None:
    """ConfigError for an unknown builder precision, DeviceError naming the ones this GPU can build."""
    from vidrt.errors import DeviceError

    if precision not in TRT_PRECISIONS:
        raise ConfigError(f"unknown TensorRT precision {precision!r}; choose one of {', '.join(TRT_PRECISIONS)}")
    if tuple(capability) < MIN_CAPABILITY[precision]:
        ok = [p for p in TRT_PRECISIONS if tuple(capability) >= MIN_CAPABILITY[p]]
        raise DeviceError(f"TensorRT {precision} needs compute capability >= "
                          f"{'.'.join(map(str, MIN_CAPABILITY[precision]))}, this GPU is "
                          f"{capability[0]}.{capability[1]}; choose one of {', '.join(ok)}")


def engine_cache_key(model_hash: str, component: str, profile: Profile, precision: str, trt_version: str,
                     gpu: str, capability: tuple[int, int], graph_sha256: str = "") -> str:
    """Engine file key: model hash + graph + profile + precision + TensorRT version + GPU (24 hex digits)."""
    blob = json.dumps({"model": model_hash, "component": component, "graph": graph_sha256,
                       "profile": profile.as_dict(), "precision": precision, "tensorrt": trt_version, "gpu": gpu,
                       "sm": list(capability)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class GraphIssue:
    severity: str  # "error" (TensorRT cannot build it) | "warning"
    message: str


def check_graph_for_tensorrt(onnx_path: str | Path, precision: str = "fp32") -> list[GraphIssue]:
    """What would stop (or weaken) a TensorRT build of this graph: ops, dtypes, shapes, Q/DQ for fp8/int8."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    issues: list[GraphIssue] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 17:
        issues.append(GraphIssue("error", f"opset {opset} < 17: export again with vidrt (opset 18)"))
    ops = {n.op_type for n in g.node}
    for op in sorted(ops & UNSUPPORTED_OPS):
        issues.append(GraphIssue("error", f"op {op} is not supported by TensorRT's ONNX parser"))
    custom = sorted({n.domain for n in g.node if n.domain not in ("", "ai.onnx")})
    for d in custom:
        issues.append(GraphIssue("error", f"custom op domain {d!r} needs a TensorRT plugin"))
    for t in list(g.initializer):
        if t.data_type in UNSUPPORTED_DTYPES:
            issues.append(GraphIssue("error", f"initializer {t.name} is {UNSUPPORTED_DTYPES[t.data_type]}"))
    for n in g.node:
        if n.op_type == "Cast":
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            if to in UNSUPPORTED_DTYPES:
                issues.append(GraphIssue("error", f"node {n.name} casts to {UNSUPPORTED_DTYPES[to]}"))
    for v in list(g.input) + list(g.output):
        tt = v.type.tensor_type
        if tt.elem_type in UNSUPPORTED_DTYPES:
            issues.append(GraphIssue("error", f"graph I/O {v.name} is {UNSUPPORTED_DTYPES[tt.elem_type]}"))
        if not tt.HasField("shape"):
            issues.append(GraphIssue("error", f"graph I/O {v.name} has no rank; TensorRT needs ranked tensors"))
        elif any(not d.dim_param and d.dim_value <= 0 for d in tt.shape.dim):
            issues.append(GraphIssue("warning", f"graph I/O {v.name} has an unnamed dynamic axis"))
    if precision in ("fp8", "int8") and not ops & {"QuantizeLinear", "DequantizeLinear"}:
        issues.append(GraphIssue("warning", f"{precision} requested but the graph has no Q/DQ nodes; TensorRT 10 "
                                            "then keeps fp16/fp32 kernels (quantize the ONNX with NVIDIA ModelOpt)"))
    return issues


# ----------------------------------------------------------------------------------------- build

def require_tensorrt():
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise BackendUnavailableError("TensorRT is not installed: pip install 'vidrt[tensorrt]' on a machine with an "
                                      "NVIDIA GPU; or use backend='onnxruntime' / 'torch'") from None
    return trt


def gpu_identity(device_index: int = 0) -> tuple[str, tuple[int, int]]:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs a CUDA GPU and none is visible; use backend='onnxruntime' "
                                      "or backend='torch'")
    return torch.cuda.get_device_name(device_index), torch.cuda.get_device_capability(device_index)


def build_engine(onnx_path: str | Path, profile: Profile, engine_path: str | Path, *, precision: str = "fp16",
                 timing_cache: Optional[str | Path] = None, workspace_gb: float = 8.0) -> Path:
    """Build and serialize one engine (TensorRT 10 Python API). Untested on real engines in this project."""
    trt = require_tensorrt()
    errors = [i.message for i in check_graph_for_tensorrt(onnx_path, precision) if i.severity == "error"]
    if errors:
        raise ConfigError(f"{onnx_path} cannot be built by TensorRT: {'; '.join(errors)}")
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):  # reads external data beside the file
        msgs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ConfigError(f"TensorRT could not parse {onnx_path}: {'; '.join(msgs)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    flags = {"fp16": ["FP16"], "bf16": ["BF16"], "fp8": ["FP8", "FP16"], "int8": ["INT8", "FP16"]}.get(precision, [])
    for f in flags:
        config.set_flag(getattr(trt.BuilderFlag, f))
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile.shapes.items():
        opt.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    tcache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(tcache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConfigError(f"TensorRT failed to build {onnx_path} (see the TensorRT log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    if timing_cache:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    logger.info("built %s in %.1fs", engine_path, time.perf_counter() - t0)
    return engine_path


def build_engines(onnx_dir: str | Path, requests: Sequence[Request], *, precision: str = "fp16",
                  cache_dir: Optional[str | Path] = None, opt: Optional[Request] = None) -> dict[str, Path]:
    """Engines of all three graphs for ``requests``, reused from the engine cache when their key matches."""
    from vidrt.export.onnx_export import graph_files, load_manifest
    from vidrt.export.ort_backend import cache_root

    trt = require_tensorrt()
    gpu, cap = gpu_identity()
    check_precision_for_gpu(precision, cap)
    onnx_dir = Path(onnx_dir)
    m = load_manifest(onnx_dir)
    profiles = derive_profiles(m, requests, opt)
    root = Path(cache_dir) if cache_dir else cache_root() / "tensorrt"
    timing = root / f"timing-{trt.__version__}-{gpu.replace(' ', '_')}.cache"
    out = {}
    for comp, file in graph_files(m).items():
        dit = comp in ("transformer", "transformer_2")   # a two-expert model's experts share the DiT's profile
        profile = profiles["transformer" if dit else comp]
        # the VAE and text encoder follow the policy: fp32 (text) / fp32-fp16 (VAE) whatever the DiT's precision
        prec = precision if dit else ("fp16" if comp == "vae_decoder" and precision != "fp32" else "fp32")
        key = engine_cache_key(m["model_hash"], comp, profile, prec, trt.__version__, gpu, cap,
                               m["graphs"][comp]["sha256"])
        path = root / f"{comp}-{key}.engine"
        if not path.is_file():
            build_engine(onnx_dir / file, profile, path, precision=prec, timing_cache=timing)
        meta = path.with_suffix(".json")
        meta.write_text(json.dumps({"component": comp, "precision": prec, "profile": profile.as_dict(),
                                    "requests": [asdict(r) for r in requests], "gpu": gpu, "tensorrt": trt.__version__,
                                    "model_hash": m["model_hash"]}, indent=2))
        out[comp] = path
    return out
