"""Best-of-N sampling (``candidates=N``): N clips per prompt in one batch, the verifier's best kept; candidate c is
exactly what a plain call with ``seed + c`` gives."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vidrt
from vidrt.cli import main
from vidrt.errors import ConfigError, PromptError, ShapeError

KW = dict(num_frames=5, height=32, width=32, steps=3, guidance=3.0, progress=False)


class Brightest:
    """A stub verifier: the brighter the clip, the better (so the pick is known in advance)."""

    def __init__(self):
        self.calls = []

    def score(self, videos, prompts):
        self.calls.append(list(prompts))
        return videos.float().mean(dim=(1, 2, 3, 4))


@pytest.fixture(scope="module")
def pipe(tiny_wan):
    return vidrt.Pipeline.from_pretrained(tiny_wan)


def test_candidate_c_is_the_plain_call_with_seed_plus_c(pipe):
    pipe.verifier = Brightest()
    try:
        best = pipe("a red circle", seed=7, candidates=3, **KW)
        singles = [pipe("a red circle", seed=7 + c, **KW) for c in range(3)]
    finally:
        pipe.verifier = None
    c = best.stats["candidates"]
    assert c["n"] == 3 and len(c["scores"]) == 3
    means = [s.frames.astype(np.float64).mean() for s in singles]
    assert c["picked"] == int(np.argmax(means))
    # scores are of the decoded clips in [-1, 1]: the frames' mean brightness, mapped
    np.testing.assert_allclose(c["scores"], [m / 127.5 - 1 for m in means], atol=2e-3)
    diff = np.abs(best.frames.astype(int) - singles[c["picked"]].frames.astype(int)).max()
    assert diff <= 1   # the same clip (batched vs alone: float rounding only)
    np.testing.assert_array_equal(pipe("a red circle", seed=7, candidates=1, **KW).frames, singles[0].frames)


def test_batch_of_prompts_with_explicit_latents(pipe):
    """latents for N x B clips are candidate-major; each prompt keeps its own best; output='latent' works too."""
    pipe.verifier = verifier = Brightest()
    try:
        shape = pipe.latent_shape(2, KW["num_frames"], KW["height"], KW["width"])
        noise = torch.randn((2 * shape[0],) + shape[1:], generator=torch.Generator().manual_seed(1))
        z = pipe(["a red circle", "a blue square"], latents=noise, candidates=2, output="latent", **KW)
        videos = pipe(["a red circle", "a blue square"], latents=noise, candidates=2, **KW)
    finally:
        pipe.verifier = None
    assert verifier.calls[0] == ["a red circle", "a blue square"] * 2
    assert z.shape == shape
    for j, video in enumerate(videos):
        pick = video.stats["candidates"]["picked"]
        alone = pipe(["a red circle", "a blue square"][j], latents=noise[pick * 2 + j: pick * 2 + j + 1], **KW)
        assert np.abs(video.frames.astype(int) - alone.frames.astype(int)).max() <= 1
        torch.testing.assert_close(z[j:j + 1], alone.latents, atol=1e-4, rtol=1e-4)


def test_bad_candidates_are_named_before_work(pipe):
    with pytest.raises(ConfigError, match="candidates=0"):
        pipe("a red circle", candidates=0, **KW)
    with pytest.raises(ConfigError, match="whole number"):
        pipe("a red circle", candidates=1.5, **KW)
    with pytest.raises(ConfigError, match="needs a verifier.*pipe.verifier"):
        pipe("a red circle", candidates=2, **KW)
    with pytest.raises(ConfigError, match="score"):
        pipe.verifier = object()
    pipe.verifier = Brightest()
    try:
        shape = pipe.latent_shape(1, KW["num_frames"], KW["height"], KW["width"])
        with pytest.raises(ShapeError, match="x 2 candidates"):
            pipe("a red circle", latents=torch.randn(shape), candidates=2, **KW)
        assert pipe.verifier.calls == []
    finally:
        pipe.verifier = None


def test_embedded_model_picks_by_its_verifier():
    pipe = vidrt.Pipeline.from_pretrained()
    if pipe.verifier is None:
        pytest.skip("this build has no embedded verifier")
    with pytest.raises(PromptError, match="grammar"):
        pipe("a photo of a cat", num_frames=1, candidates=2, progress=False)
    prompt = "a red circle moves right and a blue square stays still"
    video = pipe(prompt, num_frames=1, seed=3, candidates=3, progress=False)
    c = video.stats["candidates"]
    assert c["picked"] == int(np.argmax(c["scores"])) and len(set(c["scores"])) == 3
    again = pipe.verifier.score(torch.from_numpy(video.frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1,
                                [prompt])
    assert again.item() == pytest.approx(c["scores"][c["picked"]], abs=1e-3)


def test_cli_candidates(capsys, tmp_path):
    assert main(["generate", "a red circle", "--candidates", "0", "-o", str(tmp_path / "a.png")]) == 2
    assert "--candidates 0" in capsys.readouterr().err
    shots = tmp_path / "shots.json"
    shots.write_text('{"shots": [{"prompt": "a red circle", "seconds": 1}]}')
    assert main(["generate", "--shots", str(shots), "--candidates", "2"]) == 2
    assert "drop --candidates" in capsys.readouterr().err
    if vidrt.Pipeline.from_pretrained().verifier is None:
        pytest.skip("this build has no embedded verifier")
    out = tmp_path / "img.png"
    assert main(["generate", "a green triangle", "--frames", "1", "--candidates", "2", "--steps", "4",
                 "-o", str(out)]) == 0
    assert "best of 2: candidate" in capsys.readouterr().out and out.is_file()


def test_probe_verifier_tool(tiny_wan, tmp_path):
    """tools/probe_verifier.py on a tiny random model and verifier: the oracle bounds the pick and the plain path."""
    from vidrt.testing import load_script
    from vidrt.world.verifier import VerifierConfig, WorldVerifier, save_verifier

    tool = load_script(Path(__file__).resolve().parents[1] / "tools/probe_verifier.py")
    a = save_verifier(WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2)), tmp_path / "a")
    b = save_verifier(WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2, shape_motion_from="structure")),
                      tmp_path / "b")
    out, samples = tmp_path / "probe.json", tmp_path / "samples.npy"
    args = ["--model", str(tiny_wan), "--verifier", str(a), "--verifier", str(b), "--frames", "5", "--height", "32",
            "--width", "32", "--prompts", "3", "--candidates", "2", "--presence-weight", "0,1", "--samples",
            str(samples), "--out", str(out)]
    assert tool.main(args) == 0
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 6 and set(result["summary"]) == {f"{v}@{w}" for v in (a, b) for w in ("0.0", "1.0")}
    for s in result["summary"].values():
        assert s["oracle"] >= s["picked"] - 1e-9 and s["oracle"] >= s["plain"] - 1e-9
        assert s["picked_minus_plain"] == pytest.approx(s["picked"] - s["plain"])
    assert np.load(samples).shape == (3, 2, 5, 32, 32, 3)
    # a second run scores the kept samples (no generation): the same rows
    assert tool.main(args[:-2] + ["--out", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["rows"] == result["rows"]
    with pytest.raises(SystemExit, match="holds samples"):
        tool.main([x if x != "3" else "2" for x in args])
    with pytest.raises(SystemExit, match="holds samples"):   # same shape, other steps
        tool.main(args + ["--steps", "2"])
