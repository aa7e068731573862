"""Attention benchmark over video-DiT shapes: sdpa vs vidrt's Triton kernel vs flash-attn.

Two ways to run it:

    python benchmarks/bench_attention.py [--json out.json] [--shapes small|all|NAME,...] [--dtype bf16]
    pytest benchmarks/bench_attention.py --benchmark-only

Each case is (shape, mask); each backend is timed on the same q/k/v/RoPE. Reported per backend:
milliseconds, TFLOP/s counting only attended (query, key) pairs (the work a sparse kernel must
do), dense-equivalent TFLOP/s (the full L x L work the time replaces), speed ratio vs sdpa, and
max abs error vs an fp32 reference (computed on the first head to keep it cheap).

On a machine without a CUDA GPU only the small shapes run: the sdpa reference path is timed and
the Triton kernel runs in Triton's CPU interpreter for correctness only (its time means nothing);
GPU figures need a GPU, and the output says so.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

if not torch.cuda.is_available():  # must precede the (lazy) import of the Triton kernels
    os.environ.setdefault("TRITON_INTERPRET", "1")

from vidrt.attention import attention, available_backends  # noqa: E402
from vidrt.kernels.reference import MaskSpec, attention_reference, build_rope_3d  # noqa: E402

GPU = torch.cuda.is_available()
GPU_NOTE = ("no CUDA GPU here: GPU figures need a GPU; ran the small shapes only (torch timed on CPU, "
            "Triton kernels checked for correctness in the CPU interpreter)")


@dataclass(frozen=True)
class Case:
    """One attention problem: token grid of the video, heads, head_dim, mask, optional text keys."""

    name: str
    grid: tuple[int, int, int]
    heads: int = 12
    head_dim: int = 128
    batch: int = 1
    mask: str = "full"                     # full | block_causal | window | cross
    chunk_frames: int = 3                  # block_causal: latent frames per chunk
    tile: tuple[int, int, int] = (2, 8, 8)
    window: tuple[int, int, int] = (3, 1, 2)
    text_tokens: int = 512                 # cross: key length
    small: bool = False

    @property
    def tokens(self) -> int:
        return math.prod(self.grid)

    def mask_spec(self) -> Optional[MaskSpec]:
        if self.mask == "block_causal":
            return MaskSpec.block_causal(self.chunk_frames * self.grid[1] * self.grid[2])
        if self.mask == "window":
            return MaskSpec.tile_window(self.grid, self.window, self.tile)
        return None

    def kv_tokens(self) -> int:
        return self.text_tokens if self.mask == "cross" else self.tokens


# Wan 2.1 1.3B: 12 heads x 128; 480p x 81 frames -> latent 21 x 60 x 104 -> patches 21 x 30 x 52.
WAN480 = (21, 30, 52)
WAN720 = (21, 45, 80)  # 720p x 81 frames: 75600 tokens
CASES = [
    Case("tiny-1f-full", (1, 4, 6), heads=2, head_dim=64, small=True),
    Case("tiny-full", (3, 4, 4), heads=2, head_dim=64, small=True),
    Case("tiny-causal", (3, 4, 4), heads=2, head_dim=64, mask="block_causal", chunk_frames=1, small=True),
    Case("tiny-window", (3, 4, 4), heads=2, head_dim=64, mask="window", tile=(1, 2, 2), window=(1, 0, 1), small=True),
    Case("tiny-cross", (2, 3, 5), heads=2, head_dim=64, mask="cross", text_tokens=13, small=True),
    Case("small-full", (5, 8, 8), small=True),
    Case("small-window", (5, 8, 8), mask="window", tile=(1, 4, 4), window=(1, 0, 0), small=True),
    Case("wan1.3b-480p-81f-full", WAN480),
    Case("wan1.3b-480p-81f-causal3", WAN480, mask="block_causal", chunk_frames=3),
    Case("wan1.3b-480p-81f-window", WAN480, mask="window", tile=(2, 8, 8), window=(3, 1, 2)),
    Case("wan1.3b-480p-81f-cross", WAN480, mask="cross", text_tokens=512),
    Case("wan1.3b-720p-81f-full", WAN720),
    Case("wan1.3b-720p-81f-window", WAN720, mask="window", tile=(2, 8, 8), window=(3, 2, 3)),
]


def attended_pairs(case: Case) -> int:
    """(query, key) pairs the mask keeps, computed per axis (masks factorise), never densely."""
    lq, lk = case.tokens, case.kv_tokens()
    spec = case.mask_spec()
    if spec is None:
        return lq * lk
    if spec.kind == "block_causal":
        c, off = spec.chunk_tokens, spec.q_offset
        return sum(min(lk, ((i + off) // c + 1) * c) for i in range(lq))
    pairs = 1
    for n, t, w in zip(spec.grid, spec.tile, spec.window):
        tiles = torch.arange(n) // t
        pairs *= int(((tiles[:, None] - tiles[None, :]).abs() <= w).sum())
    return pairs


@dataclass
class Result:
    case: str
    backend: str
    dtype: str
    tokens: int
    kv_tokens: int
    heads: int
    head_dim: int
    mask: str
    attended_fraction: float
    ms: Optional[float] = None
    tflops_attended: Optional[float] = None
    tflops_dense_equiv: Optional[float] = None
    speedup_vs_sdpa: Optional[float] = None
    max_abs_err: Optional[float] = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def make_inputs(case: Case, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    shape_q = (case.batch, case.tokens, case.heads, case.head_dim)
    shape_k = (case.batch, case.kv_tokens(), case.heads, case.head_dim)
    q = torch.randn(shape_q, generator=g).to(device, dtype)
    k = torch.randn(shape_k, generator=g).to(device, dtype)
    v = torch.randn(shape_k, generator=g).to(device, dtype)
    rope = build_rope_3d(case.head_dim, case.grid, device=device)
    kw = dict(rope_q=rope, rope_k=None if case.mask == "cross" else rope, mask=case.mask_spec())
    return q, k, v, kw


def _time(fn, device: str, warmup: int, iters: int) -> float:
    """Median milliseconds of fn()."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def reference_first_head(q, k, v, kw) -> torch.Tensor:
    """fp32 reference of head 0 (whole sequence), the yardstick of every backend's error."""
    return attention_reference(q[:, :, :1].float(), k[:, :, :1].float(), v[:, :, :1].float(), **kw)


