"""Shot lists for long clips: ``Shot(prompt, seconds=, cut=)``, YAML/JSON files, and their chunk plan.

A shot switches the text conditioning; characters carry over through the KV cache (what was
seen) and the prompt ("the red circle" in a later shot). ``cut="continuous"`` keeps the whole
cache (the action continues); ``cut="hard"`` drops the rolling window and keeps only the sink
frames (a new composition that still knows the clip's characters). For world prompts
(vidrt.world grammar) references are checked up front: "the red circle" needs an earlier "a red
circle", else a PromptError names the shot and the fix.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

from vidrt.errors import ConfigError, PromptError

logger = logging.getLogger(__name__)

__all__ = ["Shot", "ShotSpan", "load_shots", "as_shots", "check_references", "plan_shots"]

CUTS = ("continuous", "hard")


@dataclass(frozen=True)
class Shot:
    """One shot: its prompt, its length in seconds and how it starts (ignored for the first shot)."""

    prompt: str
    seconds: float = 5.0
    cut: str = "continuous"
    negative_prompt: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise PromptError(f"a shot needs a non-empty prompt string, got {self.prompt!r}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, numbers.Real):
            raise PromptError(f"seconds must be a number, got {self.seconds!r} (shot {self.prompt!r}); e.g. "
                              "seconds=10")
        object.__setattr__(self, "seconds", float(self.seconds))   # numpy scalars too
        if not 0 < self.seconds < math.inf:
            raise ConfigError(f"seconds={self.seconds} is not a positive length (shot {self.prompt!r}); give e.g. "
                              "seconds=10")
        if self.cut not in CUTS:
            raise ConfigError(f"cut={self.cut!r}; use 'continuous' or 'hard' (shot {self.prompt!r})")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise PromptError(f"negative_prompt must be a string, got {self.negative_prompt!r} (shot "
                              f"{self.prompt!r}); leave it out to use the clip's negative prompt")


@dataclass(frozen=True)
class ShotSpan:
    """Where a shot lands in the clip: latent frames [latent_start, latent_stop), video frames likewise."""

    shot: Shot
    index: int
    latent_start: int
    latent_stop: int
    frame_start: int
    frame_stop: int

    @property
    def latent_frames(self) -> int:
        return self.latent_stop - self.latent_start


def _shot_from(obj, k: int) -> Shot:
    if isinstance(obj, Shot):
        return obj
    if isinstance(obj, str):
        return Shot(obj)
    if isinstance(obj, dict):
        unknown = sorted(set(obj) - {"prompt", "seconds", "cut", "negative_prompt"})
        if unknown or "prompt" not in obj:
            raise PromptError(f"shot {k + 1}: {obj!r} needs a 'prompt' and may have 'seconds', 'cut', "
                              f"'negative_prompt'{'; unknown keys: ' + ', '.join(unknown) if unknown else ''}")
        seconds = obj.get("seconds", 5.0)
        if not isinstance(seconds, bool):
            try:
                seconds = float(seconds)  # as before: a number or a quoted number ("10")
            except (TypeError, ValueError):
                pass  # Shot names the bad value
        try:
            return Shot(obj["prompt"], seconds, obj.get("cut", "continuous"), obj.get("negative_prompt"))
        except (PromptError, ConfigError) as e:
            raise type(e)(f"shot {k + 1}: {e}") from None
    raise PromptError(f"shot {k + 1}: {obj!r} is neither a prompt string nor a mapping with 'prompt'")


def load_shots(path: Union[str, Path]) -> list[Shot]:
    """Read a shot list: YAML (.yaml/.yml) or JSON, either a list of shots or ``{"shots": [...]}``.

    Each shot is a prompt string or ``{prompt, seconds, cut, negative_prompt}``.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"shot list {path} does not exist; pass a .yaml or .json file of shots")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 -- any parse failure is the user's file
        fix = ("fix the YAML/JSON syntax" if suffix in (".yaml", ".yml", ".json") else
               f"use a .yaml/.yml or .json file (not {suffix or 'one without extension'})")
        raise PromptError(f"shot list {path} cannot be parsed ({e}); {fix}") from None
    if isinstance(data, dict):
        data = data.get("shots")
    if not isinstance(data, list) or not data:
        raise PromptError(f"shot list {path} must hold a non-empty list of shots (or a mapping with 'shots:'), "
                          "e.g. [{prompt: 'a red circle moves right', seconds: 10}]")
    return [_shot_from(o, k) for k, o in enumerate(data)]


