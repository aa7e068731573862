"""Regional prompting from the sample's own layout (`vidrt.regions`, `vidrt.world.layout`)."""
import numpy as np
import pytest
import torch

import vidrt
from vidrt.errors import ConfigError
from vidrt.pipeline import Pipeline
from vidrt.regions import RegionRun, Regions, latent_masks
from vidrt.world.grammar import COLORS
from vidrt.world.layout import WorldLayout, components
from vidrt.world.render import render

KW = dict(height=32, width=32, num_frames=5, steps=6, progress=False, max_sequence_length=16)
TWO = "a red circle moves right and a blue square stays still on a gray background"


@pytest.fixture(scope="module")
def pipe(tiny_wan):
    return Pipeline.from_pretrained(tiny_wan)


class FixedLayout:
    """Every prompt splits into ``subs``; every region is ``fill`` everywhere."""

    def __init__(self, subs, fill: bool):
        self.subs, self.fill, self.reads = subs, fill, 0

    def split(self, prompt):
        return list(self.subs)

    def backdrop(self, prompt):
        return (0, 0, 0)

    def masks(self, frames, prompt):
        self.reads += 1
        return torch.full((len(self.subs),) + tuple(frames.shape[:3]), self.fill, dtype=torch.bool)


def test_latent_masks_follow_the_vae_grouping_and_grid():
    m = torch.zeros(1, 9, 64, 64, dtype=torch.bool)
    m[0, 5, 10, 20] = True                     # frame 5 -> latent frame 2 (frames 5..8); pixel -> cell (1, 2)
    z = latent_masks(m, (3, 8, 8), dilate=0)
    assert z.shape == (1, 1, 3, 8, 8) and z.sum() == 1 and z[0, 0, 2, 1, 2] == 1
    z = latent_masks(m, (3, 8, 8), dilate=1)
    assert z.sum() == 9 and z[0, 0, 2, :3, 1:4].sum() == 9
    m[0, 0, 63, 63] = True                     # frame 0 alone is latent frame 0
    assert latent_masks(m, (3, 8, 8), dilate=0)[0, 0, 0, 7, 7] == 1
    with pytest.raises(ConfigError, match="do not make 4 latent frames"):
        latent_masks(m, (4, 8, 8))


def test_mix_replaces_each_region_and_averages_overlaps():
    run = RegionRun(Regions(FixedLayout(["x", "y"], True), clear=False), ["p", "q"], steps=10)
    assert run.owner.tolist() == [0, 0, 1, 1] and run.start == 4
    cond = torch.zeros(2, 1, 1, 1, 3)
    sub = torch.tensor([1.0, 2.0, 5.0, 7.0]).view(4, 1, 1, 1, 1).expand(4, 1, 1, 1, 3)
    run.masks = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float32).view(4, 1, 1, 1, 3)
    out = run.mix(cond + 9, sub)
    # row 0: cell 0 region x alone, cell 1 x and y overlap (mean), cell 2 outside (the full prompt's); row 1: none
    assert out[0].flatten().tolist() == [1.0, 1.5, 9.0] and out[1].flatten().tolist() == [9.0, 9.0, 9.0]
    assert [run.reads_after(i) for i in range(10)] == [False] * 3 + [True] * 6 + [False]
    once = RegionRun(Regions(FixedLayout(["x"], True), start=2, refresh=False), ["p"], steps=10)
    assert [i for i in range(10) if once.reads_after(i)] == [1]
    # clear: outside the regions of a row whose every object was found, the mean of its objects' velocities
    run.clear = True
    run.masks[2, 0, 0, 0, 2] = 1     # row 1: x found, y not -> the full prompt outside
    out = run.mix(cond + 9, sub)
    assert out[0].flatten().tolist() == [1.0, 1.5, 1.5] and out[1].flatten().tolist() == [9.0, 9.0, 5.0]
    run.masks[3, 0, 0, 0, 0] = 1     # now both found: outside is (5 + 7) / 2
    assert run.mix(cond + 9, sub)[1].flatten().tolist() == [7.0, 6.0, 5.0]


def test_clear_is_per_latent_frame():
    run = RegionRun(Regions(FixedLayout(["x", "y"], True), clear=True), ["p"], steps=10)
    m = torch.zeros(2, 1, 2, 1, 3)
    m[0, 0, :, 0, 0] = 1            # x found in both latent frames
    m[1, 0, 0, 0, 1] = 1            # y only in frame 0
    run.masks = m
    sub = torch.tensor([2.0, 4.0]).view(2, 1, 1, 1, 1).expand(2, 1, 2, 1, 3)
    out = run.mix(torch.full((1, 1, 2, 1, 3), 9.0), sub)
    assert out[0, 0, 0, 0].tolist() == [2.0, 4.0, 3.0]     # frame 0: all found, the rest is the mean
    assert out[0, 0, 1, 0].tolist() == [2.0, 9.0, 9.0]     # frame 1: y missing, the rest is the full prompt's


