"""tools/diagnose_dit.py: the one-step table has every level, per-frame errors that grow with the noise, and the
truth through the VAE scored; object tracks follow a rendered motion; clean context frames are given, not scored; a
prompt outside the grammar fails before any model loads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_one_step_table(tiny_wan, tmp_path):
    tool = load_script(ROOT / "tools/diagnose_dit.py")
    out = tmp_path / "d.json"
    assert tool.main(["--model", str(tiny_wan), "--prompt", "a red circle moves right", "--n", "2", "--size",
                      "5x32x32", "--levels", "0.1,0.9", "--threads", "1", "--json", str(out),
                      "--against", "a blue square moves left", "--against", ""]) == 0
    res = json.loads(out.read_text())
    assert res["clips"] == 2 and res["size"] == "5x32x32"
    assert len(res["object_signal_per_latent_frame"]) == 2                    # 5 frames -> 2 latent frames
    assert [lv["s"] for lv in res["levels"]] == [0.1, 0.9]
    lo, hi = res["levels"]
    assert len(lo["latent_mse_per_frame"]) == 2
    # a random DiT's error scales with s (x0 = x_s - s v): more noise, larger error
    assert hi["latent_mse"] > lo["latent_mse"] > 0
    assert 0.0 <= res["truth_through_vae"]["adherence"] <= 1.0
    # the same noised latents under each prompt: the random DiT's text path changes its prediction (visibly at
    # high noise, where x0 = x_s - s v leans on the prediction most)
    for lv in res["levels"]:
        assert list(lv["object_mse"]) == ["a red circle moves right", "a blue square moves left", ""]
        assert all(v > 0 for v in lv["object_mse"].values())
    assert len(set(hi["object_mse"].values())) == 3
    # one object track per prompt and level (5 frames -> 5 points), centroids inside the frame
    for track in [res["truth_track"]] + [t for lv in res["levels"] for t in lv["tracks"].values()]:
        assert len(track["x"]) == len(track["y"]) == 5
        assert all(v is None or 0.0 <= v <= 1.0 for v in track["x"] + track["y"])
        assert all((vx is None) == (vy is None) for vx, vy in zip(track["x"], track["y"]))
    assert list(hi["tracks"]) == list(hi["object_mse"])


def test_object_track_follows_a_rendered_motion():
    from vidrt.world.render import TRAVEL, render

    tool = load_script(ROOT / "tools/diagnose_dit.py")
    for d, sign in (("right", 1), ("left", -1)):
        x, y = tool.object_track(render(f"a yellow circle moves {d} on a black background", 64, 64, 33, 16, 3))
        assert sign * (x[-1] - x[0]) == pytest.approx(TRAVEL, abs=0.02)     # the whole travel, in frame widths
        assert abs(y[-1] - y[0]) < 0.01 and 0.1 < y[0] < 0.9                 # on its row
    frames = render("a yellow circle stays still on a black background", 32, 32, 3, 16, 0)
    frames[1] = frames[1, 0, 0]                                               # frame 1: background only
    x, y = tool.object_track(frames)
    assert np.isnan(x[1]) and np.isnan(y[1]) and not np.isnan(x[[0, 2]]).any()


def test_context_frames_are_given(tiny_wan, tmp_path):
    from vidrt.errors import ConfigError

    tool = load_script(ROOT / "tools/diagnose_dit.py")
    out = tmp_path / "d.json"
    assert tool.main(["--model", str(tiny_wan), "--prompt", "a red circle moves right", "--n", "2", "--size",
                      "9x32x32", "--levels", "0.9", "--threads", "1", "--context", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (lv,) = res["levels"]
    assert res["context_latent_frames"] == 1
    per_frame = lv["latent_mse_per_frame"]
    assert len(per_frame) == 3 and per_frame[0] == 0.0 and min(per_frame[1:]) > 0   # clean frame: x0 = x_s
    assert lv["latent_mse"] == pytest.approx(sum(per_frame[1:]) / 2, rel=1e-3)      # scored on the noisy frames
    with pytest.raises(ConfigError, match="context=3"):
        tool.main(["--model", str(tiny_wan), "--prompt", "a red circle moves right", "--n", "1", "--size",
                   "9x32x32", "--threads", "1", "--context", "3"])


def test_rejects_bad_prompt_and_levels(tmp_path):
    from vidrt.errors import PromptError

    tool = load_script(ROOT / "tools/diagnose_dit.py")
    with pytest.raises(PromptError, match="dragon"):
        tool.main(["--prompt", "a red dragon flies"])
    with pytest.raises(PromptError, match="dragon"):
        tool.main(["--prompt", "a red circle moves right", "--against", "a red dragon flies"])
    with pytest.raises(SystemExit):
        tool.main(["--prompt", "a red circle moves right", "--levels", "0,1.5"])
