"""Streaming: chunked decode == one-shot decode, interrupted runs keep a playable MP4, shot lists,
the sliding-window fallback, the CLI."""
import json
import logging

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import vidrt
from vidrt.errors import ConfigError, PromptError
from vidrt.longclip import Shot, as_shots, load_shots, plan_shots, save_stream
from vidrt.video import to_frames

from vidrt.testing import TINY_GEN as GEN


def test_chunked_decode_equals_one_shot(causal_pipe):
    parts = list(causal_pipe.stream("a blue square moves up", seconds=1.6, **GEN))
    lat = torch.cat([p.latents for p in parts], dim=2)
    one_shot = to_frames(causal_pipe.decode(lat)[0])
    streamed = np.concatenate([p.frames for p in parts])
    assert streamed.shape == one_shot.shape == (1 + 4 * (lat.shape[2] - 1), 32, 32, 3)
    assert np.abs(streamed.astype(int) - one_shot.astype(int)).max() <= 1
    assert [p.frame_start for p in parts] == [0] + list(np.cumsum([p.frames.shape[0] for p in parts])[:-1])
    last = parts[-1]
    assert last.seconds_done == pytest.approx(streamed.shape[0] / last.fps)
    assert last.realtime_factor > 0 and 0 < last.time_to_first_s <= last.elapsed_s


def test_interruption_leaves_playable_mp4(causal_pipe, tmp_path):
    out = tmp_path / "cut.mp4"
    done = []

    def interrupted():
        for part in causal_pipe.stream("a red circle moves right", seconds=2.5, **GEN):
            if len(done) == 2:
                raise RuntimeError("power cut")
            done.append(part)
            yield part

    with pytest.raises(RuntimeError, match="power cut"):
        save_stream(interrupted(), out)
    frames = iio.imread(out)
    expect = np.concatenate([p.frames for p in done])
    assert frames.shape == expect.shape  # every finished frame, nothing else
    assert np.abs(frames.astype(float) - expect).mean() < 12  # H.264 of the same frames


def test_shot_lists(causal_pipe, tmp_path):
    with pytest.raises(PromptError, match="no earlier shot has a blue square"):
        causal_pipe.stream([Shot("a red circle moves right", seconds=1), Shot("the blue square bounces", seconds=1)])
    with pytest.raises(PromptError, match="bouncs"):
        causal_pipe.stream(["a red circle moves right", "the red circle bouncs"])
    f = tmp_path / "shots.yaml"
    f.write_text("shots:\n  - {prompt: a red circle moves right, seconds: 1}\n"
                 "  - {prompt: the red circle bounces, seconds: 1.5, cut: hard}\n")
    shots = load_shots(f)
    assert shots == [Shot("a red circle moves right", 1.0), Shot("the red circle bounces", 1.5, "hard")]
    assert [s.seconds for s in as_shots(shots, seconds=5)] == [2.0, 3.0]
    spans = plan_shots(shots, fps=16, unit=2)
    assert [(s.latent_start, s.latent_stop) for s in spans] == [(0, 4), (4, 10)]
    assert [(s.frame_start, s.frame_stop) for s in spans] == [(0, 13), (13, 37)]
    parts = list(causal_pipe.stream(f, **GEN))
    assert [p.shot for p in parts] == [0, 0, 1, 1, 1]
    # the hard cut dropped the rolling window: after shot 2's first chunk the cache holds the sink + that chunk
    assert parts[2].info["kv_cached_tokens"] == 2 * 16 // 4 * 2
    assert sum(p.frames.shape[0] for p in parts) == 37
    # the DiT reads each shot as world training prompts are written; the parts keep the prompts as given
    assert [p.prompt for p in parts] == ["a red circle moves right"] * 2 + ["the red circle bounces"] * 3
    assert {p.info["model_prompt"] for p in parts} == {"a red circle moves right", "a red circle bounces"}
    # ... and that text is what conditions the DiT: verbatim "the" prompts give other frames, and writing the
    # canonical prompts by hand gives the same frames bit for bit
    seen = [Shot("a red circle moves right", 1.0), Shot("a red circle bounces", 1.5, "hard")]
    same = list(causal_pipe.stream(seen, **GEN))
    verbatim = list(causal_pipe.stream(f, canonical_prompts=False, **GEN))
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(parts, same))
    assert verbatim[2].info["model_prompt"] == "the red circle bounces"
    assert not np.array_equal(verbatim[2].frames, parts[2].frames)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "a red circle", "secs": 2}]))
    with pytest.raises(PromptError, match="unknown keys: secs"):
        load_shots(bad)
    # free text (not the world grammar) is fine when asked for
    assert len(list(causal_pipe.stream("a cat on the grass", seconds=0.5, world=False, **GEN))) == 1


