"""A learned verifier for the synthetic world: how well a generated clip shows its prompt, for best-of-N sampling.

``Pipeline(..., candidates=N)`` samples N clips per prompt and keeps the one its verifier scores highest
(test-time selection, as DALL-E reranked its samples with CLIP). The embedded model ships this verifier in
``verifier/`` beside its diffusers components.

What it is: a small transformer over the 8x8-pixel patches of a few picked frames (RGB, each frame's patches as
tokens) trained on the world's renders of *training* prompts only (``tools/train_verifier.py``) to name, for every
patch, the colour, shape and motion of the object covering it (or none). Optionally
(``shape_motion_from="structure"``) a second stream names shape and motion from colour-blind maps (where objects and
edges are) with the frames stacked as channels, so an object's path is in one patch's view and no colour can tie a
motion to a colour (the held-out prompts are new colour + shape + motion triples): it names held-out motions on
renders far better, yet picked no better among generated clips, and is not shipped (benchmarks/results/best_of_n.md).
It never reads the prompt and
never sees a generated sample or the scorer. A prompt's score is a likelihood built on those per-patch
predictions: every patch should be explained by the prompt's objects or the background (strays, wrong shapes
and wrong motions lower it), and every object of the prompt should have a patch that shows it (missing objects
lower it). Binding is judged per patch: a red patch that looks like a square counts for "a red square" only.

It is not `vidrt.world.score` (the evaluation's rule-based scorer): selection with the scorer itself would
report the metric it optimises. The two agree only as far as both see the same world.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vidrt.errors import CheckpointError, ShapeError
from vidrt.world.grammar import BACKGROUNDS, COLORS, MOTIONS, SHAPES, Scene, parse

__all__ = ["VerifierConfig", "WorldVerifier", "structure_maps", "load_verifier", "save_verifier", "cell_labels",
           "pick_frames", "NONE_COLOR", "NONE_SHAPE", "NONE_MOTION", "HEAD_SIZES"]

NONE_COLOR, NONE_SHAPE, NONE_MOTION = len(COLORS), len(SHAPES), len(MOTIONS)   # "no object here" classes
HEAD_SIZES = (len(COLORS) + 1, len(SHAPES) + 1, len(MOTIONS) + 1)   # colour, shape, motion classes + none
_COLOR_INDEX = {c: i for i, c in enumerate(COLORS)}


@dataclass
class VerifierConfig:
    """Sizes of the verifier, stored as its config.json.

    dim / layers / heads: the transformer over patches; max_frames: frames picked evenly from a clip (5 of 33
    see a whole motion, including both hops of a 2-second bounce); cell: patch size in pixels (the stem's stride);
    presence_weight: weight of "each object shows in every frame" against "each patch is explained" (1 was
    chosen on generated samples of *training* prompts, never on the held-out ones); shape_motion_from: "rgb" (the
    colour stream's shape and motion heads) or "structure" (a second stream of the same size that sees only where
    objects and edges are, not their colours, in all picked frames at once: every shape + motion pair is in the
    training split even where the colour + shape + motion triple is held out, so its heads have no colour to
    over-fit a triple on; see :meth:`WorldVerifier.structure_logits`).
    """
    dim: int = 64
    layers: int = 4
    heads: int = 4
    max_frames: int = 5
    cell: int = 8
    presence_weight: float = 1.0
    shape_motion_from: str = "rgb"

    @classmethod
    def from_dict(cls, d: dict) -> "VerifierConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def pick_frames(num_frames: int, max_frames: int) -> np.ndarray:
    """Indices of the frames the verifier looks at: up to ``max_frames``, evenly spaced, first and last included."""
    return np.linspace(0, num_frames - 1, min(num_frames, max_frames)).round().astype(int)


def structure_maps(video: torch.Tensor, fg_scale: float = 0.3, edge_scale: float = 0.15) -> torch.Tensor:
    """Colour-blind view of frames: (..., 3, H, W) in [-1, 1] -> (..., 2, H, W) in [-1, 1]: how far each pixel is
    from its frame's background colour (the per-channel median: objects cover well under half a frame) and from
    its right / lower neighbour, in RGB distance saturating at ``fg_scale`` / ``edge_scale`` (of a [0, 1] range).
    The world's object colours sit >= 0.45 from every background and >= 0.36 from each other, so both maps read
    ~1 on objects / edges whatever their colours, and an object's colour leaves no trace in them."""
    x = (video.float() + 1) / 2
    bg = x.flatten(-2).median(-1).values[..., None, None]
    fg = ((x - bg).norm(dim=-3) / fg_scale).clamp(max=1)
    dx = F.pad((x[..., :, 1:] - x[..., :, :-1]).norm(dim=-3), (0, 1))
    dy = F.pad((x[..., 1:, :] - x[..., :-1, :]).norm(dim=-3), (0, 0, 0, 1))
    edge = (torch.maximum(dx, dy) / edge_scale).clamp(max=1)
    return torch.stack([fg, edge], -3) * 2 - 1


class PatchTransformer(nn.Module):
    """Frames (B, T, C, H, W) -> per-patch logits (B, T, H/8, W/8, out): a strided conv stem per frame (8x8-pixel
    patches), sin / cos positions of (t, y, x), a transformer over all patches of the clip."""

    def __init__(self, in_channels: int, out: int, config: VerifierConfig):
        super().__init__()
        d = config.dim
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 48, 3, 1, 1),
                                  nn.GELU(), nn.Conv2d(48, 64, 4, 2, 1), nn.GELU(), nn.Conv2d(64, d, 4, 2, 1))
        self.pos = nn.Linear(3 * 16, d)   # sin / cos of (t, y, x) at 8 frequencies
        layer = nn.TransformerEncoderLayer(d, config.heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, out)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        f = self.stem(video.flatten(0, 1))
        d, hh, ww = f.shape[1:]
        f = f.view(b, t, d, hh, ww).permute(0, 1, 3, 4, 2)
        tt = torch.linspace(0, 1, t) if t > 1 else torch.zeros(1)
        yy, xx = (torch.arange(hh) + 0.5) / hh, (torch.arange(ww) + 0.5) / ww
        coords = torch.stack(torch.meshgrid(tt, yy, xx, indexing="ij"), -1).to(video.device)
        angles = coords[..., None] * (2.0 ** torch.arange(8, device=video.device) * math.pi)
        pos = self.pos(torch.cat([angles.sin(), angles.cos()], -1).flatten(-2))
        x = self.norm(self.blocks((f + pos).reshape(b, t * hh * ww, d)))
        return self.head(x).view(b, t, hh, ww, -1)


