"""Fused DiT block ops vs the unfused torch ops they replace.

    python benchmarks/bench_norm.py [--json out.json] [--shapes small|all]
    pytest benchmarks/bench_norm.py --benchmark-only

Ops: adaLN (LayerNorm no-affine + ``x * (1 + scale) + shift``, diffusers' Wan formula in torch),
RMSNorm across heads (``torch.nn.functional.rms_norm`` on fp32, as Wan's q/k norm), gated residual
``x + gate * y``. Reported: ms, effective GB/s (bytes the op must move once), speedup of the fused
kernel over the torch ops, max abs error. Without a CUDA GPU only tiny shapes run: torch timed,
Triton in the CPU interpreter for correctness; GPU figures need a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():  # before the Triton kernel modules are imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_attention import GPU, GPU_NOTE, _time, environment  # noqa: E402

from vidrt.kernels.adaln import layernorm_modulate  # noqa: E402
from vidrt.kernels.gated_residual import gated_residual  # noqa: E402
from vidrt.kernels.rmsnorm import rms_norm  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    tokens: int
    channels: int
    batch: int = 1
    small: bool = False


SHAPES = [
    Shape("tiny", 37, 96, batch=2, small=True),
    Shape("small", 1024, 1536, small=True),
    Shape("wan1.3b-480p-81f", 32760, 1536),
    Shape("wan1.3b-720p-81f", 75600, 1536),
    Shape("wan14b-480p-81f", 32760, 5120),
]


def torch_adaln(x, scale, shift):
    """diffusers' Wan: norm1(x.float()) * (1 + scale) + shift, back to x's dtype."""
    return (F.layer_norm(x.float(), (x.shape[-1],), eps=1e-6) * (1 + scale) + shift).type_as(x)


def torch_rms(x, w):
    return F.rms_norm(x.float(), (x.shape[-1],), w.float(), 1e-6).to(x.dtype)


def torch_gated(x, y, gate):
    return (x.float() + y * gate).type_as(x)


@dataclass
class Result:
    op: str
    shape: str
    impl: str
    dtype: str
    ms: Optional[float] = None
    gbps: Optional[float] = None
    speedup_vs_torch: Optional[float] = None
    max_abs_err: Optional[float] = None
    note: str = ""


def ops(s: Shape, dtype: torch.dtype, device: str) -> list[tuple[str, Callable, Callable, int]]:
    """(op name, fused fn, torch fn, bytes moved once) for one shape."""
    g = torch.Generator().manual_seed(0)
    b, n, c = s.batch, s.tokens, s.channels
    x = torch.randn(b, n, c, generator=g).to(device, dtype)
    y = torch.randn(b, n, c, generator=g).to(device, dtype)
    scale, shift, gate = (torch.randn(b, 1, c, generator=g).to(device) * 0.1 for _ in range(3))
    w = torch.randn(c, generator=g).to(device, dtype)
    e = x.element_size()
    return [
        ("adaln", lambda: layernorm_modulate(x, shift, scale), lambda: torch_adaln(x, scale, shift), 2 * b * n * c * e),
        ("rmsnorm", lambda: rms_norm(x, w), lambda: torch_rms(x, w), 2 * b * n * c * e),
        ("gated_residual", lambda: gated_residual(x, y, gate), lambda: torch_gated(x, y, gate), 3 * b * n * c * e),
    ]


def run(shapes: list[Shape], dtype: torch.dtype, warmup: int, iters: int) -> list[Result]:
    device = "cuda" if GPU else "cpu"
    out = []
    for s in shapes:
        for op, fused, ref, nbytes in ops(s, dtype, device):
            rt = Result(op, s.name, "torch", str(dtype).replace("torch.", ""))
            rf = Result(op, s.name, "triton", rt.dtype)
            expect = ref()
            rf.max_abs_err = float((fused().float() - expect.float()).abs().max())
            rt.ms = _time(ref, device, warmup, iters)
            rt.gbps = nbytes / (rt.ms * 1e-3) / 1e9
            if GPU:
                rf.ms = _time(fused, device, warmup, iters)
                rf.gbps = nbytes / (rf.ms * 1e-3) / 1e9
                rf.speedup_vs_torch = rt.ms / rf.ms
            else:
                rf.note = "Triton CPU interpreter: correctness only"
            out += [rt, rf]
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json")
    p.add_argument("--shapes", default="all", choices=["small", "all"])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--iters", type=int, default=50)
    a = p.parse_args(argv)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    shapes = [s for s in SHAPES if s.small or (GPU and a.shapes == "all")]
    if not GPU:
        print(GPU_NOTE)
        shapes = [s for s in shapes if s.name == "tiny"]
        a.iters = min(a.iters, 5)
    results = run(shapes, dtype, warmup=3, iters=a.iters)
    print(f"{'op':15} {'shape':18} {'impl':7} {'ms':>9} {'GB/s':>8} {'x torch':>8} {'max err':>9}  note")
    for r in results:
        f = lambda v, spec: format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])  # noqa: E731
        print(f"{r.op:15} {r.shape:18} {r.impl:7} {f(r.ms, '9.3f')} {f(r.gbps, '8.1f')} {f(r.speedup_vs_torch, '8.2f')} "
              f"{f(r.max_abs_err, '9.2e')}  {r.note}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"environment": environment(), "note": None if GPU else GPU_NOTE,
                       "results": [asdict(r) for r in results]}, fh, indent=2)
        print(f"wrote {a.json}")
    tol = 1e-4 if dtype == torch.float32 else 0.1
    return int(any(r.max_abs_err is not None and r.max_abs_err > tol for r in results))


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:
    _SHAPES = [s for s in SHAPES if s.small or GPU]

    @pytest.mark.parametrize("impl", ["torch", "triton"])
    @pytest.mark.parametrize("op", ["adaln", "rmsnorm", "gated_residual"])
    @pytest.mark.parametrize("shape", _SHAPES, ids=[s.name for s in _SHAPES])
    def test_norm_speed(benchmark, shape: Shape, op: str, impl: str):
        if impl == "triton" and not GPU:
            pytest.skip("Triton timings need a GPU (the CPU interpreter is for correctness)")
        dtype = torch.bfloat16 if GPU else torch.float32
        fused, ref, nbytes = next((f, r, n) for name, f, r, n in ops(shape, dtype, "cuda" if GPU else "cpu") if name == op)
        fn = fused if impl == "triton" else ref

        def call():
            o = fn()
            if GPU:
                torch.cuda.synchronize()
            return o

        result = benchmark(call)
        benchmark.extra_info["gbps"] = nbytes / benchmark.stats.stats.mean / 1e9
        assert (result.float() - ref().float()).abs().max() < (0.1 if GPU else 1e-4)


if __name__ == "__main__":
    raise SystemExit(main())
