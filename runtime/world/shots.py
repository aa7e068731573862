"""Multi-shot clips: a list of shot prompts where a later shot says "the red circle ..." about an
object introduced ("a red circle ...") in an earlier shot.

Rules:
- each shot shows exactly the objects its prompt names (a cut hides the others);
- "the COLOR SHAPE" is the most recent object with that colour and shape from an earlier shot: it
  keeps its colour, shape and size, and starts where it was at the end of its last shot;
- "a COLOR SHAPE" is always a new object (new size and position);
- a shot without "on a ... background" keeps the previous shot's background (the first: black).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from vidrt.errors import PromptError, ShapeError
from vidrt.world.grammar import BACKGROUNDS, COLORS, DEFAULT_BACKGROUND, GRAMMAR, Scene, parse
from vidrt.world.render import _render_sequence

__all__ = ["Shot", "parse_shots", "model_prompts", "shot_lengths", "render_shots"]


@dataclass(frozen=True)
class Shot:
    """One resolved shot: its scene, the identity of each object across shots (parallel to
    scene.objects) and its effective background."""
    scene: Scene
    object_ids: tuple[int, ...]
    background: str


def parse_shots(prompts: Sequence[Union[str, Scene, Shot]]) -> list[Shot]:
    """Parse and resolve a shot list; raises PromptError for an unknown reference."""
    if isinstance(prompts, (str, Scene)):
        prompts = [prompts]
    if len(prompts) == 0:
        raise PromptError("a shot list needs at least one prompt, e.g. ['a red circle moves right', "
                          "'the red circle moves up']")
    if all(isinstance(p, Shot) for p in prompts):
        return list(prompts)
    latest: dict[tuple[str, str], int] = {}
    background = DEFAULT_BACKGROUND
    shots: list[Shot] = []
    next_id = 0
    for k, prompt in enumerate(prompts):
        scene = parse(prompt)
        if scene.background_given:
            background = scene.background
        ids = []
        for obj in scene.objects:
            if obj.ref:
                if obj.key not in latest:
                    earlier = sorted(f"{c} {s}" for c, s in latest)
                    raise PromptError(
                        f"shot {k + 1} ({scene.prompt()!r}) says 'the {obj.name}' but no earlier shot has a "
                        f"{obj.name} (earlier objects: {', '.join(earlier) or 'none'}); introduce it with "
                        f"'a {obj.name}' in an earlier shot, or write 'a {obj.name}' here.\n{GRAMMAR}")
                ids.append(latest[obj.key])
            else:
                ids.append(next_id)
                next_id += 1
            if COLORS[obj.color] == BACKGROUNDS[background]:
                raise PromptError(f"shot {k + 1}: a {obj.name} on the {background} background is invisible; "
                                  "name another background for this shot ('on a gray background')")
        for obj, oid in zip(scene.objects, ids):
            latest[obj.key] = oid
        shots.append(Shot(scene, tuple(ids), background))
    return shots


def model_prompts(prompts: Sequence[Union[str, Scene, Shot]]) -> list[str]:
    """Each shot as a model trained on single-shot world prompts reads it: references written as objects
    ("the red circle" -> "a red circle"; in a stream the KV cache and the shot plan carry the identity) and the
    inherited background named. The training data never says "the COLOR SHAPE": the embedded model, given it,
    dropped the object in later shots (session 7: presence 0.53 vs 0.98 with "a", continuity 0.02 vs 0.58)."""
    out = []
    for shot in parse_shots(prompts):
        text = " and ".join(dataclasses.replace(o, ref=False).text() for o in shot.scene.objects)
        if shot.scene.background_given or shot.background != DEFAULT_BACKGROUND:
            text += f" on a {shot.background} background"
        out.append(text)
    return out


def shot_lengths(num_shots: int, frames_per_shot: Union[int, Sequence[int], None] = None,
                 seconds_per_shot: Union[float, Sequence[float], None] = None, fps: float = 16) -> list[int]:
    """Frame count of each shot, from frames or from seconds (round(seconds * fps), at least 1)."""
    if (frames_per_shot is None) == (seconds_per_shot is None):
        raise ShapeError("give exactly one of frames_per_shot or seconds_per_shot, e.g. frames_per_shot=17")
    if frames_per_shot is not None:
        per = frames_per_shot if isinstance(frames_per_shot, Sequence) else [frames_per_shot] * num_shots
        frames = [int(n) for n in per]
    else:
        per = seconds_per_shot if isinstance(seconds_per_shot, Sequence) else [seconds_per_shot] * num_shots
        frames = [max(1, int(round(float(s) * fps))) for s in per]
    if len(frames) != num_shots:
        raise ShapeError(f"{len(frames)} shot lengths for {num_shots} shots: give one length per shot")
    if any(n < 1 for n in frames):
        raise ShapeError(f"every shot needs at least 1 frame, got {frames}")
    return frames


def render_shots(prompts: Sequence[Union[str, Scene, Shot]], height: int, width: int,
                 frames_per_shot: Union[int, Sequence[int], None] = None,
                 seconds_per_shot: Union[float, Sequence[float], None] = None, fps: float = 16,
                 seed: int = 0) -> np.ndarray:
    """Render a shot list as one clip, uint8 (total frames, H, W, 3); shots follow each other in order.

    Objects referenced with 'the' keep colour, shape and size, and continue from where they were.
    """
    shots = parse_shots(prompts)
    frames = shot_lengths(len(shots), frames_per_shot, seconds_per_shot, fps)
    return _render_sequence([(s.scene, s.object_ids, s.background) for s in shots], frames, height, width,
                            fps, seed)
