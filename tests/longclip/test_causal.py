"""Chunk-wise causal generation: KV cache == full recompute under the same block-causal mask."""
import numpy as np
import pytest
import torch

from vidrt.metrics import psnr
from vidrt.models.dit import WanDiT

from vidrt.testing import TINY_GEN as GEN


def _run(pipe, **kw):
    parts = list(pipe.stream("a red circle moves right", seconds=1.6, seed=3, **GEN, **kw))
    lat = torch.cat([p.latents for p in parts], dim=2)
    frames = np.concatenate([p.frames for p in parts])
    return parts, lat, frames


@pytest.mark.parametrize("which", ["causal_pipe", "causal_pipe_patch1"])
def test_kv_cache_matches_recompute(which, request):
    causal_pipe = request.getfixturevalue(which)
    parts, lat, frames = _run(causal_pipe)
    ref_parts, ref_lat, ref_frames = _run(causal_pipe, kv_cache=False)
    assert parts[0].mode == "causal" and ref_parts[0].mode == "causal-recompute"
    assert len(parts) == 3 and lat.shape[2] == 6  # 3 chunks of 2 latent frames, nothing evicted
    peak = float(ref_lat.abs().max())
    assert psnr(lat.numpy(), ref_lat.numpy(), peak=peak) >= 40.0
    assert float((lat - ref_lat).abs().max()) / peak < 1e-4
    assert psnr(frames / 255.0, ref_frames / 255.0, peak=1.0) >= 40.0
    # the cache pays ONE extra forward per finished chunk (none after the last), not one per step
    info = parts[-1].info
    assert info["denoise_forwards"] == 3 * GEN["steps"] and info["commit_forwards"] == 2
    assert ref_parts[-1].info["commit_forwards"] == 0
    # the past matters: chunk 1 differs when chunk 0 is different (a different seed)
    other = list(causal_pipe.stream("a red circle moves right", seconds=1.6, seed=4, **GEN))
    assert not torch.allclose(other[1].latents, parts[1].latents)


def test_rolling_window_keeps_cache_memory_flat(causal_pipe):
    parts = list(causal_pipe.stream("a red circle moves right", seconds=4.0, sink_frames=2, window_frames=2, **GEN))
    sizes = {p.info["kv_cache_bytes"] for p in parts}
    assert len(sizes) == 1  # preallocated once
    assert parts[-1].info["kv_evicted_chunks"] == len(parts) - 1 - 2  # all but sink + one window chunk rolled out
    assert max(p.info["kv_cached_tokens"] for p in parts) == 4 * 16 // 4  # sink + window frames x 4 tokens
    for p in parts:
        assert np.isfinite(p.latents.numpy()).all()


def test_rolling_window_counts_patch1_tokens(causal_pipe_patch1):
    """At patch 1x1x1 a 32x32 frame is 4x4 latent pixels = 16 tokens: the ring holds sink + window x 16."""
    parts = list(causal_pipe_patch1.stream("a red circle moves right", seconds=4.0, sink_frames=2, window_frames=2,
                                           **GEN))
    assert max(p.info["kv_cached_tokens"] for p in parts) == 4 * 16
    assert len({p.info["kv_cache_bytes"] for p in parts}) == 1


def test_per_frame_rope_positions_equal_offset():
    from vidrt.models.dit import DiTConfig

    torch.manual_seed(0)
    dit = WanDiT(DiTConfig(num_attention_heads=2, attention_head_dim=12, text_dim=8, freq_dim=16, ffn_dim=16,
                           num_layers=1)).eval()
    x = torch.randn(1, 16, 3, 4, 4)
    ctx = torch.randn(1, 5, 8)
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = dit(x, t, ctx, frame_offset=7)
        b = dit(x, t, ctx, frame_offset=[7, 8, 9])
        c = dit(x, t, ctx, frame_offset=[7, 9, 12])
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_latency_target_plans_per_chunk(causal_pipe, tmp_path, monkeypatch):
    from vidrt.errors import LatencyError

    monkeypatch.setenv("VIDRT_CACHE_DIR", str(tmp_path))  # the device cost model is measured into here
    kw = dict(GEN, steps=6)
    parts = list(causal_pipe.stream("a red circle moves right", seconds=1.0, latency_target=60.0, **kw))
    assert all(p.timings["steps"] == 6 and p.info["latency_target_met"] for p in parts)
    with pytest.raises(LatencyError):
        causal_pipe.stream("a red circle moves right", seconds=1.0, latency_target=1e-6, **kw)


