"""vidrt.world.verifier: patch labels from renders, the prompt likelihood, save / load, and the shipped verifier's
judgement of held-out renders against renders of altered prompts (it never saw a held-out prompt)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidrt.errors import CheckpointError, PromptError, ShapeError
from vidrt.pipeline import embedded_model_path
from vidrt.world import COLORS, MOTIONS, SHAPES, ObjectSpec, Scene, held_out_prompts, parse, render
from vidrt.world.verifier import (HEAD_SIZES, NONE_COLOR, NONE_MOTION, NONE_SHAPE, VerifierConfig, WorldVerifier,
                                  cell_labels, load_verifier, pick_frames, prompt_log_likelihood, save_verifier)

SHIPPED = embedded_model_path() / "verifier"


def _logits_from_labels(labels: torch.Tensor, sharp: float = 8.0) -> torch.Tensor:
    """Per-patch logits that say exactly what ``labels`` (T, h, w, 3) say."""
    heads = []
    for k, n in enumerate(HEAD_SIZES):
        heads.append(torch.nn.functional.one_hot(labels[..., k], n).float() * sharp)
    return torch.cat(heads, -1)


def test_pick_frames_spans_the_clip():
    assert pick_frames(33, 5).tolist() == [0, 8, 16, 24, 32]
    assert pick_frames(17, 5).tolist() == [0, 4, 8, 12, 16]
    assert pick_frames(3, 5).tolist() == [0, 1, 2]
    assert pick_frames(1, 5).tolist() == [0]


def test_cell_labels_name_the_object_under_each_patch():
    scene = parse("a red square moves right and a blue circle grows on a gray background")
    frames = render(scene, 64, 96, 17, seed=3)
    labels = cell_labels(frames, scene)
    assert labels.shape == (17, 8, 12, 3)
    red = (labels[..., 0] == list(COLORS).index("red"))
    blue = (labels[..., 0] == list(COLORS).index("blue"))
    assert red.any(1).any(1).all() and blue.any(1).any(1).all()   # both in every frame
    assert (labels[red][:, 1] == SHAPES.index("square")).all()
    assert (labels[red][:, 2] == MOTIONS.index("moves right")).all()
    assert (labels[blue][:, 1] == SHAPES.index("circle")).all()
    none = labels[..., 0] == NONE_COLOR
    assert (labels[none][:, 1] == NONE_SHAPE).all() and (labels[none][:, 2] == NONE_MOTION).all()
    assert none.float().mean() > 0.7   # objects cover a small part of the frame
    # the red square moves right: its patches' mean column grows from the first to the last frame
    cols = torch.arange(12).float()
    first = (red[0].float() * cols).sum() / red[0].sum()
    last = (red[-1].float() * cols).sum() / red[-1].sum()
    assert last - first > 3


@pytest.mark.parametrize("frames,h,w", [(1, 64, 64), (33, 64, 64), (3, 24, 40)])
def test_forward_shapes_odd_sizes(frames, h, w):
    model = WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2)).eval()
    video = torch.rand(2, 3, frames, h, w) * 2 - 1
    x = model.prepare(video)
    assert x.shape == (2, min(frames, 5), 3, h, w)
    assert torch.all(((x + 1) * 127.5 - ((x + 1) * 127.5).round()).abs() < 1e-4)   # 8-bit levels
    assert model(x).shape == (2, min(frames, 5), h // 8, w // 8, 9 + 4 + 9)
    scores = model.score(video, ["a red circle", "a blue square moves up and a green triangle bounces"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_bad_inputs_are_named():
    model = WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2)).eval()
    with pytest.raises(ShapeError, match="multiples of 8"):
        model.score(torch.zeros(1, 3, 1, 60, 64), ["a red circle"])
    with pytest.raises(ShapeError, match=r"\(B, 3, T, H, W\)"):
        model.score(torch.zeros(3, 1, 64, 64), ["a red circle"])
    with pytest.raises(ShapeError, match="2 clips for 1 prompts"):
        model.score(torch.zeros(2, 3, 1, 64, 64), ["a red circle"])
    with pytest.raises(PromptError, match="candidates=1"):
        model.check_prompts(["a red circle", "a photo of a cat"])


def test_likelihood_prefers_the_prompt_the_patches_show():
    """Perfect patch predictions of a render: its own scene scores highest; a scene with the shapes (binding) or
    motions swapped, an object left out, an extra object or another colour scores lower."""
    scene = parse("a red square moves right and a blue circle moves up and a yellow triangle stays still")
    frames = render(scene, 64, 64, 33, seed=1)
    logits = _logits_from_labels(cell_labels(frames[pick_frames(33, 5)], scene))
    red, blue, yellow = scene.objects
    variants = {
        "shapes swapped": Scene((ObjectSpec("red", "circle", red.motion), ObjectSpec("blue", "square", blue.motion),
                                 yellow)),
        "motions swapped": Scene((ObjectSpec("red", "square", "moves up"),
                                  ObjectSpec("blue", "circle", "moves right"), yellow)),
        "object left out": Scene((red, blue)),
        "object added": Scene((red, blue, ObjectSpec("green", "circle"))),
        "colour changed": Scene((red, ObjectSpec("purple", "circle", blue.motion), yellow)),
    }
    truth = prompt_log_likelihood(logits, scene).item()
    # a left-out object only leaves its patches unexplained (~3 % of them); the others miss a whole object
    margin = {"shapes swapped": 3.0, "motions swapped": 3.0, "object left out": 0.2, "object added": 2.0,
              "colour changed": 2.0}
    for name, other in variants.items():
        assert truth - prompt_log_likelihood(logits, other).item() > margin[name], name
    # an image has no motion: a motion swap does not change its score
    still = _logits_from_labels(cell_labels(frames[:1], scene))
    swapped = variants["motions swapped"]
    assert prompt_log_likelihood(still, swapped).item() == pytest.approx(prompt_log_likelihood(still, scene).item())


def test_likelihood_penalises_an_object_that_vanishes():
    scene = parse("a red square moves right and a blue circle stays still")
    frames = render(scene, 64, 64, 33, seed=2)[pick_frames(33, 5)]
    labels = cell_labels(frames, scene)
    gone = labels.clone()
    blue = gone[..., 0] == list(COLORS).index("blue")
    gone[2:][blue[2:]] = torch.tensor([NONE_COLOR, NONE_SHAPE, NONE_MOTION])   # the circle gone after frame 1
    full = prompt_log_likelihood(_logits_from_labels(labels), scene).item()
    assert full - prompt_log_likelihood(_logits_from_labels(gone), scene).item() > 1.0


def test_save_load_roundtrip_and_corrupt_files(tmp_path):
    model = WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2)).eval()
    folder = save_verifier(model, tmp_path / "verifier")
    loaded = load_verifier(folder)
    assert loaded.config == model.config
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(loaded.prepare(x)), model(model.prepare(x)), atol=2e-2, rtol=0)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot load the verifier.*train_verifier"):
        load_verifier(folder)
    with pytest.raises(CheckpointError, match="cannot load the verifier"):
        load_verifier(tmp_path / "missing")


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="this build has no embedded verifier")
@pytest.mark.parametrize("frames", [1, 33])
def test_shipped_verifier_ranks_held_out_truth_over_altered_prompts(frames):
    """Held-out prompts (object combinations the verifier never saw), rendered and degraded like generated clips
    (blur): under the true prompt, as best-of-N compares clips, the truth beats a render of the prompt with the held-out
    object's shape changed and one with two objects' shapes swapped (binding) nearly always; a render with the
    held-out object's motion changed less often (session 28: 22 of 32 -- its motion was never seen with its colour
    and shape, and the verifier's patch features mix the three), still well above chance (16). Session 29's
    structure stream won 32 of 32 here but picked worse among generated held-out clips (best_of_n.md): not shipped."""
    verifier = load_verifier(SHIPPED)
    blur = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (blur[:, None] * blur[None, :]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)

    def clip(scene, seed):
        x = torch.from_numpy(render(scene, 64, 64, frames, seed=seed)).float().div(127.5).sub(1)
        x = x.permute(0, 3, 1, 2)
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        return x.permute(1, 0, 2, 3)[None]

    wins: dict[str, list[bool]] = {"shape": [], "swap": [], "motion": []}
    for i, prompt in enumerate(held_out_prompts()[::3][:16] + held_out_prompts()[2::3][:16]):
        scene = parse(prompt)
        objs = list(scene.objects)   # objs[0] is the held-out object for 1-object prompts, one of three otherwise

        def variant(*changed):
            return Scene(tuple(changed) + tuple(objs[len(changed):]), scene.background, scene.background_given)

        first = objs[0]
        alts = {"shape": variant(ObjectSpec(first.color, SHAPES[(SHAPES.index(first.shape) + 1) % 3], first.motion))}
        if frames > 1:
            alts["motion"] = variant(ObjectSpec(first.color, first.shape,
                                                MOTIONS[(MOTIONS.index(first.motion) + 4) % len(MOTIONS)]))
        if len(objs) >= 2 and objs[0].shape != objs[1].shape:
            a, b = objs[0], objs[1]
            alts["swap"] = variant(ObjectSpec(a.color, b.shape, a.motion), ObjectSpec(b.color, a.shape, b.motion))
        videos = torch.cat([clip(scene, i)] + [clip(alt, i) for alt in alts.values()])
        s = verifier.score(videos, [scene] * len(videos))
        for name, other in zip(alts, s[1:]):
            wins[name].append(bool(s[0] > other))
    assert len(wins["shape"]) == 32 and len(wins["swap"]) >= 8
    assert sum(wins["shape"]) >= 30, wins["shape"]
    assert sum(wins["swap"]) >= len(wins["swap"]) - 1, wins["swap"]
    if frames > 1:
        assert sum(wins["motion"]) >= 20, f"the truth beat a changed motion {sum(wins['motion'])} of 32 times"


def test_structure_maps_do_not_see_colour():
    """The structure stream's input is the same for a scene and the same scene in other colours (and another
    background): where objects and edges are, not what colour they have."""
    from vidrt.world.verifier import structure_maps

    def maps(prompt):
        x = torch.from_numpy(render(parse(prompt), 64, 96, 17, seed=5)).float().div(127.5).sub(1)
        return structure_maps(x.permute(0, 3, 1, 2))

    a = maps("a red circle moves right and a blue square bounces")
    b = maps("a yellow circle moves right and a purple square bounces on a gray background")
    assert a.shape == (17, 2, 64, 96) and a.min() >= -1 and a.max() <= 1
    fg_a, fg_b = a[:, 0] > 0, b[:, 0] > 0
    assert 0.02 < fg_a.float().mean() < 0.3   # objects: a small part of the frame
    assert (fg_a != fg_b).float().mean() < 0.002   # the same pixels are objects (anti-aliased rims may differ)
    assert (a - b).abs().mean() < 0.02
    other = maps("a red square moves left and a blue circle bounces")
    assert (a - other).abs().mean() > 5 * (a - b).abs().mean()


def test_structure_stream_replaces_shape_and_motion_heads(tmp_path):
    torch.manual_seed(0)
    model = WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2, shape_motion_from="structure")).eval()
    x = torch.rand(2, 5, 3, 32, 48) * 2 - 1
    out = model(x)
    assert out.shape == (2, 5, 4, 6, sum(HEAD_SIZES))
    torch.testing.assert_close(out[..., :HEAD_SIZES[0]], model.rgb(x)[..., :HEAD_SIZES[0]])
    torch.testing.assert_close(out[..., HEAD_SIZES[0]:], model.structure_logits(x))
    # a colour change the structure maps cannot see leaves shape and motion logits as they were
    frames = torch.from_numpy(render(parse("a red circle moves right"), 32, 48, 5, seed=1)).float().div(127.5).sub(1)
    recoloured = torch.from_numpy(render(parse("a green circle moves right"), 32, 48, 5, seed=1)).float()
    pair = torch.stack([frames, recoloured.div(127.5).sub(1)]).permute(0, 1, 4, 2, 3)
    sm = model.structure_logits(pair)
    assert (sm[0] - sm[1]).abs().max() < 0.05 * sm.abs().max()
    # frames stacked as channels: a clip of fewer frames than max_frames repeats them; each frame gets its own
    # slot's logits (the first slot that holds it), so a repeated frame's logits are its first copy's
    for t in (1, 3, 5):
        y = x[:, :t]
        assert model(y).shape == (2, t, 4, 6, sum(HEAD_SIZES))
    three = model.structure_logits(x[:, [0, 2, 4]])
    assert not torch.allclose(three[:, 0], three[:, 1])
    with pytest.raises(ValueError, match="shape_motion_from"):
        WorldVerifier(VerifierConfig(shape_motion_from="grey"))
    with pytest.raises(ValueError, match="no structure stream"):
        WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2)).structure_logits(x)


def test_int8_storage_halves_the_file_and_keeps_the_scores(tmp_path):
    """Conv and linear weights stored int8 (one scale per output channel) take about half of fp16's bytes and
    load back within int8 rounding; a single-stream folder from before the streams were named still loads."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = WorldVerifier(VerifierConfig(dim=32, layers=2, heads=2, shape_motion_from="structure")).eval()
    small = save_verifier(model, tmp_path / "int8", storage="int8") / "model.safetensors"
    big = save_verifier(model, tmp_path / "fp16", storage="fp16") / "model.safetensors"
    assert small.stat().st_size < 0.6 * big.stat().st_size
    stored = load_file(str(small))
    assert stored["rgb.stem.0.weight"].dtype == torch.int8 and stored["rgb.stem.0.weight_scale"].shape == (32, 1, 1, 1)
    assert stored["rgb.norm.bias"].dtype == torch.float16
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    scenes = ["a red circle moves right", "a blue square bounces"]
    videos = x.repeat(2, 1, 1, 1, 1)
    ref = model.score(videos, scenes)
    for folder in (tmp_path / "int8", tmp_path / "fp16"):
        torch.testing.assert_close(load_verifier(folder).score(videos, scenes), ref, atol=0.05, rtol=0)
    legacy = WorldVerifier(VerifierConfig(dim=16, layers=1, heads=2)).eval()
    folder = save_verifier(legacy, tmp_path / "legacy", storage="fp16")
    state = load_file(str(folder / "model.safetensors"))
    save_file({k[len("rgb."):]: v for k, v in state.items()}, str(folder / "model.safetensors"))
    torch.testing.assert_close(load_verifier(folder)(legacy.prepare(x)), legacy(legacy.prepare(x)), atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="int8' or 'fp16"):
        save_verifier(legacy, tmp_path / "x", storage="fp8")