def test_isolate_and_clear_default_to_whether_the_layout_has_a_backdrop():
    run = RegionRun(Regions(FixedLayout(["x"], True)), ["p"], 10)
    assert (run.isolate, run.clear) == (True, True)
    forced = RegionRun(Regions(FixedLayout(["x"], True), isolate=True, clear=False), ["p"], 10)
    assert (forced.isolate, forced.clear) == (True, False)


def test_isolated_inputs_keep_the_region_and_empty_the_rest():
    run = RegionRun(Regions(FixedLayout(["x", "y"], True)), ["p"], steps=10)
    run.masks = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(2, 1, 1, 1, 2)
    x, cond, bg = torch.full((1, 1, 1, 1, 2), 2.0), torch.full((1, 1, 1, 1, 2), 4.0), torch.full((1, 1, 1, 1, 2), -1.0)
    out = run.isolated(x, cond, 0.25, bg)
    noise = 2.0 + 0.75 * 4.0                       # x + (1 - sigma) v
    empty = 0.75 * -1.0 + 0.25 * noise
    assert out.flatten().tolist() == [2.0, empty, empty, empty]


def test_world_layout_splits_prompts_into_objects():
    lay = WorldLayout()
    assert lay.split(TWO) == ["a red circle moves right on a gray background",
                              "a blue square stays still on a gray background"]
    assert lay.split("a red circle moves right") == []      # one object: nothing to bind
    assert lay.masks(torch.zeros(1, 8, 8, 3), "a red circle").shape == (0, 1, 8, 8)


def test_world_layout_finds_the_objects_of_a_render():
    frames = torch.from_numpy(render(TWO, 64, 64, 9, 16, seed=1)).float()
    m = WorldLayout().masks(frames, TWO)
    assert m.shape == (2, 9, 64, 64)
    for k, color in enumerate(("red", "blue")):
        truth = (frames - torch.tensor(COLORS[color], dtype=torch.float32)).norm(dim=-1) < 60
        inter, union = (m[k] & truth).sum().item(), (m[k] | truth).sum().item()
        assert union > 9 * 20 and inter / union > 0.8, (color, inter, union)
    # the order follows the prompt, not the frame
    swapped = "a blue square stays still and a red circle moves right on a gray background"
    assert torch.equal(WorldLayout().masks(frames, swapped), m.flip(0))
    # a blob of a colour far from every asked object's is nobody's; a frame-filling wash is no blob
    assert not WorldLayout(max_distance=10).masks(frames + 40, TWO).any()
    wash = torch.full((1, 64, 64, 3), 200.0)
    assert not WorldLayout().masks(wash, TWO).any()


def test_world_layout_tracks_objects_through_colour_changes():
    prompt = "a red square moves right and a blue circle moves down on a black background"
    frames = torch.from_numpy(render(prompt, 64, 64, 33, 16, seed=3)).float()
    per_frame, tracked = WorldLayout(track=False).masks(frames, prompt), WorldLayout(track=True).masks(frames, prompt)
    assert torch.equal(per_frame, tracked)                 # a clean render: the same regions either way
    assert per_frame.flatten(2).any(2).all()               # both objects in all 33 frames
    # the DiT's colour flicker: the red square drawn blue in frames 10-19
    flicker = frames.clone()
    flicker[10:20][per_frame[0, 10:20]] = torch.tensor([0.0, 0.0, 255.0])
    lost = WorldLayout(track=False).masks(flicker, prompt)
    assert lost[0].flatten(1).any(1).sum() == 23            # per frame, the square is nobody's while blue
    kept = WorldLayout(track=True).masks(flicker, prompt)
    assert torch.equal(kept, per_frame)                    # its track keeps it the red square's
    # images: one frame, tracks are the per-frame matching
    image = frames[:1]
    assert torch.equal(WorldLayout(track=True).masks(image, prompt), WorldLayout(track=False).masks(image, prompt))


def test_components_are_eight_connected():
    fg = torch.zeros(1, 8, 8, dtype=torch.bool)
    fg[0, 1:3, 1:3] = True
    fg[0, 3, 3] = True                          # touches the first square diagonally
    fg[0, 6:8, 6:8] = True
    lab = components(fg)
    assert len(lab.unique()) == 3 and lab[0, 1, 1] == lab[0, 3, 3] != lab[0, 6, 6]
    assert (lab[~fg] == 0).all()


