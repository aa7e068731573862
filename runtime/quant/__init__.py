"""vidrt.quant: precision modes beyond plain dtypes (fp8 e4m3 with scales, int8) and the per-module precision policy."""
from vidrt.quant.apply import COMPUTE_DTYPE, QuantReport, model_bytes, quantize_dit, torchao_available
from vidrt.quant.formats import dequantize, quantize_fp8, quantize_int8
from vidrt.quant.linear import (FP8Linear, Int8DynamicLinear, Int8WeightOnlyLinear, QuantLinear,
                                fp8_matmul_emulated, fp8_supported)
from vidrt.quant.policy import QUANT_MODES

__all__ = ["QUANT_MODES", "COMPUTE_DTYPE", "QuantReport", "quantize_dit", "model_bytes", "torchao_available",
           "quantize_fp8", "quantize_int8", "dequantize", "QuantLinear", "FP8Linear", "Int8WeightOnlyLinear",
           "Int8DynamicLinear", "fp8_matmul_emulated", "fp8_supported"]
