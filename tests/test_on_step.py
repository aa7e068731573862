"""``on_step``: a callback after every denoising step (previews, progress, probes) that can stop the run cleanly."""
import pytest
import torch

import vidrt
from vidrt.pipeline import Pipeline

KW = dict(height=32, width=32, num_frames=5, steps=6, progress=False, max_sequence_length=16)


@pytest.fixture(scope="module")
def pipe(tiny_wan):
    return Pipeline.from_pretrained(tiny_wan)


def test_on_step_sees_every_step_and_changes_nothing(pipe):
    seen = []
    plain = pipe("a red circle", seed=3, output="latent", **KW)
    z = pipe("a red circle", seed=3, output="latent", on_step=lambda s: seen.append(
        (s.step, s.steps, s.sigma, s.latents.clone(), s.x0.clone())), **KW)
    assert torch.equal(z, plain)                    # observing does not change the run
    assert [s[0] for s in seen] == list(range(6)) and all(s[1] == 6 for s in seen)
    sigmas = [s[2] for s in seen]
    assert sigmas[0] > 0.9 and all(a > b for a, b in zip(sigmas, sigmas[1:]))
    assert torch.equal(seen[-1][3], z)             # the last step's latents are the result
    # x0 = latents_before - sigma * prediction: at the first step from pure noise it is not the noise itself,
    # and the estimates converge to the result
    assert seen[0][4].shape == z.shape
    err = [float((s[4] - z).norm() / z.norm()) for s in seen]
    assert err[-1] < err[0]


def test_on_step_false_stops_and_decodes_the_estimate(pipe):
    kept = {}

    def stop_at_2(s):
        kept[s.step] = s.x0.clone()
        return s.step < 2

    v = pipe("a red circle", seed=3, on_step=stop_at_2, **KW)
    assert v.stats["stopped"] == {"reason": "callback", "completed_steps": 3, "steps": 6}
    assert sorted(kept) == [0, 1, 2] and v.frames.shape == (5, 32, 32, 3)
    z = pipe("a red circle", seed=3, on_step=stop_at_2, output="latent", **KW)
    assert torch.equal(z, kept[2])
    # any false value but None stops (numpy / torch booleans too); None and true values go on
    for answer in (0, torch.tensor(False)):
        v = pipe("a red circle", seed=3, on_step=lambda s, a=answer: a if s.step == 1 else None, **KW)
        assert v.stats["stopped"]["completed_steps"] == 2
    assert "stopped" not in pipe("a red circle", seed=3, on_step=lambda s: 1, **KW).stats
    # False at the last step: the run is complete, nothing is replaced
    full = pipe("a red circle", seed=3, output="latent", **KW)
    z = pipe("a red circle", seed=3, on_step=lambda s: False if s.step == 5 else None, output="latent", **KW)
    assert torch.equal(z, full)


def test_on_step_with_candidates_sees_every_row(pipe):
    class Verifier:
        def score(self, videos, prompts):
            return videos.float().mean(dim=(1, 2, 3, 4))

    pipe.verifier = Verifier()
    rows = []
    v = pipe(["a red circle", "a blue square"], candidates=3, on_step=lambda s: rows.append(s.latents.shape[0]),
             **KW)
    assert rows == [6] * 6 and len(v) == 2


def test_on_step_must_be_callable(pipe):
    with pytest.raises(vidrt.ConfigError, match="on_step=.*give a function taking a vidrt.StepState"):
        pipe("a red circle", on_step="preview", **KW)
    assert vidrt.StepState.__name__ == "StepState"
