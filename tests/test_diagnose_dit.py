"""tools/diagnose_dit.py: the one-step table has every level, per-frame errors that grow with the noise, and the
truth through the VAE scored; a prompt outside the grammar fails before any model loads."""
from __future__ import annotations

import json
from pathlib import Path

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


def test_rejects_bad_prompt_and_levels(tmp_path):
    from vidrt.errors import PromptError

    tool = load_script(ROOT / "tools/diagnose_dit.py")
    with pytest.raises(PromptError, match="dragon"):
        tool.main(["--prompt", "a red dragon flies"])
    with pytest.raises(PromptError, match="dragon"):
        tool.main(["--prompt", "a red circle moves right", "--against", "a red dragon flies"])
    with pytest.raises(SystemExit):
        tool.main(["--prompt", "a red circle moves right", "--levels", "0,1.5"])
