"""Apply a quantized precision mode to a loaded DiT, following :mod:`vidrt.quant.policy`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from vidrt.errors import BackendUnavailableError, ConfigError
from vidrt.quant.linear import LAYERS, QuantLinear
from vidrt.quant.policy import QUANT_MODES, is_quantized_module, keeps_fp32

logger = logging.getLogger(__name__)

COMPUTE_DTYPE = torch.bfloat16  # activations and unquantized weights under fp8 / int8 modes
ENGINES = ("auto", "vidrt", "torchao")


@dataclass
class QuantReport:
    """What quantize_dit did: the mode, the engine, the modules it replaced, the model's bytes after."""

    mode: str
    engine: str
    quantized: list[str] = field(default_factory=list)
    model_bytes: int = 0


def torchao_available() -> bool:
    try:
        import torchao.quantization  # noqa: F401
    except Exception:  # ImportError, or a torchao built for another torch
        return False
    return True


def quantize_dit(dit: nn.Module, mode: str, *, engine: str = "auto",
                 compute_dtype: torch.dtype = COMPUTE_DTYPE) -> QuantReport:
    """Quantize ``dit`` in place for ``mode`` ("fp8", "int8", "int8_dynamic") and return a report.

    Unquantized weights move to ``compute_dtype`` except the fp32 set of the policy. ``engine``:
    "vidrt" (this package's layers: fp8 needs them), "torchao" (torchao's int8 tensor subclasses),
    "auto" = torchao for int8 modes when it imports, else vidrt.
    """
    if mode not in QUANT_MODES:
        raise ConfigError(f"unknown quantized mode {mode!r}; choose one of {', '.join(QUANT_MODES)}")
    if engine not in ENGINES:
        raise ConfigError(f"unknown quantization engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "torchao" if mode != "fp8" and torchao_available() else "vidrt"
    if engine == "torchao":
        if mode == "fp8":
            raise ConfigError("fp8 runs on vidrt's own layers (exact CPU emulation); use engine='vidrt'")
        if not torchao_available():
            raise BackendUnavailableError("engine='torchao' needs torchao: pip install 'vidrt[quant]', "
                                          "or use engine='vidrt'")
    names = [n for n, m in dit.named_modules() if is_quantized_module(n, m)]
    # weights the policy does not quantize: compute dtype, or fp32 for the sensitive set
    for pname, p in dit.named_parameters():
        target = torch.float32 if keeps_fp32(pname) else compute_dtype
        if p.dtype != target and not any(pname.startswith(n + ".") for n in names):
            p.data = p.data.to(target)
    if engine == "vidrt":
        layer = LAYERS[mode]
        for n in names:
            parent, _, child = n.rpartition(".")
            owner = dit.get_submodule(parent) if parent else dit
            setattr(owner, child, layer(dit.get_submodule(n), compute_dtype))
    else:
        _torchao_quantize(dit, mode, names, compute_dtype)
    report = QuantReport(mode, engine, names, model_bytes(dit))
    logger.info("quantized %d linears of the DiT to %s (%s engine): %.1f MB", len(names), mode, engine,
                report.model_bytes / 1e6)
    return report


def _torchao_quantize(dit: nn.Module, mode: str, names: list[str], compute_dtype: torch.dtype) -> None:
    from torchao.quantization import (Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig,
                                      quantize_)

    chosen = set(names)
    for n in names:
        lin = dit.get_submodule(n)
        lin.to(compute_dtype)
    config = Int8WeightOnlyConfig() if mode == "int8" else Int8DynamicActivationInt8WeightConfig()
    quantize_(dit, config, filter_fn=lambda m, fqn: fqn in chosen)


def model_bytes(module: nn.Module) -> int:
    """Bytes of the module's parameters and buffers as stored (quantized codes count 1 byte each)."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        total += _tensor_bytes(t)
    return total


def _tensor_bytes(t: torch.Tensor) -> int:
    inner = getattr(t, "__tensor_flatten__", None)
    if inner is not None and type(t) is not torch.Tensor and type(t) is not nn.Parameter:
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def quantized_layers(module: nn.Module) -> list[QuantLinear]:
    return [m for m in module.modules() if isinstance(m, QuantLinear)]