@pytest.mark.parametrize("window_frames", [2, 4])
def test_commit_context_sinks_equals_recompute_after_eviction(causal_pipe, window_frames):
    """Committing each chunk against the sinks alone, and recomputing the visible past with the window chunks
    masked the same way, are one function: they agree after chunks roll out of the window (one window chunk
    or two); the default commit ("window": each chunk's K/V saw the chunks before it) does not agree with
    the sinks-masked recompute."""
    kw = dict(seconds=3.0, seed=5, sink_frames=2, window_frames=window_frames, **GEN)
    ref = list(causal_pipe.stream("a red circle moves right", kv_cache=False, commit_context="sinks", **kw))
    sinks = list(causal_pipe.stream("a red circle moves right", commit_context="sinks", **kw))
    window = list(causal_pipe.stream("a red circle moves right", **kw))
    assert sinks[-1].info["kv_evicted_chunks"] >= 2
    lr, ls, lw = (torch.cat([p.latents for p in ps], 2).numpy() for ps in (ref, sinks, window))
    peak = float(np.abs(lr).max())
    assert psnr(ls, lr, peak=peak) >= 40.0
    assert psnr(lw, lr, peak=peak) < psnr(ls, lr, peak=peak) - 10.0
    # before a window chunk has a window chunk before it, the two commits see the same keys: chunks 0-2 agree
    assert np.allclose(lw[:, :, :6], ls[:, :, :6], atol=1e-5)
    if window_frames == 2:  # one window chunk: the plain recompute (window chunks see each other) is the same too
        plain = torch.cat([p.latents for p in causal_pipe.stream("a red circle moves right", kv_cache=False,
                                                                 commit_context="window", **kw)], 2).numpy()
        assert psnr(plain, lr, peak=peak) >= 40.0


def test_model_declares_its_commit_context(tiny_base, causal_pipe, tmp_path):
    """A causal checkpoint whose config says commit_context "sinks" streams that way by default; a config
    with another value is refused at load with the two valid ones named."""
    import json

    from vidrt.errors import CheckpointError
    from vidrt.longclip import make_causal_variant
    from vidrt.pipeline import Pipeline

    folder = make_causal_variant(tiny_base, tmp_path / "sinks", num_frame_per_block=2, commit_context="sinks")
    pipe = Pipeline.from_pretrained(folder)
    assert pipe.transformer.config.commit_context == "sinks"
    kw = dict(seconds=3.0, seed=5, sink_frames=2, window_frames=2, **GEN)
    default = torch.cat([p.latents for p in pipe.stream("a red circle moves right", **kw)], 2)
    explicit = torch.cat([p.latents for p in causal_pipe.stream("a red circle moves right", commit_context="sinks",
                                                                **kw)], 2)
    assert torch.equal(default, explicit)
    cfg_path = folder / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "commit_context": "everything"}))
    with pytest.raises(CheckpointError, match="'window'.*'sinks'"):
        Pipeline.from_pretrained(folder)


def test_latency_plan_counts_the_cache(causal_pipe, tmp_path, monkeypatch):
    """stream(latency_target=) plans every chunk with the tokens it attends to in the cache (filling, then full)
    and its commit (against the sinks alone here), and corrects the cost model by how the chunks ran."""
    monkeypatch.setenv("VIDRT_CACHE_DIR", str(tmp_path))
    seen = []
    real = type(causal_pipe).plan

    def spy(self, *a, **kw):
        seen.append(kw)
        return real(self, *a, **kw)

    monkeypatch.setattr(type(causal_pipe), "plan", spy)
    parts = list(causal_pipe.stream("a red circle moves right", seconds=2.0, latency_target=60.0, sink_frames=2,
                                    window_frames=2, commit_context="sinks", **dict(GEN, steps=2)))
    ct = 2 * 4  # a chunk: 2 latent frames of 4 tokens
    assert len(seen) == len(parts) >= 4
    assert [kw["kv_tokens"] for kw in seen] == [0, ct] + [2 * ct] * (len(parts) - 2)
    assert [kw["commit_kv_tokens"] for kw in seen] == [0] + [ct] * (len(parts) - 1)
    assert seen[0]["cost_scale"] is None and all(kw["cost_scale"] > 0 for kw in seen[1:])  # learnt from the parts
    assert all(p.info["latency_target_met"] and p.info["plan"] for p in parts)


def test_part_planner_keeps_its_plan_when_a_replan_fails_and_follows_the_parts():
    """An impossible first plan raises before any work; a later one keeps the last plan (no lost stream); the
    cost scale moves by the damped ratio of actual to predicted time."""
    from vidrt.caching.scheduler import Plan, Schedule
    from vidrt.errors import LatencyError
    from vidrt.longclip.causal import CausalSettings
    from vidrt.longclip.planner import PartPlanner

    calls = []

    class FakePipe:
        fail = False

        def plan(self, target, shape, **kw):
            calls.append(kw)
            if self.fail:
                raise LatencyError("impossible")
            return Schedule(Plan(7), predicted_s=2.0, target_s=target, alternatives=1, load_factor=1.5,
                            load_check="rescaled")

    pipe, settings = FakePipe(), CausalSettings(steps=20, guidance=3.0)
    planner = PartPlanner(pipe, 2.0, (1, 16, 3, 8, 8), cfg=True, default_steps=20, settings=settings)
    assert planner.plan(0).plan.steps == 7 and settings.steps == 7 and planner.scale == 1.5
    planner.observe(4.0)                       # twice the prediction: scale x sqrt(2)
    assert planner.scale == pytest.approx(1.5 * 2 ** 0.5)
    pipe.fail = True
    assert planner.plan(1).plan.steps == 7     # kept
    assert calls[-1]["cost_scale"] == pytest.approx(1.5 * 2 ** 0.5)
    first = PartPlanner(pipe, 2.0, (1, 16, 3, 8, 8), cfg=True, default_steps=20, settings=settings)
    with pytest.raises(LatencyError):
        first.plan(0)
