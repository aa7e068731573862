"""benchmarks/eval_default_model.py end to end on a tiny random model: every reference column is there and
the references score as they must (the renderer's truth near 1; truth through a random VAE far lower)."""
from __future__ import annotations

import json
from pathlib import Path

from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[2]


def _load():
    return load_script(ROOT / "benchmarks/eval_default_model.py")


def test_eval_writes_table_with_references(tiny_wan, tmp_path):
    ev = _load()
    assert ev.main(["--model", str(tiny_wan), "--prompts", "3", "--sizes", "5x32x32", "--steps", "2", "--threads",
                    "1", "--no-vae", "--out", str(tmp_path), "--name", "t"]) == 0
    res = json.loads((tmp_path / "t.json").read_text())
    (c,) = res["configs"]
    assert c["prompts"] == 3 and c["size"] == "5x32x32"
    assert c["ground_truth"]["adherence"] > 0.9
    assert c["truth_through_vae"]["adherence"] < c["ground_truth"]["adherence"] - 0.3   # random VAE: noise
    md = (tmp_path / "t.md").read_text()
    assert "truth through the VAE" in md and "| 5x32x32 | 3 |" in md
    # motion per motion word: every asked object of the 3 clips counted once, scores in [0, 1]
    from vidrt.world.grammar import held_out_prompts, parse

    asked = [o.motion for p in held_out_prompts()[:3] for o in parse(p).objects]
    by_word = c["motion_by_word"]
    assert {m: v["objects"] for m, v in by_word.items()} == {m: asked.count(m) for m in set(asked)}
    assert all(0.0 <= v["motion"] <= 1.0 for v in by_word.values())
    assert "Motion score by the motion asked, 5x32x32" in md
    # adherence per object count: the rows' mean for each count, the counts adding up to the prompts
    by_n = c["by_objects"]
    counts = [len(parse(p).objects) for p in held_out_prompts()[:3]]
    assert {int(n): v["prompts"] for n, v in by_n.items()} == {n: counts.count(n) for n in set(counts)}
    for n, v in by_n.items():
        assert abs(v["adherence"] - sum(r["adherence"] for r, k in zip(c["rows"], counts) if k == int(n))
                   / v["prompts"]) < 1e-12
    assert "Adherence by objects in the prompt, 5x32x32" in md


def test_eval_given_prompts_with_repeats(tiny_wan, tmp_path):
    ev = _load()
    assert ev.main(["--model", str(tiny_wan), "--prompt", "a red circle moves right", "--prompt",
                    "a blue square stays still", "--repeat", "2", "--sizes", "1x32x32", "--steps", "1", "--threads",
                    "1", "--no-vae", "--out", str(tmp_path), "--name", "g"]) == 0
    res = json.loads((tmp_path / "g.json").read_text())
    assert res["given_prompts"] == 2 and res["repeat"] == 2 and res["configs"][0]["prompts"] == 4
    assert res["held_out_prompts"] == 0                       # none of the held-out set was scored
    assert "Given prompts: 2 x 2 seeds" in (tmp_path / "g.md").read_text()


def test_eval_rejects_a_prompt_outside_the_grammar(tiny_wan, tmp_path):
    import pytest

    from vidrt.errors import VidrtError

    with pytest.raises(VidrtError, match="dragon"):
        _load().main(["--model", str(tiny_wan), "--prompt", "a red dragon flies", "--out", str(tmp_path)])