def run_case(case: Case, backends: list[str], dtype: torch.dtype, warmup: int, iters: int) -> list[Result]:
    device = "cuda" if GPU else "cpu"
    q, k, v, kw = make_inputs(case, dtype, device)
    frac = attended_pairs(case) / (case.tokens * case.kv_tokens())
    dense_flops = 4.0 * case.batch * case.heads * case.tokens * case.kv_tokens() * case.head_dim
    ref = reference_first_head(q, k, v, kw)
    status = available_backends()
    results = []
    sdpa_ms = None
    for backend in backends:
        r = Result(case.name, backend, str(dtype).replace("torch.", ""), case.tokens, case.kv_tokens(), case.heads,
                   case.head_dim, case.mask, round(frac, 4))
        results.append(r)
        if status.get(backend) != "ok":
            r.note = f"skipped: {status.get(backend, 'unknown backend')}"
            continue
        if backend == "flash_attn" and case.mask not in ("full", "cross"):
            r.note = "skipped: flash_attn runs full masks only"
            continue

        def fn(backend=backend):
            return attention(q, k, v, backend=backend, **kw)

        try:
            out = fn()
        except Exception as e:  # report, keep benchmarking the other backends
            r.note = f"failed: {type(e).__name__}: {e}"[:300]
            continue
        r.max_abs_err = float((out[:, :, :1].float() - ref).abs().max())
        if backend == "triton" and not GPU:
            r.note = "Triton CPU interpreter: correctness only, time not meaningful"
            continue
        r.ms = _time(fn, device, warmup, iters)
        r.tflops_dense_equiv = dense_flops / (r.ms * 1e-3) / 1e12
        r.tflops_attended = r.tflops_dense_equiv * frac
        if backend == "sdpa":
            sdpa_ms = r.ms
    for r in results:
        if r.ms is not None and sdpa_ms is not None:
            r.speedup_vs_sdpa = sdpa_ms / r.ms
    return results


