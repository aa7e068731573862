"""tools/probe_cross_attention.py: word positions per object, object cells, the localisation summary."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidrt.testing import load_script
from vidrt.world.grammar import COLORS

ROOT = Path(__file__).resolve().parents[1]
tool = load_script(ROOT / "tools/probe_cross_attention.py")


def test_word_positions_follow_each_object():
    p = "a red circle moves left and a red square grows on a gray background"
    assert tool.word_positions(p) == [(1, 2), (7, 8)]
    assert tool.word_positions("an orange triangle bounces") == [(1, 2)]


def test_object_cells_cover_the_object():
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[:8, 8:] = COLORS["blue"]
    cells = tool.object_cells(frame, "blue", 8)
    assert cells.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert tool.object_cells(frame, "red", 8).sum() == 0


def test_summary_picks_the_best_head():
    ratios = {"perfect": [4.0, 8.0], "5/colour/0/0": [1.0, 1.2], "5/colour/0/1": [3.0, 5.0], "5/shape/0/0": [0.9, 1.1]}
    s = tool.summarize(ratios)
    assert s["perfect"]["median"] == pytest.approx(6.0)
    assert s["5/colour"]["best_head"] == "0/1" and s["5/colour"]["best_head_ratio"] == pytest.approx(4.0)
    assert s["5/colour"]["median_over_heads"] == pytest.approx((1.1 + 4.0) / 2)
    assert s["5/shape"]["median_over_heads"] == pytest.approx(1.0)


def test_prompts_need_distinct_colours():
    assert tool.distinct_colours("a red circle moves left and a blue square grows")
    assert not tool.distinct_colours("a red circle moves left and a red square grows")
    assert not tool.distinct_colours("a red circle moves left")


def test_probe_refuses_unbatched_guidance(tiny_wan):
    """The maps are taken per block from one batched call per step; two calls per step would mix branches."""
    import dataclasses

    import vidrt

    pipe = vidrt.Pipeline.from_pretrained(tiny_wan)
    pipe.defaults = dataclasses.replace(pipe.defaults, steps=3, max_sequence_length=16, height=32, width=32)
    prompt = "a red circle moves left and a blue square grows"
    assert tool.probe(pipe, [prompt], steps=(1,)) is not None          # batched: runs
    pipe.batch_cfg = False
    with pytest.raises(RuntimeError, match="needs batched classifier-free guidance"):
        tool.probe(pipe, [prompt], steps=(1,))
