"""Per-module precision policy of the DiT under the quantized modes (fp8, int8, int8_dynamic).

| part of the DiT                                  | fp32/bf16/fp16 | fp8 / int8 / int8_dynamic                 |
|--------------------------------------------------|----------------|-------------------------------------------|
| block linears: attn1/attn2 to_q,to_k,to_v,to_out, ffn net.0.proj, net.2 | run dtype | quantized (weights per output channel; activations per token for fp8 / int8_dynamic) |
| patch embedding (Conv3d), text embedder, proj_out | run dtype     | bf16 (compute dtype)                      |
| timestep embedder, modulation tables (scale_shift_table), norm1/2/3, norm_out | fp32 | fp32          |
| time_proj (modulation projection)                | run dtype      | bf16 (never quantized: it sets every gate)|
| RoPE cos/sin tables                              | fp32           | fp32 (rotation math in fp32)              |
| qk RMSNorm, LayerNorm, adaLN modulate, gated residual math | fp32 | fp32                              |
| attention softmax statistics                     | fp32 inside sdpa / flash kernels | fp32             |

Why: the first and last layers and the timestep path see every token or every gate and carry most of
the quantization error for a small share of the FLOPs; the block linears hold >95% of the weights
and FLOPs of a Wan DiT.
"""
from __future__ import annotations

import re

import torch.nn as nn

QUANT_MODES = ("fp8", "int8", "int8_dynamic")

# Module names (as in named_modules of WanDiT) whose nn.Linear is replaced by a quantized one.
QUANTIZED = re.compile(r"^blocks\.\d+\.(attn1\.to_(q|k|v|out\.0)|attn2\.to_(q|k|v|out\.0)|ffn\.net\.(0\.proj|2))$")
# Parameters under these module names stay fp32 (the same set as WanDiT._keep_in_fp32_modules).
KEEP_FP32 = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_out")


def is_quantized_module(name: str, module: nn.Module) -> bool:
    """Whether the policy quantizes ``module`` (named ``name`` inside the DiT)."""
    return isinstance(module, nn.Linear) and QUANTIZED.match(name) is not None


def keeps_fp32(param_name: str) -> bool:
    return any(part in KEEP_FP32 for part in param_name.split("."))