def as_shots(shots_or_prompt, seconds: Optional[float] = None) -> list[Shot]:
    """A prompt, a Shot, a list of either, or a shot-list path -> list[Shot].

    ``seconds`` is the length of a single prompt; with several shots it rescales their lengths
    proportionally to that total.
    """
    if isinstance(shots_or_prompt, Path) or (isinstance(shots_or_prompt, str) and
                                             shots_or_prompt.lower().endswith((".yaml", ".yml", ".json"))):
        shots = load_shots(shots_or_prompt)
    elif isinstance(shots_or_prompt, (str, Shot)):
        shots = [_shot_from(shots_or_prompt, 0)]
    elif isinstance(shots_or_prompt, Iterable) and not isinstance(shots_or_prompt, (bytes, Mapping)):
        shots = [_shot_from(o, k) for k, o in enumerate(shots_or_prompt)]
    else:
        raise PromptError(f"shots={shots_or_prompt!r}; give a prompt, a Shot, a list of them or a .yaml/.json "
                          "shot-list path")
    if not shots:
        raise PromptError("a shot list needs at least one shot, e.g. [Shot('a red circle moves right', seconds=10)]")
    if seconds is not None:
        if not seconds > 0:
            raise ConfigError(f"seconds={seconds}; give a positive clip length")
        total = sum(s.seconds for s in shots)
        shots = [Shot(s.prompt, s.seconds * seconds / total, s.cut, s.negative_prompt) for s in shots]
    return shots


def check_references(shots: Sequence[Shot], world: Optional[bool] = None) -> bool:
    """Check world-grammar shot lists (unknown words, "the X" without an earlier "a X"); returns
    whether the list was treated as world prompts.

    ``world=None`` decides from the first prompt: a valid world prompt makes the whole list a world
    shot list (so a typo in a later shot is an error, not free text); pass ``world=False`` to
    treat every prompt as free text.
    """
    from vidrt.world import parse, parse_shots

    if world is None:
        try:
            parse(shots[0].prompt)
            world = True
        except PromptError:
            world = False
    if world:
        try:
            parse_shots([s.prompt for s in shots])
        except PromptError as e:
            raise PromptError(f"{e}\n(the shot list is read as vidrt.world prompts because the first shot is one; "
                              "pass world=False / --free-text to use free text)") from None
    return bool(world)


def plan_shots(shots: Sequence[Shot], *, fps: float, unit: int, temporal: int = 4) -> list[ShotSpan]:
    """Latent frame spans of the shots: each gets a multiple of ``unit`` latent frames (a causal chunk)
    closest to its seconds (at least one unit); video frames follow the causal VAE (1 + 4(T'-1))."""
    spans, start = [], 0
    for k, shot in enumerate(shots):
        want = shot.seconds * fps / temporal
        n = max(unit, int(round(want / unit)) * unit)
        if abs(n - want) > unit / 2 + 1e-9:
            logger.info("shot %d: %.2fs rounds to %d latent frames (%d per chunk)", k + 1, shot.seconds, n, unit)
        f0 = 0 if start == 0 else 1 + temporal * (start - 1)
        f1 = 1 + temporal * (start + n - 1)
        spans.append(ShotSpan(shot, k, start, start + n, f0, f1))
        start += n
    return spans
