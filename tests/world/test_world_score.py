"""Scorer validation with numbers: ground truth scores high, wrong prompts / shuffled frames / noise low,
each criterion reacts to its own defect, and blur + colour shifts barely matter."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from vidrt.errors import ShapeError
from vidrt.world import MOTIONS, parse, render, render_shots, sample_prompt, score

SIZES = [(64, 64, 17), (64, 64, 33), (128, 128, 33), (64, 128, 17), (96, 64, 33), (64, 64, 1), (128, 96, 1),
         (80, 48, 17), (64, 96, 33)]


def _different_prompt(rng, prompt):
    objects = set(parse(prompt).objects)
    while True:
        q = sample_prompt(rng)
        if set(parse(q).objects) != objects:
            return q


def _degrade(frames, rng, sigma=1.0, shift=25.0, noise=8.0):
    """Blur (sigma in pixels at 64 px), contrast 0.9, per-channel colour shift and Gaussian noise."""
    sigma = sigma * min(frames.shape[1:3]) / 64
    out = np.stack([np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(sigma))) for f in frames])
    out = out.astype(np.float32) * 0.9 + 10 + rng.uniform(-shift, shift, 3) + rng.normal(0, noise, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(2024)
    out = []
    for i in range(36):
        p = sample_prompt(rng)
        h, w, t = SIZES[i % len(SIZES)]
        out.append((p, render(p, h, w, t, seed=i)))
    return out


def test_ground_truth_scores_high_and_negatives_low(clips):
    rng = np.random.default_rng(0)
    gt, wrong, shuffled, shuffled_moving, noise = [], [], [], [], []
    per_criterion: dict[str, list] = {}
    for p, f in clips:
        s = score(f, p)
        gt.append(s.adherence)
        for k, v in s.criteria.items():
            per_criterion.setdefault(k, []).append(v)
        wrong.append(score(f, _different_prompt(rng, p)).adherence)
        if len(f) > 1:
            a = score(f[rng.permutation(len(f))], p).adherence
            shuffled.append(a)
            if all(o.motion != "stays still" for o in parse(p).objects):
                shuffled_moving.append(a)
        noise.append(score(rng.integers(0, 256, f.shape, dtype=np.uint8), p).adherence)
    sizes = sorted({f.shape[:3] for _, f in clips})
    print(f"\n{len(clips)} prompts, (T,H,W) = {sizes}")
    print("ground truth    mean %.3f min %.3f" % (np.mean(gt), np.min(gt)))
    print("  per criterion " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in per_criterion.items()))
    print("wrong prompt    mean %.3f max %.3f" % (np.mean(wrong), np.max(wrong)))
    print("shuffled frames mean %.3f max %.3f (%d clips); all objects moving: mean %.3f (%d clips)"
          % (np.mean(shuffled), np.max(shuffled), len(shuffled), np.mean(shuffled_moving), len(shuffled_moving)))
    print("uniform noise   mean %.3f max %.3f" % (np.mean(noise), np.max(noise)))
    assert {1, 17, 33} <= {f.shape[0] for _, f in clips} and any(f.shape[1] != f.shape[2] for _, f in clips)
    assert np.mean(gt) >= 0.95 and np.min(gt) >= 0.9
    assert np.mean(wrong) < 0.35
    assert np.mean(shuffled) < 0.6 and np.mean(shuffled_moving) < 0.45
    assert np.mean(noise) < 0.25 and np.max(noise) < 0.4


def test_blur_and_colour_shift_barely_matter(clips):
    rng = np.random.default_rng(1)
    sharp, blurred = [], []
    for p, f in clips[:18]:
        sharp.append(score(f, p).adherence)
        blurred.append(score(_degrade(f, rng), p).adherence)
    print(f"\nblur 1px + colour shift 25 + noise 8: mean {np.mean(blurred):.3f} min {np.min(blurred):.3f} "
          f"(sharp {np.mean(sharp):.3f})")
    assert np.mean(blurred) >= 0.9


@pytest.mark.parametrize("motion", MOTIONS)
def test_each_motion_is_recognised(motion):
    seen = []
    for seed, (h, w, t) in enumerate([(64, 64, 17), (64, 64, 33), (64, 128, 17), (96, 64, 33)]):
        f = render(f"a green triangle {motion} and a white circle on a gray background", h, w, t, seed=seed)
        s = score(f, f"a green triangle {motion} and a white circle on a gray background")
        seen.append(s.objects[0].seen_motion)
        assert s.objects[0].motion == 1.0 and s.adherence > 0.95
        fits = s.objects[0].motion_fits
        assert max(v for m, v in fits.items() if m != motion) < 0.35, fits
    assert seen == [motion] * 4


def test_each_criterion_reacts_to_its_own_defect():
    p = "a red circle moves right and a yellow square stays still"
    f = render(p, 64, 64, 17, seed=0)
    base = score(f, p)
    assert base.adherence == pytest.approx(1.0) and base.criteria == {
        "presence": 1.0, "shape": 1.0, "motion": 1.0, "background": 1.0, "temporal": 1.0, "clean": 1.0}
    # an object the prompt did not ask for: clean drops to about a half, the asked objects still score 1
    extra = score(render(p + " and a blue triangle bounces", 64, 64, 17, seed=0), p)
    assert 0.3 < extra.clean < 0.6 and extra.presence == 1.0 and extra.motion == 1.0
    # blobs of every colour splattered over the frame (what an undertrained model draws): the asked objects
    # are still found, but clean is 0 and adherence falls
    splat, rng = f.copy(), np.random.default_rng(0)
    palette = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 0), (255, 128, 0), (160, 0, 200), (0, 220, 220)]
    for k in range(14):
        y, x = rng.integers(0, 58, 2)
        splat[:, y:y + 5, x:x + 5] = palette[k % len(palette)]
    splatted = score(splat, p)
    assert splatted.clean == 0.0 and splatted.presence == 1.0 and splatted.adherence < 0.6
    wrong_motion = score(f, "a red circle moves left and a yellow square stays still")
    assert wrong_motion.motion == pytest.approx(0.5) and wrong_motion.presence == 1.0
    wrong_shape = score(f, "a red triangle moves right and a yellow square stays still")
    assert wrong_shape.shape == pytest.approx(0.5) and wrong_shape.motion == 1.0
    wrong_color = score(f, "a blue circle moves right and a yellow square stays still")
    assert wrong_color.presence == pytest.approx(0.5)
    wrong_bg = score(f, p + " on a white background")
    assert wrong_bg.background == 0.0 and wrong_bg.presence == 1.0
    # the circle vanishes in 4 scattered frames: presence and temporal both drop
    g = f.copy()
    g[[3, 7, 11, 14]] = render("a yellow square stays still", 64, 64, 17, seed=0)[[3, 7, 11, 14]]
    gap = score(g, p)
    assert gap.presence < 0.9 and gap.temporal < 0.5 and gap.adherence < 0.8
    # background flickers to gray every other frame
    h = f.copy()
    h[::2][(h[::2] == 0).all(-1)] = 128
    assert score(h, p).temporal == 0.0
    for s in (wrong_motion, wrong_shape, wrong_color, wrong_bg, gap):
        assert s.adherence < 0.9    # one of two objects wrong in one criterion: 0.5 ** (1/6) = 0.89


def test_identity_across_shots_is_colour_shape_and_size_not_position():
    """identity: a referenced object keeps colour, shape and size in its later shot; where it starts is
    continuity's business, so a moved object keeps its identity and a forgotten / redrawn one loses it."""
    shots = ["a red circle moves right on a gray background", "the red circle bounces"]
    f = render_shots(shots, 64, 64, frames_per_shot=17, seed=2)
    truth = score(f, shots)
    assert truth.identity == 1.0 and truth.continuity == 1.0
    moved = f.copy()
    moved[17:] = np.roll(f[17:], (20, -24), axis=(1, 2))      # a hard cut that moves the circle
    m = score(moved, shots)
    assert m.identity == 1.0 and m.continuity < 0.2
    gone = f.copy()
    gone[17:] = f[17:, :1, :1]                                 # shot 2 forgot the circle: gray frames
    assert score(gone, shots).identity == 0.0
    as_square = np.concatenate([f[:17], render("a red square bounces on a gray background", 64, 64, 17, seed=2)])
    sq = score(as_square, shots)
    recolour = np.concatenate([f[:17], render("a blue circle bounces on a gray background", 64, 64, 17, seed=2)])
    rc = score(recolour, shots)
    # shot 2 zoomed 1.6x (nearest) about where the circle starts it: the same circle, 2.6x the area
    ys, xs = np.nonzero((f[17].astype(int) - f[17, 0, 0].astype(int)).any(-1))
    yy, xx = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    sy = np.clip(np.round(ys.mean() + (yy - ys.mean()) / 1.6).astype(int), 0, 63)
    sx = np.clip(np.round(xs.mean() + (xx - xs.mean()) / 1.6).astype(int), 0, 63)
    bg = score(np.concatenate([f[:17], f[17:][:, sy, sx]]), shots)
    print(f"\nidentity: truth {truth.identity:.2f}, moved {m.identity:.2f} (continuity {m.continuity:.2f}), "
          f"forgotten 0, redrawn as a square {sq.identity:.2f}, recoloured {rc.identity:.2f}, larger {bg.identity:.2f}")
    assert sq.identity < 0.2 and rc.identity == 0.0 and bg.identity < 0.5


