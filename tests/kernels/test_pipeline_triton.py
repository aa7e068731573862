"""Pipeline level: the same tiny model with attention="sdpa" and attention="triton" (+ fused norm
kernels) gives the same frames (PSNR >= 40 dB, fp32), here under the Triton CPU interpreter."""
import pytest

pytest.importorskip("triton", reason="triton is not installed")

from vidrt.metrics import psnr  # noqa: E402
from vidrt.pipeline import Pipeline  # noqa: E402

GEN = dict(height=32, width=48, num_frames=5, steps=2, seed=0, max_sequence_length=16, progress=False)


@pytest.fixture(scope="module")
def wan16(tmp_path_factory):
    from vidrt.testing import make_tiny_wan

    return make_tiny_wan(tmp_path_factory.mktemp("wan16") / "wan", heads=2, head_dim=16)


def test_triton_pipeline_matches_sdpa(wan16):
    exact = Pipeline.from_pretrained(wan16)("a red circle moves right", **GEN)
    fast = Pipeline.from_pretrained(wan16, attention="triton", fused_ops=True)
    assert fast.transformer.blocks[0].attn1.backend == "triton" and fast.transformer.blocks[0].fused_ops
    video = fast("a red circle moves right", **GEN)
    assert psnr(video.frames, exact.frames) >= 40.0


def test_unsupported_head_dim_is_a_clear_error(tiny_wan):
    import vidrt

    pipe = Pipeline.from_pretrained(tiny_wan, attention="triton")  # head_dim 12
    with pytest.raises(vidrt.ShapeError, match="head_dim 12 is not supported.*backend='sdpa'"):
        pipe("a red circle", **GEN)


def test_two_expert_pipeline_runs_both_experts_on_triton(tmp_path):
    """Wan 2.2-style pair: attention backend and fused ops reach both experts; frames match sdpa."""
    from vidrt.testing import make_tiny_wan

    two = make_tiny_wan(tmp_path / "two", heads=2, head_dim=16, boundary_ratio=0.9)
    gen = {**GEN, "steps": 4}
    exact = Pipeline.from_pretrained(two)("a red circle moves right", **gen)
    fast = Pipeline.from_pretrained(two, attention="triton", fused_ops=True)
    for dit in fast.experts:
        assert dit.blocks[0].attn1.backend == "triton" and dit.blocks[0].fused_ops
    video = fast("a red circle moves right", **gen)
    assert video.stats["experts"]["steps"] == exact.stats["experts"]["steps"] == [2, 2]
    assert psnr(video.frames, exact.frames) >= 40.0
