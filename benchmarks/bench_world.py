"""The synthetic world's data path: rendering a training clip and scoring a generated one.

    pytest benchmarks/bench_world.py --benchmark-only

Both run on every training step (render) and every evaluated sample (score), so they must stay far below a
DiT sample's cost: a 33x128x128 render with three objects, and scoring a 33x64x64 clip against its prompt.
Timings only; correctness is in tests/world.
"""
from __future__ import annotations

from vidrt.world import render, score

THREE = "a red circle moves right and a blue square bounces and a yellow triangle grows on a gray background"


def test_render_33x128x128(benchmark):
    frames = benchmark(render, THREE, 128, 128, 33, seed=1)
    assert frames.shape == (33, 128, 128, 3)


def test_score_33x64x64(benchmark):
    p = "a cyan square moves down and an orange triangle grows and a purple circle bounces"
    frames = render(p, 64, 64, 33, seed=4)
    s = benchmark(score, frames, p)
    assert s.adherence > 0.9
