"""Export a checkpoint's DiT, VAE decoder and text encoder to ONNX, one folder with a manifest.

Every graph has dynamic batch, latent frames, height, width and text length axes, so one
exported folder serves every request size (tests run 1-frame, non-square and multi-frame clips
from the same files). Exporter: torch's TorchScript-based ``torch.onnx.export`` at opset 18
(no onnxscript needed); ``aten::rms_norm`` gets an opset-18 decomposition. Weights above 2 GB go
to external data next to the graph. Each graph passes ``onnx.checker`` before the manifest is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from vidrt.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

MANIFEST = "vidrt_onnx.json"
FORMAT = "vidrt-onnx"
FORMAT_VERSION = 1
DEFAULT_OPSET = 18
EXPORT_PRECISIONS = ("fp32", "fp16")
TWO_GB = 2 * 1024**3

FILES = {"transformer": "transformer.onnx", "vae_decoder": "vae_decoder.onnx", "text_encoder": "text_encoder.onnx"}
# a two-expert (Wan 2.2 A14B) checkpoint's low-noise DiT: exported with "transformer", same axes; the manifest
# says boundary_ratio
EXPERT_FILE = "transformer_2.onnx"


def graph_files(manifest: dict[str, Any]) -> dict[str, str]:
    """Component -> graph file of an exported folder: FILES, plus transformer_2 for a two-expert model."""
    extra = {"transformer_2": EXPERT_FILE} if manifest.get("boundary_ratio") is not None else {}
    return {**FILES, **extra}

DIT_AXES = {"latents": {0: "batch", 2: "latent_frames", 3: "latent_height", 4: "latent_width"},
            "timestep": {0: "batch"},
            "context": {0: "batch", 1: "text_len"},
            "velocity": {0: "batch", 2: "latent_frames", 3: "latent_height", 4: "latent_width"}}
VAE_AXES = {"latents": {0: "batch", 2: "latent_frames", 3: "latent_height", 4: "latent_width"},
            "video": {0: "batch", 2: "frames", 3: "height", 4: "width"}}
TEXT_AXES = {"input_ids": {0: "batch", 1: "text_len"}, "attention_mask": {0: "batch", 1: "text_len"},
             "hidden_states": {0: "batch", 1: "text_len"}}


@dataclass
class SampleShapes:
    """Sizes of the example inputs the graphs are traced with (the axes stay dynamic)."""

    batch: int = 2
    latent_frames: int = 2
    latent_height: int = 4
    latent_width: int = 6
    text_len: int = 8


def require_onnx(needed_by: str = "ONNX export") -> None:
    """A BackendUnavailableError naming the pip extra unless the onnx package is installed."""
    from vidrt.cli import require_module

    require_module("onnx", needed_by, "onnx")


_SYMBOLICS_DONE = False


def register_symbolics(opset: int) -> None:
    """Opset-18 decomposition of aten::rms_norm (ONNX has RMSNormalization only from opset 23)."""
    global _SYMBOLICS_DONE
    if _SYMBOLICS_DONE:
        return
    from torch.onnx import symbolic_helper as sh

    def rms_norm(g, x, normalized_shape, weight, eps):
        if sh._is_packed_list(normalized_shape):
            n = len(sh._unpack_list(normalized_shape))
        else:
            n = len(sh._get_const(normalized_shape, "is", "normalized_shape"))
        axes = g.op("Constant", value_t=torch.tensor(list(range(-n, 0)), dtype=torch.long))
        e = sh._maybe_get_const(eps, "f")
        e = 1e-6 if e is None or sh._is_value(e) else float(e)
        ms = g.op("ReduceMean", g.op("Mul", x, x), axes, keepdims_i=1)
        eps_c = g.op("CastLike", g.op("Constant", value_t=torch.tensor(e, dtype=torch.float32)), x)
        y = g.op("Mul", x, g.op("Reciprocal", g.op("Sqrt", g.op("Add", ms, eps_c))))
        return y if sh._is_none(weight) else g.op("Mul", y, weight)

    for v in range(DEFAULT_OPSET, max(opset, DEFAULT_OPSET) + 1):
        torch.onnx.register_custom_op_symbolic("aten::rms_norm", rms_norm, v)
    _SYMBOLICS_DONE = True


# ----------------------------------------------------------------------------------------- hashing

def model_hash(root: Union[str, Path]) -> str:
    """sha256 over a checkpoint folder's config, scheduler and weight files (names and bytes), 16 hex digits."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in
                   (".json", ".safetensors", ".pth", ".bin", ".txt", ".model"))
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- export

