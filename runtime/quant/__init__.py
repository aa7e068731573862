"""vidrt.quant: precision modes beyond plain dtypes (fp8 e4m3 with scales, int8) and the per-module precision policy."""