def test_empty_regions_leave_the_exact_path_unchanged(pipe):
    plain = pipe("a red circle", seed=3, output="latent", **KW)
    lay = FixedLayout(["a blue square"], False)
    v = pipe("a red circle", seed=3, regions=Regions(lay, start=2), **KW)
    assert torch.equal(v.latents, plain.cpu()) and lay.reads == 4       # reads after steps 2..5 of 6
    assert v.stats["regions"] == {"start": 2, "refresh": True, "isolate": True, "clear": True, "reads": 4,
                                  "regions": 1, "found_last": 0}


def test_a_region_covering_everything_under_the_same_prompt_is_the_plain_run(pipe):
    plain = pipe(["a red circle", "a blue square"], seed=3, output="latent", **KW)
    same = pipe(["a red circle", "a blue square"], seed=3, output="latent",
                regions=Regions(_SameLayout(), start=1), **KW)
    torch.testing.assert_close(same, plain, rtol=1e-4, atol=1e-5)
    other = pipe(["a red circle", "a blue square"], seed=3, output="latent",
                 regions=Regions(FixedLayout(["a green triangle"], True), start=1), **KW)
    assert (other - plain).abs().max() > 1e-3                     # the region's prompt is what it follows
    # a region covering everything is the sub-prompt from the first read on, whatever isolate / clear say
    for iso, clear in ((False, False), (True, True)):
        z = pipe(["a red circle", "a blue square"], seed=3, output="latent",
                 regions=Regions(FixedLayout(["a green triangle"], True), start=1, isolate=iso, clear=clear), **KW)
        torch.testing.assert_close(z, other, rtol=1e-4, atol=1e-5)


class _SameLayout(FixedLayout):
    def __init__(self):
        super().__init__([], True)

    def split(self, prompt):
        return [prompt]

    def masks(self, frames, prompt):
        return torch.ones((1,) + tuple(frames.shape[:3]), dtype=torch.bool)


def test_regions_bad_input(pipe):
    with pytest.raises(ConfigError, match="names none"):
        pipe("a red circle", regions=True, **KW)
    with pytest.raises(ConfigError, match="regions=.*use True"):
        pipe("a red circle", regions="yes", **KW)
    with pytest.raises(ConfigError, match="step cache or a latency_target"):
        pipe("a red circle", regions=Regions(WorldLayout()), cache="teacache", **KW)
    with pytest.raises(ConfigError, match="start=0"):
        Regions(WorldLayout(), start=0)
    with pytest.raises(ConfigError, match="split"):
        Regions(object())

    class NoBackdrop:
        def split(self, prompt):
            return []

        def masks(self, frames, prompt):
            return torch.zeros(0)

    with pytest.raises(ConfigError, match="backdrop.*isolate=False"):
        Regions(NoBackdrop(), isolate=True)
    auto = RegionRun(Regions(NoBackdrop()), ["p"], 10)
    assert not auto.isolate and not auto.clear                                # auto: only with a backdrop
    with pytest.raises(ConfigError, match="clear='yes'"):
        Regions(WorldLayout(), clear="yes")

    class Bad(FixedLayout):
        def masks(self, frames, prompt):
            return torch.ones(3, 1, 2, 2, dtype=torch.bool)

    with pytest.raises(ConfigError, match="must give \\(regions, T, H, W\\)"):
        pipe("a red circle", regions=Regions(Bad(["x"], True), start=1), **KW)


def test_embedded_model_regions_read_its_layout():
    pipe = vidrt.Pipeline.from_pretrained()
    assert pipe.defaults.region_layout == "world"
    v = pipe(TWO, num_frames=1, seed=0, regions=True, progress=False)
    r = v.stats["regions"]
    assert r["start"] == 8 and r["reads"] == 12 and r["regions"] == 2 and r["found_last"] >= 1
    assert r["isolate"] and r["clear"]                                       # an image: both on
    clip = pipe(TWO, num_frames=9, seed=0, steps=10, regions=True, progress=False)
    r = clip.stats["regions"]                                                # a clip too (tracked objects)
    assert r["isolate"] and r["clear"] and r["reads"] == 6 and r["found_last"] == 2 and clip.frames.shape[0] == 9
    one = pipe("a red circle moves right", num_frames=1, seed=0, progress=False)
    assert np.array_equal(pipe("a red circle moves right", num_frames=1, seed=0, regions=True,
                               progress=False).frames, one.frames)          # one object: the exact path


def test_cli_generate_with_regions(tmp_path, capsys, tiny_wan):
    from vidrt.cli import main

    out = tmp_path / "two.png"
    assert main(["generate", TWO, "--frames", "1", "--regions", "--steps", "6", "-o", str(out)]) == 0
    assert out.is_file() and "regions: " in capsys.readouterr().out
    # a checkpoint without a layout: a clear error, nothing written
    bad = tmp_path / "bad.mp4"
    assert main(["generate", "a red circle", "--model", str(tiny_wan), "--frames", "5", "--height", "32",
                 "--width", "32", "--regions", "-o", str(bad)]) == 2
    assert "names none" in capsys.readouterr().err and not bad.exists()


