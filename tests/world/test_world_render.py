"""Ground-truth renderer: shapes, determinism, aspect ratios, images, anti-aliasing, motion, speed."""

import numpy as np
import pytest

from vidrt.errors import PromptError, ShapeError
from vidrt.world import COLORS, parse, render
from vidrt.world.render import TRAVEL


def _mask(frames, color, tol=40):
    return np.abs(frames.astype(int) - COLORS[color]).sum(-1) < tol


def _centroids(frames, color):
    """Coverage-weighted centre x, y and area (pixels) of one object per frame, on a black background."""
    c = np.asarray(COLORS[color], float)
    out = []
    for f, m in zip(frames.astype(float), _mask(frames, color)):
        near = m.copy()
        for _ in range(2):   # grow the mask by 2 pixels to take in the anti-aliased edge
            near[1:] |= near[:-1]; near[:-1] |= near[1:]; near[:, 1:] |= near[:, :-1]; near[:, :-1] |= near[:, 1:]
        alpha = np.clip(f @ c / (c @ c), 0, 1) * near
        yy, xx = np.mgrid[0:f.shape[0], 0:f.shape[1]] + 0.5
        out.append(((alpha * xx).sum() / alpha.sum(), (alpha * yy).sum() / alpha.sum(), alpha.sum()))
    return np.array(out)


@pytest.mark.parametrize("h, w, t", [(64, 64, 17), (64, 128, 33), (96, 64, 17), (48, 80, 5), (128, 96, 1)])
def test_shape_dtype_and_any_aspect_ratio(h, w, t):
    f = render("a red circle moves right and a blue triangle bounces on a gray background", h, w, t, seed=1)
    assert f.shape == (t, h, w, 3) and f.dtype == np.uint8
    assert (f[:, 0, 0] == (128, 128, 128)).all()            # background
    assert _mask(f, "red").sum(axis=(1, 2)).min() > 10       # both objects on every frame
    assert _mask(f, "blue").sum(axis=(1, 2)).min() > 10


def test_deterministic_per_seed():
    p = "a green square grows and an orange circle moves down"
    a, b = render(p, 64, 64, 17, seed=3), render(p, 64, 64, 17, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(p, 64, 64, 17, seed=4))
    assert np.array_equal(render(parse(p), 64, 64, 17, seed=3), a)


def test_one_frame_is_an_image():
    img = render("a purple triangle moves left on a white background", 64, 96, 1, seed=2)
    assert img.shape == (1, 64, 96, 3) and _mask(img, "purple").sum() > 20
    # without motion an image is exactly the first (and every) frame of the clip
    p = "a purple triangle stays still and a green circle on a white background"
    img, clip = render(p, 64, 96, 1, seed=2), render(p, 64, 96, 17, seed=2)
    assert np.array_equal(img[0], clip[0]) and np.array_equal(clip[0], clip[-1])


def test_anti_aliased_edges_match_true_pixel_coverage():
    f = render("a white circle", 64, 64, 1, seed=0)[0].astype(int)
    assert (f[..., 0] == f[..., 1]).all()                # white on black stays neutral
    alpha = f[..., 0] / 255.0
    assert ((alpha > 0.04) & (alpha < 0.96)).sum() >= 12  # a ring of partially covered pixels
    # compare with the exact coverage of the same disc, by 16x16 supersampling
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    cx, cy = (alpha * xx).sum() / alpha.sum(), (alpha * yy).sum() / alpha.sum()
    r = np.sqrt(alpha.sum() / np.pi)
    sub = (np.arange(16) + 0.5) / 16
    sx = (np.arange(64)[:, None] + sub[None, :]).reshape(-1)
    inside = ((sx[None, :] - cx) ** 2 + (sx[:, None] - cy) ** 2) <= r * r
    truth = inside.reshape(64, 16, 64, 16).mean(axis=(1, 3))
    err = np.abs(truth - alpha).max()
    print(f"max coverage error {err:.3f}")
    assert err < 0.08


@pytest.mark.parametrize("motion, axis, sign", [("moves right", 0, 1), ("moves left", 0, -1), ("moves up", 1, -1),
                                                 ("moves down", 1, 1)])
@pytest.mark.parametrize("h, w, t", [(64, 64, 17), (64, 128, 33)])
def test_translation_direction_and_extent(motion, axis, sign, h, w, t):
    f = render(f"a red square {motion}", h, w, t, seed=5)
    c = _centroids(f, "red")
    travel = (c[-1, axis] - c[0, axis]) / (w, h)[axis]
    assert sign * travel == pytest.approx(TRAVEL, abs=0.02)
    assert abs(c[-1, 1 - axis] - c[0, 1 - axis]) < 0.5
    steps = sign * np.diff(c[:, axis])
    assert steps.min() > 0 and steps.max() - steps.min() < 0.1     # constant speed, always forward


def test_bounce_grow_shrink_and_still():
    f = render("a red circle bounces and a green square grows and a blue triangle shrinks", 64, 96, 33, seed=0)
    red, green, blue = (_centroids(f, c) for c in ("red", "green", "blue"))
    y = red[:, 1]
    assert y[0] == pytest.approx(y[-1], abs=0.5) and y[0] == pytest.approx(y[16], abs=0.5)   # two hops
    assert y[0] - y.min() > 0.25 * 64
    assert green[-1, 2] / green[0, 2] == pytest.approx(1.7 ** 2, rel=0.12)
    assert blue[0, 2] / blue[-1, 2] == pytest.approx(1.7 ** 2, rel=0.2)
    still = _centroids(render("a cyan circle stays still", 64, 64, 17, seed=1), "cyan")
    assert np.ptp(still, axis=0).max() < 1e-9


@pytest.mark.parametrize("seed", range(12))
def test_objects_stay_in_frame_and_apart(seed):
    p = "a red triangle moves right and a yellow square moves up and a cyan circle grows"
    f = render(p, 64, 64, 33, seed=seed)
    for color in ("red", "yellow", "cyan"):
        m = _mask(f, color)
        assert m.sum(axis=(1, 2)).min() > 10
        border = m[:, 0].sum() + m[:, -1].sum() + m[:, :, 0].sum() + m[:, :, -1].sum()
        assert border <= 4 * 33     # at most a sliver of an edge pixel row


@pytest.mark.parametrize("kw", [dict(height=4, width=64, num_frames=5), dict(height=64, width=64, num_frames=0),
                                dict(height=64.0, width=64, num_frames=5)])
def test_bad_sizes_raise_shape_error(kw):
    with pytest.raises(ShapeError):
        render("a red circle", **kw)


def test_bad_prompt_raises_prompt_error():
    with pytest.raises(PromptError):
        render("a red circle flies", 64, 64, 5)