class WorldVerifier(nn.Module):
    """Per-patch object classifier over a clip; :meth:`score` turns it into a prompt score."""

    def __init__(self, config: VerifierConfig = VerifierConfig()):
        super().__init__()
        self.config = config
        if config.cell != 8:
            raise ValueError("the verifier's stem has stride 8: cell must be 8")
        if config.shape_motion_from not in ("rgb", "structure"):
            raise ValueError(f"shape_motion_from must be 'rgb' or 'structure', got {config.shape_motion_from!r}")
        self.rgb = PatchTransformer(3, sum(HEAD_SIZES), config)
        k = config.max_frames   # the structure stream stacks its frames as channels (see structure_logits)
        self.structure = (PatchTransformer(2 * k, k * (HEAD_SIZES[1] + HEAD_SIZES[2]), config)
                          if config.shape_motion_from == "structure" else None)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W) in [-1, 1], H and W multiples of 8 -> logits (B, T, H/8, W/8, 9 + 4 + 9):
        colour, shape and motion of the object covering each patch (last class of each: none)."""
        logits = self.rgb(video)
        if self.structure is None:
            return logits
        return torch.cat([logits[..., :HEAD_SIZES[0]], self.structure_logits(video)], -1)

    def structure_logits(self, video: torch.Tensor) -> torch.Tensor:
        """The colour-blind stream's shape and motion logits (B, T, H/8, W/8, 4 + 9) of frames (B, T, 3, H, W).

        Its T frames (resampled to ``max_frames``, repeating frames of shorter clips: an image is a clip that
        stays still) are stacked as the channels of one image, and each patch predicts its label in every frame:
        the stem sees an object's path across the clip in one place. With the frames as separate tokens (as the
        colour stream has them) motion never learnt: 13-21 % per-patch accuracy over 8 motions on clean renders
        of training prompts after 600-3 000 steps."""
        if self.structure is None:
            raise ValueError("this verifier has no structure stream (shape_motion_from='rgb')")
        b, t = video.shape[:2]
        k = self.config.max_frames
        slots = torch.from_numpy(np.linspace(0, t - 1, k).round().astype(np.int64)).to(video.device)
        maps = structure_maps(video).index_select(1, slots).flatten(1, 2)[:, None]     # (B, 1, 2k, H, W)
        out = self.structure(maps)                                                       # (B, 1, h, w, k * 13)
        out = out.view(*out.shape[:4], k, -1)[:, 0].permute(0, 3, 1, 2, 4)               # (B, k, h, w, 13)
        first = torch.stack([(slots == j).nonzero()[0, 0] for j in range(t)])            # each frame's first slot
        return out.index_select(1, first)

    def prepare(self, videos: torch.Tensor) -> torch.Tensor:
        """Decoded clips (B, 3, T, H, W) in [-1, 1] -> the verifier's input (B, T', 3, H, W): the picked frames,
        rounded to 8-bit levels as a saved clip would be (the renders it learnt from are 8-bit)."""
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ShapeError(f"the verifier takes clips (B, 3, T, H, W), got shape {tuple(videos.shape)}")
        h, w = videos.shape[-2:]
        cell = self.config.cell
        if h % cell or w % cell:
            raise ShapeError(f"the verifier needs frames whose height and width are multiples of {cell}, got {h}x{w}")
        idx = torch.from_numpy(pick_frames(videos.shape[2], self.config.max_frames)).to(videos.device)
        x = videos.float().index_select(2, idx).clamp(-1, 1)
        x = ((x + 1) * 127.5).round() / 127.5 - 1
        return x.permute(0, 2, 1, 3, 4)

    def check_prompts(self, prompts: Sequence[Union[str, Scene]]) -> None:
        """PromptError (naming the grammar) for a prompt this verifier cannot judge: it knows the world's words only."""
        from vidrt.errors import PromptError

        for p in prompts:
            try:
                parse(p)
            except PromptError as e:
                raise PromptError(f"best-of-N with the world verifier judges prompts of the synthetic world's grammar "
                                  f"only; {p!r} is not one (use candidates=1 for other prompts): {e}") from None

    @torch.no_grad()
    def score(self, videos: torch.Tensor, prompts: Sequence[Union[str, Scene]]) -> torch.Tensor:
        """How well each clip (B, 3, T, H, W) in [-1, 1] shows its prompt: a log-likelihood, higher is better.
        Comparable between clips of one prompt and size (what best-of-N needs), not across prompts."""
        x = self.prepare(videos)
        scenes = [parse(p) for p in prompts]
        if len(scenes) != videos.shape[0]:
            raise ShapeError(f"{videos.shape[0]} clips for {len(scenes)} prompts; give one prompt per clip")
        logits = self(x.to(next(self.parameters()).dtype)).float()
        return torch.stack([prompt_log_likelihood(lo, s, self.config.presence_weight)
                            for lo, s in zip(logits, scenes)])