def test_shot_lists_score_continuity():
    shots = ["a red circle moves right and a green triangle bounces",
             "the red circle moves up and a blue square stays still",
             "the red circle grows on a gray background",
             "the green triangle moves left and the red circle moves down"]
    f = render_shots(shots, 64, 96, frames_per_shot=17, seed=3)
    s = score(f, shots)
    assert s.adherence >= 0.95 and s.continuity == 1.0 and len(s.shots) == 4
    # each shot rendered on its own: the referenced objects jump at the cuts
    independent = np.concatenate([render(p.replace("the ", "a "), 64, 96, 17, seed=10 + i)
                                  for i, p in enumerate(shots)])
    t = score(independent, shots)
    print(f"\nshots: ground truth {s.adherence:.3f} (continuity {s.continuity:.3f}); independent shots "
          f"{t.adherence:.3f} (continuity {t.continuity:.3f}, identity {t.identity:.3f})")
    assert t.continuity < 0.3 and t.adherence < 0.7
    assert s.identity == 1.0
    lengths = [9, 17, 17, 20]
    g = render_shots(shots, 64, 64, frames_per_shot=lengths, seed=1)
    assert score(g, shots, shot_frames=lengths).adherence >= 0.95
    with pytest.raises(ShapeError):
        score(g, shots)                        # 63 frames do not split into 4 equal shots
    with pytest.raises(ShapeError):
        score(g, shots, shot_frames=[9, 17, 17, 21])


