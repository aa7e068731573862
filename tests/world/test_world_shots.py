"""Multi-shot clips: references keep colour, shape and size and continue from where they were."""
import numpy as np
import pytest

from vidrt.errors import PromptError, ShapeError
from vidrt.world import COLORS, parse_shots, render_shots, shot_lengths


def _blob(frame, color, tol=40):
    """Coverage-weighted centre and area of one object on a gray or black background."""
    m = np.abs(frame.astype(int) - COLORS[color]).sum(-1) < tol
    ys, xs = np.nonzero(m)
    return np.array([xs.mean(), ys.mean(), len(xs)])


SHOTS = ["a red circle moves right and a green triangle bounces",
         "the red circle moves up and a blue square stays still",
         "the red circle grows on a gray background",
         "the green triangle moves left and the red circle moves down"]


def test_resolution_ids_and_background_inheritance():
    shots = parse_shots(SHOTS)
    assert [s.object_ids for s in shots] == [(0, 1), (0, 2), (0,), (1, 0)]
    assert [s.background for s in shots] == ["black", "black", "gray", "gray"]
    again = parse_shots(["a red circle", "a red circle moves up", "the red circle"])
    assert [s.object_ids for s in again] == [(0,), (1,), (1,)]   # 'the' = the most recent one


@pytest.mark.parametrize("h, w", [(64, 64), (64, 96), (96, 64)])
def test_referenced_objects_continue_where_they_were(h, w):
    n = 17
    f = render_shots(SHOTS, h, w, frames_per_shot=n, seed=3)
    assert f.shape == (4 * n, h, w, 3) and f.dtype == np.uint8
    # (colour, last frame of its previous shot, first frame of the shot that names it again)
    for color, end, start in [("red", n - 1, n), ("red", 2 * n - 1, 2 * n), ("red", 3 * n - 1, 3 * n),
                              ("green", n - 1, 3 * n)]:      # the triangle skips shots 2-3
        a, b = _blob(f[end], color), _blob(f[start], color)
        # same place, same size (edge pixels blend differently on a new background)
        assert np.abs(a[:2] - b[:2]).max() <= 0.25 and abs(a[2] - b[2]) <= 0.03 * a[2], (color, a, b)
    # the continued red circle kept its size through shots 1-2 and grew in shot 3
    r = [_blob(f[i], "red")[2] for i in (0, n - 1, 2 * n - 1, 3 * n - 1)]
    assert r[0] == pytest.approx(r[1], rel=0.05) and r[1] == pytest.approx(r[2], rel=0.05)
    assert r[3] / r[2] == pytest.approx(1.7 ** 2, rel=0.15)
    # shot 2 moved the circle up, shot 4 moves it down and the triangle left
    assert _blob(f[2 * n - 1], "red")[1] < _blob(f[n], "red")[1] - 0.3 * h
    assert _blob(f[4 * n - 1], "green")[0] < _blob(f[3 * n], "green")[0] - 0.3 * w
    # a cut hides objects the shot does not name; backgrounds follow the shots
    assert (np.abs(f[2 * n: 3 * n].astype(int) - COLORS["blue"]).sum(-1) < 40).sum() == 0
    assert (f[:2 * n, 0, 0] == 0).all() and (f[2 * n:, 0, 0] == 128).all()


def test_long_shot_lists_stay_in_frame():
    shots = ["a yellow square moves right"] + ["the yellow square moves right"] * 5
    f = render_shots(shots, 64, 64, seconds_per_shot=2.0, seed=0)
    assert f.shape[0] == 6 * 32
    xs = np.array([_blob(x, "yellow")[0] for x in f])
    assert (np.diff(xs) >= -1e-9).all() and xs[-1] - xs[0] > 20    # always rightwards, never out of frame
    assert min(_blob(x, "yellow")[2] for x in f) == pytest.approx(_blob(f[0], "yellow")[2], rel=0.1)


def test_deterministic_and_seeded():
    a = render_shots(SHOTS[:2], 64, 64, frames_per_shot=[5, 9], seed=1)
    assert a.shape[0] == 14
    assert np.array_equal(a, render_shots(SHOTS[:2], 64, 64, frames_per_shot=[5, 9], seed=1))
    assert not np.array_equal(a, render_shots(SHOTS[:2], 64, 64, frames_per_shot=[5, 9], seed=2))


@pytest.mark.parametrize("shots, needle", [
    (["a red circle moves right", "the blue square moves up"], "no earlier shot has a blue square"),
    (["the red circle moves right"], "no earlier shot has a red circle"),
    (["a red circle", "the red square"], "earlier objects: red circle"),
    (["a white circle on a gray background", "the white circle on a white background"], "invisible"),
    ([], "at least one prompt"),
])
def test_bad_shot_lists(shots, needle):
    with pytest.raises(PromptError) as e:
        render_shots(shots, 64, 64, frames_per_shot=5)
    assert needle in str(e.value)


def test_shot_lengths():
    assert shot_lengths(3, frames_per_shot=17) == [17, 17, 17]
    assert shot_lengths(2, seconds_per_shot=[1.0, 2.5], fps=16) == [16, 40]
    for kw in (dict(), dict(frames_per_shot=5, seconds_per_shot=1.0), dict(frames_per_shot=[5])):
        with pytest.raises(ShapeError):
            shot_lengths(2, **kw)


def test_model_prompts_write_references_as_training_prompts():
    """What a model trained on single-shot world prompts is given per shot: 'the X' written 'a X' / 'an X' (the
    training data never says 'the'), the inherited background named, nothing else changed."""
    from vidrt.world.shots import model_prompts

    assert model_prompts(["a red circle moves right on a gray background", "the red circle bounces",
                          "the red circle moves left and an orange square stays still"]) == [
        "a red circle moves right on a gray background", "a red circle bounces on a gray background",
        "a red circle moves left and an orange square stays still on a gray background"]
    # the default background stays unnamed unless a shot names it (both forms are training prompts)
    assert model_prompts(["an orange square grows", "the orange square shrinks"]) == [
        "an orange square grows", "an orange square shrinks"]
    assert model_prompts(["a blue circle stays still", "the blue circle grows on a white background"]) == [
        "a blue circle stays still", "a blue circle grows on a white background"]
    with pytest.raises(PromptError, match="no earlier shot"):
        model_prompts(["a red circle moves right", "the blue square bounces"])