def prompt_log_likelihood(logits: torch.Tensor, scene: Scene, presence_weight: float = 1.0,
                          eps: float = 1e-4) -> torch.Tensor:
    """One clip's per-patch logits (T, h, w, 22) and its scene -> score: mean over patches of log P(the patch shows
    the background or one of the scene's objects) + ``presence_weight`` x mean over objects and frames of log max
    over the frame's patches of P(the patch shows that object) (the world's objects stay in view: one that fades
    out or flickers scores low). An object is its colour, shape and (clips only) motion together."""
    c, s, m = logits.split(HEAD_SIZES, dim=-1)
    pc, ps, pm = c.softmax(-1), s.softmax(-1), m.softmax(-1)
    still = logits.shape[0] == 1   # an image shows no motion
    objects = []
    for o in scene.objects:
        p = pc[..., _COLOR_INDEX[o.color]] * ps[..., SHAPES.index(o.shape)]
        objects.append(p if still else p * pm[..., MOTIONS.index(o.motion)])
    objects = torch.stack(objects)                                   # (K, T, h, w)
    explained = torch.log(pc[..., NONE_COLOR] + objects.sum(0) + eps).mean()
    present = torch.log(objects.flatten(2).max(2).values + eps).mean()   # (K, T): best patch per object and frame
    return explained + presence_weight * present