def test_sliding_window_fallback_on_bidirectional_model(base_pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="vidrt.longclip"):
        parts = list(base_pipe.stream("a red circle moves right", seconds=2.0, window_frames=4, overlap_frames=1,
                                      **GEN))
    assert "sliding-window fallback" in caplog.text
    assert {p.mode for p in parts} == {"sliding"}
    lat = torch.cat([p.latents for p in parts], dim=2)
    assert lat.shape[2] == 8 and [p.latents.shape[2] for p in parts] == [4, 3, 1]
    assert parts[-1].info["overlap_frames_recomputed"] == 2
    assert sum(p.frames.shape[0] for p in parts) == 29
    with pytest.raises(ConfigError, match="bidirectional"):
        base_pipe.stream("a red circle", mode="causal")


def test_cli_stream(tiny_causal, tmp_path, capsys, monkeypatch):
    from vidrt.cli import main

    monkeypatch.setenv("VIDRT_CACHE_DIR", str(tmp_path / "cache"))  # the latency run's cost model goes here

    out, js = tmp_path / "c.mp4", tmp_path / "c.json"
    rc = main(["stream", "a green square moves left", "--seconds", "1.2", "--model", str(tiny_causal),
               "--height", "32", "--width", "32", "--steps", "2", "--max-sequence-length", "16", "--no-progress",
               "-o", str(out), "--json", str(js)])
    assert rc == 0
    report = json.loads(js.read_text())
    assert report["frames"] == iio.imread(out).shape[0] == sum(c["frames"] for c in report["chunks"])
    assert report["mode"] == "causal" and report["realtime_factor"] > 0
    seen = {}
    real_stream = vidrt.Pipeline.stream

    def spy(self, *a, **kw):
        seen.update(kw)
        return real_stream(self, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vidrt.Pipeline, "stream", spy)
        assert main(["stream", "a green square moves left", "--seconds", "0.5", "--model", str(tiny_causal),
                     "--height", "32", "--width", "32", "--steps", "1", "--max-sequence-length", "16",
                     "--commit-context", "sinks", "--no-progress", "-o", str(out)]) == 0
    assert seen["commit_context"] == "sinks"
    # with a latency target the JSON report says, per chunk, the plan, its prediction and whether it was met
    assert main(["stream", "a green square moves left", "--seconds", "0.5", "--model", str(tiny_causal),
                 "--height", "32", "--width", "32", "--steps", "2", "--max-sequence-length", "16",
                 "--latency-target", "60", "--no-progress", "-o", str(out), "--json", str(js)]) == 0
    chunks = json.loads(js.read_text())["chunks"]
    assert all(c["latency_target_met"] is True and c["plan"] and c["predicted_s"] > 0 for c in chunks)
    shots = tmp_path / "s.yaml"
    shots.write_text("- a red circle moves right\n- the green circle stays still\n")
    assert main(["stream", "--shots", str(shots), "--model", str(tiny_causal), "--no-progress"]) == 2
    assert "the green circle" in capsys.readouterr().err


def test_generate_shots_forwards_to_stream(tiny_causal, tmp_path):
    from vidrt.cli import main

    shots, out = tmp_path / "shots.yaml", tmp_path / "g.mp4"
    shots.write_text("- {prompt: a red circle moves right, seconds: 0.5}\n"
                     "- {prompt: the red circle bounces, seconds: 0.5, cut: hard}\n")
    rc = main(["generate", "--shots", str(shots), "--model", str(tiny_causal), "--height", "32", "--width", "32",
               "--steps", "2", "-o", str(out)])
    assert rc == 0 and iio.imread(out).shape[0] > 8
