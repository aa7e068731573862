"""tools/expert_mix.py: a window nobody enters is the first model, a window over every sigma is the second
(each on its own text encoder), and a window in between splits the steps."""
from __future__ import annotations

from pathlib import Path

import torch

import vidrt
from vidrt.testing import load_script, make_tiny_wan

ROOT = Path(__file__).resolve().parents[1]
tool = load_script(ROOT / "tools/expert_mix.py")
GEN = dict(num_frames=5, height=32, width=32, steps=4, guidance=3.0, output="latent", progress=False)


def test_window_selects_the_expert(tmp_path):
    a, b = make_tiny_wan(tmp_path / "a", seed=0), make_tiny_wan(tmp_path / "b", seed=1)
    prompts = ["a red circle moves right", "a blue square grows"]
    noise = torch.randn(vidrt.Pipeline.from_pretrained(a).latent_shape(2, 5, 32, 32), generator=torch.Generator()
                        .manual_seed(3))
    alone = {k: vidrt.Pipeline.from_pretrained(p)(prompts, latents=noise.clone(), **GEN) for k, p in (("a", a), ("b", b))}
    assert not torch.allclose(alone["a"], alone["b"])

    def mixed(window):
        pipe = vidrt.Pipeline.from_pretrained(a)
        m = tool.mix(pipe, vidrt.Pipeline.from_pretrained(b), window)
        return pipe(prompts, latents=noise.clone(), **GEN), m.calls

    out, calls = mixed((2.0, 3.0))
    assert calls == [4, 0] and torch.equal(out, alone["a"])
    out, calls = mixed((0.0, 1.01))
    assert calls == [0, 4] and torch.allclose(out, alone["b"], atol=1e-6)
    out, calls = mixed((0.3, 0.85))
    assert calls[0] > 0 and calls[1] > 0 and calls[0] + calls[1] == 4
    assert not torch.allclose(out, alone["a"]) and not torch.allclose(out, alone["b"])