def export_graph(module: torch.nn.Module, args: tuple, path: Path, *, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict, opset: int = DEFAULT_OPSET,
                 external_data: Optional[bool] = None) -> dict[str, Any]:
    """Trace ``module`` on ``args`` to ``path``; external data when weights exceed 2 GB (or if asked).

    Returns the graph's facts for the manifest: inputs/outputs with symbolic shapes and dtypes.
    """
    import onnx

    register_symbolics(opset)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    n_bytes += sum(b.numel() * b.element_size() for b in module.buffers())
    use_external = n_bytes > TWO_GB - (64 << 20) if external_data is None else external_data
    tmp = path.with_suffix(".tmp")
    tmp.mkdir(exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on shape checks that are constant by design
            torch.onnx.export(module, args, str(tmp / path.name), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        model = onnx.load(str(tmp / path.name), load_external_data=True)
        for stale in (path, path.with_name(path.name + ".data")):
            stale.unlink(missing_ok=True)
        if use_external:
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)
        else:
            onnx.save_model(model, str(path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    onnx.checker.check_model(str(path), full_check=False)
    return {"file": path.name, "external_data": use_external, "opset": opset, "weight_bytes": n_bytes,
            "inputs": _io(model.graph.input), "outputs": _io(model.graph.output), "sha256": file_sha256(path)}


def _io(values) -> dict[str, Any]:
    import onnx

    out = {}
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        out[v.name] = {"shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}
    return out


def export_onnx(model: Union[str, Path, None], out_dir: Union[str, Path], *, precision: str = "fp32",
                opset: int = DEFAULT_OPSET, sample: Optional[SampleShapes] = None,
                external_data: Optional[bool] = None,
                components: tuple[str, ...] = ("transformer", "vae_decoder", "text_encoder")) -> dict[str, Any]:
    """Export a checkpoint folder (``None``/"default" = embedded model) to ``out_dir``; returns the manifest.

    ``precision`` applies to the DiT ("fp16" keeps the fp32 module set of the precision policy);
    the VAE decoder and text encoder are exported in fp32 (UMT5 overflows in fp16). Graph inputs and
    outputs are fp32 at every precision. The folder also gets the tokenizer, so
    ``Pipeline.from_pretrained(out_dir, backend="onnxruntime")`` needs nothing else.
    """
    require_onnx()
    from vidrt.checkpoints.load import load_text_encoder, load_transformer, load_vae, resolve_layout
    from vidrt.export.graphs import DiTGraph, TextEncoderGraph, VAEDecoderGraph
    from vidrt.pipeline import EMBEDDED_MODEL, GenerationDefaults, embedded_model_path
    from vidrt.precision import dtype_of

    if precision not in EXPORT_PRECISIONS:
        raise ConfigError(f"ONNX export precision {precision!r} is not supported; choose one of "
                          f"{', '.join(EXPORT_PRECISIONS)} (fp8/int8 are runtime modes of the torch backend)")
    if opset < DEFAULT_OPSET:
        raise ConfigError(f"opset {opset} is too old; vidrt exports at opset >= {DEFAULT_OPSET}")
    unknown = [c for c in components if c not in FILES]
    if unknown:
        raise ConfigError(f"unknown component(s) {unknown}; choose from {', '.join(FILES)}")
    if model is None or str(model) == EMBEDDED_MODEL:
        model = embedded_model_path()
        if not (Path(model) / "model_index.json").is_file():
            raise CheckpointError(f"the embedded default model is not in this build ({model}); pass --model PATH")
    layout = resolve_layout(model)
    defaults = GenerationDefaults.from_dict(layout.defaults)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = sample or SampleShapes()
    t0 = time.perf_counter()

    dit = load_transformer(layout.transformer, dtype=dtype_of(precision))
    dits = {"transformer": dit}
    if layout.boundary_ratio is not None:   # a two-expert checkpoint (a transformer_2 without one never runs)
        dits["transformer_2"] = load_transformer(layout.transformer_2, dtype=dtype_of(precision))
    vae = load_vae(layout, dtype=torch.float32)
    text = load_text_encoder(layout, dtype=torch.float32, max_length=defaults.max_sequence_length)
    cfg = dit.config
    gen = torch.Generator().manual_seed(0)
    graphs: dict[str, Any] = {}
    if "transformer" in components:
        args = (torch.randn(s.batch, cfg.in_channels, s.latent_frames, s.latent_height, s.latent_width, generator=gen),
                torch.rand(s.batch, generator=gen) * 1000, torch.randn(s.batch, s.text_len, cfg.text_dim, generator=gen))
        files = graph_files({"boundary_ratio": layout.boundary_ratio})
        for name, net in dits.items():
            graphs[name] = export_graph(DiTGraph(net).eval(), args, out / files[name],
                                        input_names=["latents", "timestep", "context"],
                                        output_names=["velocity"], dynamic_axes=DIT_AXES, opset=opset,
                                        external_data=external_data)
    if "vae_decoder" in components:
        z = torch.randn(s.batch, vae.z_dim, s.latent_frames, s.latent_height, s.latent_width, generator=gen)
        graphs["vae_decoder"] = export_graph(VAEDecoderGraph(vae).eval(), (z,), out / FILES["vae_decoder"],
                                             input_names=["latents"], output_names=["video"], dynamic_axes=VAE_AXES,
                                             opset=opset, external_data=external_data)
    if "text_encoder" in components:
        ids = torch.randint(3, len(text.tokenizer), (s.batch, s.text_len), generator=gen)
        mask = torch.ones_like(ids)
        mask[-1, s.text_len // 2:] = 0
        graphs["text_encoder"] = export_graph(TextEncoderGraph(text.model).eval(), (ids, mask),
                                              out / FILES["text_encoder"], input_names=["input_ids", "attention_mask"],
                                              output_names=["hidden_states"], dynamic_axes=TEXT_AXES, opset=opset,
                                              external_data=external_data)
        tok_dir = out / "tokenizer"
        if tok_dir.exists():
            shutil.rmtree(tok_dir)
        text.tokenizer.save_pretrained(str(tok_dir))
    if (layout.root / "verifier" / "config.json").is_file():   # best-of-N's verifier runs in torch beside the graphs
        if (out / "verifier").exists():
            shutil.rmtree(out / "verifier")
        shutil.copytree(layout.root / "verifier", out / "verifier")

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model_hash": model_hash(layout.root), "source": str(layout.root), "layout": layout.kind,
        "precision": precision, "opset": opset, "exporter": "torch.onnx.export (TorchScript tracer)",
        "versions": _versions(), "sample_shapes": asdict(s), "graphs": graphs,
        "dit_config": cfg.to_dict(),
        "vae": {"z_dim": vae.z_dim, "temporal_factor": vae.temporal_factor, "spatial_factor": vae.spatial_factor},
        "text": {"max_length": text.max_length, "text_dim": cfg.text_dim},
        "scheduler_config": layout.scheduler_config, "defaults": asdict(defaults),
        "boundary_ratio": layout.boundary_ratio,
        "export_s": round(time.perf_counter() - t0, 3),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    logger.info("exported %s to %s in %.1fs", layout.root, out, manifest["export_s"])
    return manifest


def _versions() -> dict[str, str]:
    import onnx

    v = {"torch": torch.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        v["vidrt"] = version("vidrt")
    except Exception:  # not installed as a distribution (source checkout)
        pass
    return v


def is_onnx_dir(path: Union[str, Path, None]) -> bool:
    return path is not None and (Path(path) / MANIFEST).is_file()


def load_manifest(path: Union[str, Path]) -> dict[str, Any]:
    """The manifest of an exported folder; a CheckpointError naming the fix when absent or foreign."""
    p = Path(path) / MANIFEST
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a vidrt ONNX folder ({MANIFEST} missing); create one with "
                              "`vidrt export onnx --model CHECKPOINT -o DIR`") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} is corrupt ({e}); export the folder again") from None
    if not isinstance(m, dict):
        raise CheckpointError(f"{p} is corrupt (it holds no JSON object); export the folder again")
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{p} has format {m.get('format')!r} v{m.get('format_version')}; this vidrt reads "
                              f"{FORMAT} v{FORMAT_VERSION}: export the folder again")
    return m
