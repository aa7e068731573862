"""Quantized replacements of nn.Linear: fp8 (weights + dynamic per-token activations), int8 weight-only,
int8 dynamic (weights + per-token activations).

Each layer has a GPU path and an exact CPU emulation:

- fp8: ``torch._scaled_mm`` with row-wise scales on CUDA GPUs that have fp8 tensor cores
  (compute capability >= 8.9); elsewhere the emulation multiplies the same e4m3 codes as fp32
  (products of e4m3 values are exact in fp32), accumulates in fp32 and applies the two scales
  and the bias in the same order, then rounds once to the output dtype - what _scaled_mm does,
  up to the summation order.
- int8 dynamic: ``torch._int_mm`` (int8 x int8 -> int32, exact) on CPU and CUDA, then scales.
- int8 weight-only: ``torch._weight_int8pack_mm`` on CPU (in_features % 32 == 0), else the weight
  dequantized to the activation dtype and a plain matmul.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vidrt.quant.formats import dequantize, quantize_fp8, quantize_int8


def fp8_supported(device: torch.device) -> bool:
    """Whether ``torch._scaled_mm`` with fp8 e4m3 runs natively on ``device``."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


class QuantLinear(nn.Module):
    """Base: a frozen Linear whose weight is stored quantized with one scale per output channel."""

    mode = ""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.out_dtype = out_dtype
        q, s = self.quantize_weight(linear.weight.detach())
        self.register_buffer("qweight", q)
        self.register_buffer("weight_scale", s)  # (out, 1) fp32
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(out_dtype))
        self.emulate = False  # set True to force the CPU emulation on any device (tests)

    def quantize_weight(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.qweight, self.weight_scale, dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, mode={self.mode}, out_dtype={self.out_dtype}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self.matmul(x.reshape(-1, self.in_features))
        return y.reshape(*lead, self.out_features)

    def matmul(self, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FP8Linear(QuantLinear):
    """e4m3 weights (per output channel) x e4m3 activations (per token, at run time)."""

    mode = "fp8"

    def quantize_weight(self, w):
        return quantize_fp8(w)

    def matmul(self, x2: torch.Tensor) -> torch.Tensor:
        xq, xs = quantize_fp8(x2)
        if not self.emulate and fp8_supported(x2.device):
            bias = None if self.bias is None else self.bias.to(torch.bfloat16)
            y = torch._scaled_mm(xq, self.qweight.t(), scale_a=xs, scale_b=self.weight_scale.t(), bias=bias,
                                 out_dtype=torch.bfloat16)
            return y.to(self.out_dtype)
        return fp8_matmul_emulated(xq, xs, self.qweight, self.weight_scale, self.bias, self.out_dtype)


def fp8_matmul_emulated(xq: torch.Tensor, xs: torch.Tensor, wq: torch.Tensor, ws: torch.Tensor,
                        bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """_scaled_mm's math on any device: fp32 accumulation of exact e4m3 products, row/column scales, bias."""
    acc = xq.float() @ wq.float().t()
    y = acc * xs * ws.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


class Int8WeightOnlyLinear(QuantLinear):
    """int8 weights (per output channel), activations stay in their dtype."""

    mode = "int8"

    def quantize_weight(self, w):
        return quantize_int8(w)

    def matmul(self, x2: torch.Tensor) -> torch.Tensor:
        # the CPU kernel crashes for in_features not a multiple of 32 (torch 2.13): guard it
        if (not self.emulate and x2.device.type == "cpu" and x2.dtype in (torch.float32, torch.bfloat16)
                and self.in_features % 32 == 0):
            y = torch._weight_int8pack_mm(x2.contiguous(), self.qweight, self.weight_scale.view(-1).to(x2.dtype))
        else:
            y = x2 @ self.dequantized_weight(x2.dtype).t()
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(self.out_dtype)


class Int8DynamicLinear(QuantLinear):
    """int8 weights (per output channel) x int8 activations (per token, at run time), int32 accumulation."""

    mode = "int8_dynamic"

    def quantize_weight(self, w):
        return quantize_int8(w)

    def matmul(self, x2: torch.Tensor) -> torch.Tensor:
        xq, xs = quantize_int8(x2)
        m = xq.shape[0]
        if not self.emulate and (x2.device.type == "cpu" or m > 16):  # cuda _int_mm needs more than 16 rows
            acc = torch._int_mm(xq, self.qweight.t())
        else:
            acc = xq.double() @ self.qweight.double().t()  # exact: |sum| < 2^53
        y = acc.float() * xs * self.weight_scale.t()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(self.out_dtype)


LAYERS = {"fp8": FP8Linear, "int8": Int8WeightOnlyLinear, "int8_dynamic": Int8DynamicLinear}
