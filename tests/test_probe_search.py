"""tools/probe_search.py: pruning candidates by an early verifier score, summarised against best-of-n and the
oracle; the early estimates come from the pipeline's on_step callback."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
tool = load_script(ROOT / "tools/probe_search.py")


def _rows(early_sign: float, n_prompts: int = 6, n: int = 4, steps: int = 20) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n_prompts):
        adh = rng.random(n)
        rows.append({"adherence": adh.tolist(),
                     "verifier": {"3": (early_sign * adh).tolist(), str(steps): (adh + 0.0).tolist()}})
    return rows


def test_a_predictive_early_score_prunes_to_the_oracle():
    s = tool.summarize(_rows(+1.0), 20)
    assert s["oracle"] == pytest.approx(s["prune"]["3"]["keep"]["1"]["adherence"])
    assert s["prune"]["3"]["correlation"] == pytest.approx(1.0)
    assert s["best_of"]["1"]["adherence"] == pytest.approx(s["plain"])
    assert s["best_of"]["1"]["minus_plain"] == pytest.approx(0)
    adh = np.array([r["adherence"] for r in _rows(+1.0)])
    assert s["plain"] == pytest.approx(adh.mean()) and s["candidate_0"] == pytest.approx(adh[:, 0].mean())
    # best of 2 by a perfect final score, over all 6 pairs of 4 candidates: the expected maximum of a random pair
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    assert s["best_of"]["2"]["adherence"] == pytest.approx(np.mean([adh[:, [a, b]].max(1) for a, b in pairs]))
    assert s["best_of"]["4"]["adherence"] == pytest.approx(s["oracle"])   # the final score is perfect here
    # work in candidate step-batches: 4 candidates for steps 0..3, then the survivors for the other 16
    assert s["prune"]["3"]["keep"]["2"]["work"] == 4 * 4 + 2 * 16 and s["best_of"]["2"]["work"] == 40


def test_an_anti_correlated_early_score_keeps_the_worst():
    s = tool.summarize(_rows(-1.0), 20)
    adh = np.array([r["adherence"] for r in _rows(-1.0)])
    assert s["prune"]["3"]["keep"]["1"]["adherence"] == pytest.approx(adh.min(1).mean())
    assert s["prune"]["3"]["correlation"] == pytest.approx(-1.0)


def test_run_prompt_scores_the_recorded_estimates(tiny_wan):
    import vidrt

    pipe = vidrt.Pipeline.from_pretrained(tiny_wan)
    pipe.defaults = dataclasses.replace(pipe.defaults, steps=5, max_sequence_length=16)

    class Verifier:   # brighter is better: a deterministic stand-in for the world verifier
        def score(self, videos, prompts):
            return videos.float().mean(dim=(1, 2, 3, 4))

    pipe.verifier = Verifier()
    noise = torch.randn(pipe.latent_shape(3, 5, 32, 32), generator=torch.Generator().manual_seed(0))
    row = tool.run_prompt(pipe, "a red circle moves right", noise, (1, 3), 5, 32, 32)
    assert sorted(row["verifier"], key=int) == ["1", "3", "5"]
    assert all(len(v) == 3 for v in row["verifier"].values()) and len(row["adherence"]) == 3
    final = pipe.decode(pipe(["a red circle moves right"] * 3, num_frames=5, height=32, width=32, latents=noise,
                             output="latent", progress=False))
    assert row["verifier"]["5"] == pytest.approx(Verifier().score(final, None).tolist())
    assert row["verifier"]["1"] != pytest.approx(row["verifier"]["5"])