def select_cases(spec: str) -> list[Case]:
    """small | all | comma-separated names; without a GPU only the small cases run."""
    if spec == "small" or (spec == "all" and not GPU):
        return [c for c in CASES if c.small]
    if spec == "all":
        return CASES
    names = spec.split(",")
    unknown = [n for n in names if n not in {c.name for c in CASES}]
    if unknown:
        raise SystemExit(f"unknown shape(s) {unknown}; choose from {[c.name for c in CASES]}")
    chosen = [c for c in CASES if c.name in names]
    if not GPU and any(not c.small for c in chosen):
        raise SystemExit(f"{[c.name for c in chosen if not c.small]} need a GPU; {GPU_NOTE}")
    return chosen


def environment() -> dict:
    import triton

    return {"device": torch.cuda.get_device_name() if GPU else f"CPU ({platform.processor() or platform.machine()})",
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1"}


def _fmt(x, spec):
    return format(x, spec) if x is not None else format("-", ">" + spec.split(".")[0])


def print_table(results: list[Result]) -> None:
    head = f"{'case':28} {'backend':10} {'ms':>9} {'TF/s att':>9} {'TF/s dense':>10} {'x sdpa':>7} {'max err':>9} {'attended':>8}  note"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.case:28} {r.backend:10} {_fmt(r.ms, '9.3f')} {_fmt(r.tflops_attended, '9.2f')} "
              f"{_fmt(r.tflops_dense_equiv, '10.2f')} {_fmt(r.speedup_vs_sdpa, '7.2f')} {_fmt(r.max_abs_err, '9.2e')} "
              f"{r.attended_fraction:8.3f}  {r.note}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write results to this JSON file")
    p.add_argument("--shapes", default="all", help="small | all | comma-separated case names")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--backends", default="sdpa,triton,flash_attn")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args(argv)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    if not GPU:
        print(GPU_NOTE)
        dtype = torch.float32  # CPU sdpa and the interpreter: fp32 is the supported path
        a.iters, a.warmup = min(a.iters, 5), 1
    results = []
    for case in select_cases(a.shapes):
        results += run_case(case, a.backends.split(","), dtype, a.warmup, a.iters)
    print_table(results)
    if a.json:
        payload = {"environment": environment(), "note": None if GPU else GPU_NOTE,
                   "results": [asdict(r) for r in results]}
        with open(a.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {a.json}")
    bad = [r for r in results if r.max_abs_err is not None and r.max_abs_err > (1e-4 if dtype == torch.float32 else 5e-2)]
    if bad:
        print("ERROR: backends off the reference:", [(r.case, r.backend, r.max_abs_err) for r in bad], file=sys.stderr)
        return 1
    return 0


# ---- pytest-benchmark suite -------------------------------------------------------------------
try:
    import pytest
except ImportError:  # the CLI needs no pytest
    pytest = None

if pytest is not None:
    _BENCH_CASES = [c for c in CASES if c.small or GPU]

    @pytest.mark.parametrize("backend", ["sdpa", "triton", "flash_attn"])
    @pytest.mark.parametrize("case", _BENCH_CASES, ids=[c.name for c in _BENCH_CASES])
    def test_attention_speed(benchmark, case: Case, backend: str):
        status = available_backends()[backend]
        if status != "ok":
            pytest.skip(status)
        if backend == "triton" and not GPU:
            pytest.skip("Triton timings need a GPU (the CPU interpreter is for correctness); run the CLI for that")
        if backend == "flash_attn" and case.mask not in ("full", "cross"):
            pytest.skip("flash_attn runs full masks only")
        dtype = torch.bfloat16 if GPU else torch.float32
        q, k, v, kw = make_inputs(case, dtype, "cuda" if GPU else "cpu")

        def fn():
            out = attention(q, k, v, backend=backend, **kw)
            if GPU:
                torch.cuda.synchronize()
            return out

        out = benchmark(fn)
        ref = reference_first_head(q, k, v, kw)
        err = float((out[:, :, :1].float() - ref).abs().max())
        flops = 4.0 * case.batch * case.heads * case.tokens * case.kv_tokens() * case.head_dim
        frac = attended_pairs(case) / (case.tokens * case.kv_tokens())
        mean_s = benchmark.stats.stats.mean
        benchmark.extra_info.update(max_abs_err=err, attended_fraction=frac,
                                    tflops_dense_equiv=flops / mean_s / 1e12, tflops_attended=flops * frac / mean_s / 1e12)
        assert err < (5e-2 if dtype != torch.float32 else 1e-4)


if __name__ == "__main__":
    raise SystemExit(main())