def test_inputs_and_speed():
    p = "a cyan square moves down and an orange triangle grows and a purple circle bounces"
    f = render(p, 64, 64, 33, seed=4)
    s = score(f, p)   # its speed: benchmarks/bench_world.py
    assert score(f.astype(np.float32) / 255, p).adherence == pytest.approx(s.adherence)
    img = render("a cyan square", 96, 64, 1, seed=0)
    assert score(img[0], "a cyan square").adherence == pytest.approx(1.0)
    with pytest.raises(ShapeError):
        score(np.zeros((4, 64, 64)), p)


def test_mean_scores_averages_each_criterion_over_clips_that_have_it():
    from vidrt.world import Score, mean_scores

    a = Score(0.5, presence=1.0, shape=0.5, background=1.0, motion=0.2, temporal=0.8, clean=1.0)
    b = Score(0.3, presence=0.0, shape=1.0, background=1.0, clean=0.5)        # an image: no motion / temporal
    m = mean_scores([a, b])
    assert m["adherence"] == pytest.approx(0.4) and m["presence"] == pytest.approx(0.5)
    assert m["shape"] == pytest.approx(0.75) and m["clean"] == pytest.approx(0.75)
    assert m["motion"] == pytest.approx(0.2) and m["temporal"] == pytest.approx(0.8)   # b has none: not a zero
    assert m["continuity"] is None


def test_transition_faults_name_what_temporal_counts():
    """transition_faults gives the per-transition events behind the temporal criterion: none on a render, a vanished
    object's two toggles, a teleport's position jumps, a shrunken frame's size jumps."""
    from vidrt.world.score import transition_faults

    prompt = "a red circle moves right and a blue square stays still on a gray background"
    clip = render(prompt, 64, 64, 17, 16, seed=0)
    clean = transition_faults(clip, prompt)
    assert len(clean) == 2 and all(f["toggle"].shape == (16,) for f in clean)
    assert not any(f[k].any() for f in clean for k in f)
    bg = clip[0, 0, 0].copy()
    hole = clip.copy()
    red = (np.abs(hole[8].astype(int) - [230, 40, 40]).max(-1) < 90)
    hole[8][red] = bg                                      # the red circle vanishes in frame 8
    f = transition_faults(hole, prompt)
    assert np.flatnonzero(f[0]["toggle"]).tolist() == [7, 8] and not f[1]["toggle"].any()
    jump = clip.copy()
    jump[8] = clip[16]                                     # frame 8 shows the end of the motion
    f = transition_faults(jump, prompt)
    assert np.flatnonzero(f[0]["position_jump"]).tolist() == [7, 8] and not f[1]["position_jump"].any()
    sc = score(hole, prompt)
    assert sc.temporal < score(clip, prompt).temporal
    from vidrt.errors import PromptError
    with pytest.raises(PromptError, match="takes one shot's prompt"):
        transition_faults(clip, [prompt, "the red circle moves left"])