class HalfLayout:
    """Prompts other than ``plain`` get one region (``sub``) over the left half of every frame; backdrops differ
    per prompt."""

    def __init__(self, plain="a red circle", sub="a green triangle"):
        self.plain, self.sub = plain, sub

    def split(self, prompt):
        return [] if prompt == self.plain else [self.sub]

    def backdrop(self, prompt):
        return (255, 255, 255) if prompt == self.plain else (0, 0, 0)

    def masks(self, frames, prompt):
        m = torch.zeros((1,) + tuple(frames.shape[:3]), dtype=torch.bool)
        m[..., : frames.shape[2] // 2] = True
        return m


def test_mixed_batches_candidates_and_backdrops(pipe):
    prompts = ["a red circle", "a blue square"]
    plain = pipe(prompts, seed=3, output="latent", **KW)
    for iso in (False, True):
        z = pipe(prompts, seed=3, output="latent", regions=Regions(HalfLayout(), start=2, isolate=iso), **KW)
        assert torch.equal(z[0], plain[0])                 # the row without regions is the exact path's
        assert (z[1] - plain[1]).abs().max() > 1e-3
    # best-of-N: candidate 0 is the candidates=1 run, regions and all
    class Verifier:
        def score(self, videos, prompts):
            return -torch.arange(len(prompts), dtype=torch.float32)      # always candidate 0

    one = pipe("a blue square", seed=3, output="latent", regions=Regions(HalfLayout(), start=2, isolate=True), **KW)
    old, pipe.verifier = pipe._verifier, Verifier()
    try:
        two = pipe("a blue square", seed=3, candidates=2, regions=Regions(HalfLayout(), start=2, isolate=True),
                   **KW)
    finally:
        pipe.verifier = old
    torch.testing.assert_close(two.latents, one.cpu(), rtol=1e-4, atol=1e-5)
    # each row's empty scene is its own backdrop encoded by the VAE
    run = RegionRun(Regions(HalfLayout(), start=2, isolate=True), prompts, 6)
    bd = pipe._backdrops(run, pipe.latent_shape(2, 5, 32, 32), 5, 32, 32)
    for row, rgb in enumerate((255.0, 0.0)):
        video = torch.full((1, 3, 5, 32, 32), rgb / 127.5 - 1)
        torch.testing.assert_close(bd[row:row + 1], pipe.vae.normalize(pipe.vae.encode(video)).float())


def test_layout_answers_are_checked(pipe):
    class Lay(HalfLayout):
        def __init__(self, split=None, masks=None, backdrop=None):
            super().__init__(plain="")
            self._s, self._m, self._b = split, masks, backdrop

        def split(self, prompt):
            return self._s if self._s is not None else super().split(prompt)

        def masks(self, frames, prompt):
            return self._m if self._m is not None else super().masks(frames, prompt)

        def backdrop(self, prompt):
            return self._b if self._b is not None else super().backdrop(prompt)

    for lay, phrase in ((Lay(split="a green triangle"), "must give a list of prompts"),
                        (Lay(masks=np.ones((1, 5, 32, 32), bool)), "bool torch.Tensor"),
                        (Lay(backdrop=(0.5, 2)), "values in 0..255"),
                        (Lay(backdrop="red"), "values in 0..255")):
        with pytest.raises(ConfigError, match=phrase):
            pipe("a blue square", regions=Regions(lay, start=2, isolate=True), **KW)
    with pytest.raises(ConfigError, match="got a class; pass an instance"):
        Regions(WorldLayout)
    with pytest.raises(ConfigError, match="start=6.*has 6 steps"):
        pipe("a blue square", regions=Regions(HalfLayout(), start=6), **KW)
    r = Regions(HalfLayout())
    r.start = "3"                                           # changed after it was made: checked again
    with pytest.raises(ConfigError, match="start='3'"):
        pipe("a blue square", regions=r, **KW)
    old, pipe.defaults.region_layout = pipe.defaults.region_layout, "foo"
    try:
        with pytest.raises(ConfigError, match="region_layout 'foo'.*known: 'world'"):
            pipe("a blue square", regions=True, **KW)
    finally:
        pipe.defaults.region_layout = old


def test_objects_sharing_a_colour_are_left_to_the_full_prompt():
    prompt = "a red circle moves right and a red square stays still and a blue triangle grows"
    frames = torch.from_numpy(render(prompt, 64, 64, 1, 16, seed=2)).float()
    m = WorldLayout().masks(frames, prompt)
    assert m.shape == (3, 1, 64, 64) and not m[0].any() and not m[1].any() and m[2].sum() > 20
