"""tools/text_adapter.py: a DiT's text embedder refitted to another model's encoder reproduces (per token, on
held-out prompts) what it made of its own encoder's states far better than unfitted, keeps padding exact, and the
written folder runs as a two-expert pipeline's transformer_2."""
from __future__ import annotations

import json
from pathlib import Path

import torch

import vidrt
from vidrt.testing import load_script, make_tiny_wan

ROOT = Path(__file__).resolve().parents[1]
tool = load_script(ROOT / "tools/text_adapter.py")


def test_refitted_embedder_reads_the_other_encoder(tmp_path):
    a, b = make_tiny_wan(tmp_path / "a", seed=0), make_tiny_wan(tmp_path / "b", seed=1)
    for m in (a, b):   # 16 text positions (the tiny models' default 512 is slow for this test)
        (m / "vidrt.json").write_text(json.dumps({"max_sequence_length": 16}))
    report = tool.adapt(str(a), str(b), tmp_path / "moved", prompts=96, steps=400)
    assert report["r2_held_out"] > 0.5 > report["r2_held_out_unfitted"]
    assert report["padding_error"] < 1e-5
    moved = vidrt.Pipeline.from_pretrained(b, transformer_2=tmp_path / "moved", boundary_ratio=0.8)
    dit_a = vidrt.Pipeline.from_pretrained(a).transformer
    for name, p in moved.transformer_2.state_dict().items():   # only the text embedder changed
        same = torch.equal(p, dit_a.state_dict()[name])
        assert same != name.startswith("condition_embedder.text_embedder."), name
    out = moved("a red circle moves right", num_frames=5, height=32, width=32, steps=4, seed=0, progress=False)
    assert out.stats["experts"]["steps"][1] > 0 and out.frames.shape == (5, 32, 32, 3)