def test_paired_difference_of_two_results(tmp_path, capsys):
    """--compare pairs prompt by prompt: the mean difference and its standard error are the textbook ones, images
    (motion None) are skipped per criterion, and results over different prompts are refused."""
    import numpy as np
    import pytest

    ev = _load()
    a = [0.5, 0.6, 0.4, 0.7]
    b = [0.6, 0.6, 0.5, 0.9]

    def result(vals, motion=True, prompts=("p0", "p1", "p2", "p3")):
        rows = [{"prompt": p, "adherence": v, "motion": v / 2 if motion else None} for p, v in zip(prompts, vals)]
        return {"configs": [{"size": "33x64x64", "rows": rows},
                            {"size": "1x64x64", "rows": [dict(r, motion=None) for r in rows]}]}

    (r33, r1) = ev.paired_difference(result(a), result(b), ["adherence", "motion"])
    d = np.array(b) - np.array(a)
    assert r33["adherence"]["diff"] == pytest.approx(0.1)
    assert r33["adherence"]["se"] == pytest.approx(d.std(ddof=1) / 2)
    assert r33["motion"]["diff"] == pytest.approx(0.05) and "motion" not in r1
    (tmp_path / "a.json").write_text(json.dumps(result(a)))
    (tmp_path / "b.json").write_text(json.dumps(result(b)))
    assert ev.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--criteria",
                    "adherence,motion"]) == 0
    out = capsys.readouterr().out
    assert "| 33x64x64 | 4 | 0.550 -> 0.650 (+0.100 +- 0.041) | 0.275 -> 0.325 (+0.050 +- 0.020) |" in out
    assert "| 1x64x64 | 4 | 0.550 -> 0.650 (+0.100 +- 0.041) | - |" in out
    # columns follow --criteria even when the first size (an image) lacks one of them
    images_first = {"configs": result(a)["configs"][::-1]}
    (tmp_path / "c.json").write_text(json.dumps(images_first))
    (tmp_path / "d.json").write_text(json.dumps({"configs": result(b)["configs"][::-1]}))
    assert ev.main(["--compare", str(tmp_path / "c.json"), str(tmp_path / "d.json"), "--criteria",
                    "motion,adherence"]) == 0
    out = capsys.readouterr().out
    assert "| size | prompts | motion | adherence |" in out
    assert "| 1x64x64 | 4 | - | 0.550 -> 0.650 (+0.100 +- 0.041) |" in out
    with pytest.raises(SystemExit, match="different prompts"):
        ev.paired_difference(result(a), result(b, prompts=("p0", "p1", "p2", "x")))


def test_eval_latents_are_kept_and_decoded_again(tiny_wan, tmp_path, monkeypatch):
    """--latents DIR: the first run's clips equal a plain run's (sampling to latents then decoding is the same
    path), and a later run (other settings) decodes the kept latents instead of sampling, recording whose
    samples it scored: an edited latent file changes that prompt's clip and only that one."""
    import numpy as np
    import torch

    ev = _load()
    clips: dict[str, list] = {}
    run = {"name": ""}
    real_sample = ev.sample

    def recording_sample(*a, **k):
        frames, took = real_sample(*a, **k)
        clips.setdefault(run["name"], []).extend(frames)
        return frames, took

    monkeypatch.setattr(ev, "sample", recording_sample)
    common = ["--model", str(tiny_wan), "--prompts", "2", "--sizes", "5x32x32", "--threads", "1", "--no-vae",
              "--out", str(tmp_path)]
    lat = tmp_path / "lat"

    def main(name: str, *extra: str) -> None:
        run["name"] = name
        assert ev.main(common + ["--name", name, *extra]) == 0

    main("plain", "--steps", "2")
    main("kept", "--steps", "2", "--latents", str(lat))
    assert sorted(f.name for f in lat.iterdir()) == ["5x32x32_0.pt", "5x32x32_1.pt", "meta.json"]
    kept = torch.load(lat / "5x32x32_0.pt")
    z = kept["latents"]
    assert z.shape[0] == 1 and z.shape[2] == 2      # one sample, 5 frames -> 2 latent frames
    torch.save({**kept, "latents": torch.full_like(z, 3.0)}, lat / "5x32x32_0.pt")
    main("again", "--steps", "3", "--latents", str(lat))
    main("resampled", "--steps", "3")
    assert all(np.array_equal(a, b) for a, b in zip(clips["kept"], clips["plain"]))
    assert np.array_equal(clips["again"][1], clips["kept"][1])             # decoded, not re-sampled at 3 steps
    assert not np.array_equal(clips["resampled"][1], clips["kept"][1])     # which would have changed it
    assert not np.array_equal(clips["again"][0], clips["kept"][0])         # the edited file was decoded
    # latents kept for other prompts are not decoded for these: the run samples (and keeps) its own
    main("given", "--steps", "2", "--latents", str(lat), "--prompt", "a green square moves up")
    assert torch.load(lat / "5x32x32_0.pt")["prompt"] == "a green square moves up"
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["latents_from"]["steps"] == 2 and "latents_from" not in json.loads((tmp_path / "kept.json").read_text())