def test_train_structure_stream_beside_a_frozen_colour_stream(tmp_path):
    """tools/train_verifier.py --structure --rgb-from: the colour stream is the given verifier's, untouched by
    training; the structure stream learns (its loss falls on a fixed batch); a rerun resumes to the same weights."""
    from vidrt.testing import load_script

    tv = load_script(Path(__file__).resolve().parents[2] / "tools/train_verifier.py")
    small = dict(dim=16, layers=1, heads=2)
    rgb = save_verifier(WorldVerifier(VerifierConfig(**small)).eval(), tmp_path / "rgb", storage="fp16")
    config = VerifierConfig(**small, shape_motion_from="structure")
    model = tv.train(tmp_path / "run", 12, batch_size=2, lr=1e-2, config=config, rgb_from=rgb)
    reference = load_verifier(rgb)
    for (k, v), w in zip(model.rgb.state_dict().items(), reference.rgb.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)
    assert model.structure is not None
    again = tv.train(tmp_path / "run", 12, batch_size=2, lr=1e-2, config=config, rgb_from=rgb)   # resumed: done
    for v, w in zip(model.structure.state_dict().values(), again.structure.state_dict().values()):
        torch.testing.assert_close(v, w)
    x, y = tv.batch(np.random.default_rng(0), 4, 5)
    torch.manual_seed(0)
    fresh = WorldVerifier(config)   # the structure stream as training started
    assert tv.patch_loss(model.structure_logits(x), y, (1, 2)) < tv.patch_loss(fresh.structure_logits(x), y, (1, 2))
    with pytest.raises(SystemExit, match="--structure"):
        tv.train(tmp_path / "bad", 1, batch_size=2, config=VerifierConfig(**small), rgb_from=rgb)


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="this build has no embedded verifier")
def test_shipped_verifier_names_held_out_objects_patch_by_patch():
    """On clean renders of held-out prompts the shipped verifier names the colour and shape of the object under
    each object patch (0.986 / 0.978 on 60 prompts). Its motion head does not (0.11, below the 1/8 of chance: it tied
    motion to the colour-shape pairs it had seen); session 29's structure stream reached 0.996 there, yet picked
    worse among generated held-out clips, so the shipped verifier is still session 28's (best_of_n.md)."""
    verifier = load_verifier(SHIPPED)
    hit, n = torch.zeros(3), 0
    for i, prompt in enumerate(held_out_prompts()[:60:5]):
        scene = parse(prompt)
        frames = render(scene, 64, 64, 33, seed=i)[pick_frames(33, 5)]
        labels = cell_labels(frames, scene)
        x = torch.from_numpy(frames).float().div(127.5).sub(1).permute(0, 3, 1, 2)[None]
        with torch.no_grad():
            preds = [h.argmax(-1) for h in verifier(x)[0].split(HEAD_SIZES, -1)]
        obj = labels[..., 0] != NONE_COLOR
        hit += torch.stack([(p[obj] == labels[..., k][obj]).float().sum() for k, p in enumerate(preds)])
        n += int(obj.sum())
    accuracy = (hit / n).tolist()
    assert min(accuracy[:2]) > 0.95, accuracy