def cell_labels(frames: np.ndarray, scene: Scene, cell: int = 8, min_cover: float = 0.2) -> torch.Tensor:
    """Training targets from a clean render: (T, H, W, 3) uint8 of ``scene`` -> (T, H/cell, W/cell, 3) long, the
    colour, shape and motion class of the object covering most of each cell (none when objects cover less than
    ``min_cover`` of it). A pixel belongs to the scene colour (background or object) nearest to it; object
    colours are unique within a scene, so a colour names its object."""
    palette = np.array([BACKGROUNDS[scene.background]] + [COLORS[o.color] for o in scene.objects], np.float32)
    dist = ((frames[..., None, :].astype(np.float32) - palette) ** 2).sum(-1)        # (T, H, W, K+1)
    owner = torch.from_numpy(dist.argmin(-1))
    cover = F.avg_pool2d(F.one_hot(owner, len(palette)).permute(0, 3, 1, 2).float(), cell)   # (T, K+1, h, w)
    best_cover, best = cover[:, 1:].max(1)
    which = torch.where(best_cover > min_cover, best, torch.full_like(best, len(scene.objects)))
    table = torch.tensor([[_COLOR_INDEX[o.color], SHAPES.index(o.shape), MOTIONS.index(o.motion)]
                          for o in scene.objects] + [[NONE_COLOR, NONE_SHAPE, NONE_MOTION]])
    return table[which]


def save_verifier(model: WorldVerifier, folder: Union[str, Path], storage: str = "fp16") -> Path:
    """Write ``config.json`` + ``model.safetensors`` to ``folder``: everything fp16 (``storage="fp16"``, how the
    shipped verifier is stored), or conv and linear weights as int8 with one scale per output channel and the rest
    fp16 (``"int8"``, vidrt's int8 storage: half the bytes, so two streams fit where one fp16 stream did)."""
    from safetensors.torch import save_file

    from vidrt.quant.storage import int8_state

    if storage not in ("int8", "fp16"):
        raise ValueError(f"verifier storage must be 'int8' or 'fp16', got {storage!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "WorldVerifier", **asdict(model.config)},
                                                   indent=2) + "\n")
    state = model.state_dict()
    stored = (int8_state(state, lambda key, t: key.endswith("weight")) if storage == "int8"
              else {k: v.detach().half().contiguous() for k, v in state.items()})
    save_file(stored, str(folder / "model.safetensors"))
    return folder


def load_verifier(folder: Union[str, Path], device: Union[str, torch.device] = "cpu") -> WorldVerifier:
    """Read a folder written by :func:`save_verifier` (weights as fp32), ready to score clips."""
    from safetensors import SafetensorError

    from vidrt.checkpoints.state import LazyStateDict

    folder = Path(folder)
    try:
        config = VerifierConfig.from_dict(json.loads((folder / "config.json").read_text()))
        model = WorldVerifier(config)
        state = LazyStateDict([folder / "model.safetensors"])
        # a single-stream verifier saved before the streams were named: its weights are the rgb stream's
        prefix = "" if any(k.startswith("rgb.") for k in state) else "rgb."
        model.load_state_dict({prefix + k: state[k].float() for k in state})
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError, CheckpointError) as e:
        raise CheckpointError(f"cannot load the verifier in {folder}: {e}; re-export it with "
                              "tools/train_verifier.py or remove the folder to generate without best-of-N") from e
    return model.to(device).eval()