def test_eval_of_a_two_expert_pair(tiny_wan, tmp_path):
    """--transformer-2 / --boundary-ratio score a Wan 2.2-style pair built from two DiT folders; the settings say so
    and the samples differ from the one-DiT model's."""
    ev = _load()
    base = ["--model", str(tiny_wan), "--prompts", "2", "--sizes", "1x32x32", "--steps", "4", "--threads", "1",
            "--no-vae", "--out", str(tmp_path)]
    assert ev.main([*base, "--name", "one", "--latents", str(tmp_path / "l1")]) == 0
    other = tmp_path / "other"
    from vidrt.testing import make_tiny_wan

    make_tiny_wan(other, seed=5)
    assert ev.main([*base, "--name", "pair", "--transformer-2", str(other / "transformer"), "--boundary-ratio",
                    "0.8", "--guidance-2", "2.0", "--latents", str(tmp_path / "l2")]) == 0
    res = json.loads((tmp_path / "pair.json").read_text())
    assert res["settings"]["experts"] == {"transformer_2": str(other / "transformer"), "boundary_ratio": 0.8,
                                          "guidance_2": 2.0}
    import torch

    one, pair = (sorted((tmp_path / d).glob("*.pt")) for d in ("l1", "l2"))
    assert len(one) == len(pair) == 2
    assert not torch.equal(torch.load(one[0])["latents"], torch.load(pair[0])["latents"])


def test_eval_best_of_n_keeps_candidate_zero_as_the_plain_sample(tiny_wan, tmp_path):
    """--candidates N: the settings record N; with a verifier that always prefers candidate 0 the scores equal the
    plain run's (candidate 0 is the exact path's noise), so a paired --compare isolates the selection."""
    import shutil

    import torch

    from vidrt.world.verifier import VerifierConfig, WorldVerifier, save_verifier

    class FirstCandidate(WorldVerifier):
        def score(self, videos, prompts):
            n = len(prompts)
            return torch.tensor([1.0 if i < n // 2 else 0.0 for i in range(n)])   # 2 candidates: rows 0..B-1

    model = tmp_path / "wan"
    shutil.copytree(tiny_wan, model)
    save_verifier(WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2)), model / "verifier")
    ev = _load()
    base = ["--model", str(model), "--prompts", "2", "--sizes", "5x32x32", "--steps", "2", "--threads", "1",
            "--no-vae", "--out", str(tmp_path)]
    assert ev.main([*base, "--name", "plain", "--latents", str(tmp_path / "l_plain")]) == 0
    import vidrt.world.verifier as V

    original = V.load_verifier
    V.load_verifier = lambda folder, device="cpu": FirstCandidate(VerifierConfig(dim=16, layers=1, heads=2))
    try:
        assert ev.main([*base, "--name", "best2", "--candidates", "2", "--latents", str(tmp_path / "l_best")]) == 0
    finally:
        V.load_verifier = original
    plain, best = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "best2"))
    assert best["settings"]["candidates"] == 2 and "candidates" not in plain["settings"]
    assert [r["adherence"] for r in best["configs"][0]["rows"]] == [r["adherence"] for r in plain["configs"][0]["rows"]]
    for i in range(2):   # the kept samples are the plain run's (batched with a second candidate: rounding only)
        a = torch.load(tmp_path / "l_plain" / f"5x32x32_{i}.pt")["latents"]
        b = torch.load(tmp_path / "l_best" / f"5x32x32_{i}_best2.pt")["latents"]
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
