"""The prompt grammar of the synthetic world: text <-> `Scene`, the vocabulary, a prompt sampler and
the fixed train / held-out split.

Grammar (words are case-insensitive; commas and full stops are ignored)::

    prompt     := object ( ["and"] object ){0,2} [background]
    object     := ("a" | "an" | "the") COLOR SHAPE [motion]
    motion     := "moves" ["to" "the"] ("left" | "right" | "up" | "down")
                | "bounces" | "stays" "still" | "grows" | "shrinks"
    background := "on" ["a" | "the"] BACKGROUND "background"

    COLOR      := red | green | blue | yellow | white | orange | purple | cyan
    SHAPE      := circle | square | triangle
    BACKGROUND := black | gray (or grey) | white          (default: black)

An object without a motion stays still. Within one prompt each (colour, shape) pair appears once, and
a white object cannot sit on a white background (it would be invisible).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Union

import numpy as np

from vidrt.errors import PromptError

__all__ = [
    "COLORS", "SHAPES", "MOTIONS", "BACKGROUNDS", "DEFAULT_BACKGROUND", "MAX_OBJECTS", "GRAMMAR",
    "ObjectSpec", "Scene", "parse", "tokenize", "vocabulary", "sample_scene", "sample_prompt",
    "is_held_out", "is_held_out_triple", "held_out_triples", "held_out_prompts", "sample_train_prompt",
    "train_prompts",
]

# Colours of objects and of backgrounds, as rendered (sRGB, 0-255).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 70, 240),
    "yellow": (250, 230, 20),
    "white": (255, 255, 255),
    "orange": (255, 140, 0),
    "purple": (150, 40, 200),
    "cyan": (0, 220, 230),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
}
DEFAULT_BACKGROUND = "black"
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = ("moves left", "moves right", "moves up", "moves down", "bounces",
                            "stays still", "grows", "shrinks")
MAX_OBJECTS = 3

ARTICLES = ("a", "an", "the")
_DIRECTIONS = ("left", "right", "up", "down")
_SYNONYMS = {"grey": "gray"}

GRAMMAR = (
    "Prompt grammar: one to three objects, then an optional background.\n"
    "  object:     a|an|the COLOR SHAPE [MOTION]   (objects may be joined by 'and')\n"
    f"  COLOR:      {' | '.join(COLORS)}\n"
    f"  SHAPE:      {' | '.join(SHAPES)}\n"
    "  MOTION:     moves [to the] left|right|up|down | bounces | stays still | grows | shrinks"
    " (default: stays still)\n"
    f"  background: on [a] {'|'.join(BACKGROUNDS)} background (default: {DEFAULT_BACKGROUND}; grey = gray)\n"
    "  example:    a blue square moves up and a yellow triangle stays still on a gray background"
)


def _error(msg: str) -> PromptError:
    return PromptError(f"{msg}\n{GRAMMAR}")


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a scene. `ref` is True when the prompt named it with 'the' (a reference to an
    object of an earlier shot)."""
    color: str
    shape: str
    motion: str = "stays still"
    ref: bool = False

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise _error(f"unknown object colour {self.color!r}")
        if self.shape not in SHAPES:
            raise _error(f"unknown shape {self.shape!r}")
        if self.motion not in MOTIONS:
            raise _error(f"unknown motion {self.motion!r}")

    @property
    def key(self) -> tuple[str, str]:
        """(colour, shape): how later shots refer to this object."""
        return (self.color, self.shape)

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def text(self) -> str:
        article = "the" if self.ref else ("an" if self.color[0] in "aeiou" else "a")
        return f"{article} {self.color} {self.shape} {self.motion}"


@dataclass(frozen=True)
class Scene:
    """A parsed prompt: 1-3 objects and a background. `background_given` records whether the prompt
    named the background (a later shot without one keeps the previous shot's background)."""
    objects: tuple[ObjectSpec, ...]
    background: str = DEFAULT_BACKGROUND
    background_given: bool = False

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise _error(f"a prompt has 1 to {MAX_OBJECTS} objects, got {len(self.objects)}: drop some, or "
                         "spread them over several shots")
        if self.background not in BACKGROUNDS:
            raise _error(f"unknown background {self.background!r}")
        keys = [o.key for o in self.objects]
        dup = sorted({f"{c} {s}" for c, s in keys if keys.count((c, s)) > 1})
        if dup:
            raise _error(f"each object must be unique within a prompt, {', '.join(dup)} appears twice: "
                         "give the second one another colour or shape")
        for o in self.objects:
            if BACKGROUNDS[self.background] == COLORS[o.color]:
                raise _error(f"a {o.name} on a {self.background} background is invisible: "
                             "choose another colour or background")

    def prompt(self) -> str:
        """The canonical text of this scene (parse(scene.prompt()) == scene)."""
        text = " and ".join(o.text() for o in self.objects)
        if self.background_given:
            text += f" on a {self.background} background"
        return text

    def __str__(self) -> str:
        return self.prompt()


def tokenize(prompt: str) -> list[str]:
    """Lower-cased words of a prompt; commas, full stops, semicolons and '!' are dropped."""
    if not isinstance(prompt, str):
        raise PromptError(f"a prompt must be a string, got {type(prompt).__name__}: pass text like "
                          "'a red circle moves right'")
    words = re.sub(r"[,.;!]", " ", prompt.lower()).split()
    return [_SYNONYMS.get(w, w) for w in words]


def vocabulary() -> list[str]:
    """Every word the grammar accepts (sorted), for building a word-level tokenizer."""
    words = set(ARTICLES) | {"and", "on", "to", "background", "moves", "bounces", "stays", "still",
                              "grows", "shrinks"}
    words |= set(COLORS) | set(BACKGROUNDS) | set(SHAPES) | set(_DIRECTIONS) | set(_SYNONYMS)
    return sorted(words)


class _Parser:
    def __init__(self, prompt: str):
        self.prompt = prompt
        self.words = tokenize(prompt)
        self.i = 0

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def take(self, allowed: Iterable[str], what: str) -> str:
        allowed = tuple(allowed)
        w = self.peek()
        if w not in allowed:
            where = f"word {self.i + 1} ({w!r})" if w is not None else "the end of the prompt"
            raise _error(f"in prompt {self.prompt!r}: expected {what} at {where}; "
                         f"allowed: {', '.join(allowed)}")
        self.i += 1
        return w

    def motion(self) -> str:
        w = self.peek()
        if w == "moves":
            self.i += 1
            if self.peek() == "to":
                self.i += 1
                self.take(("the",), "'the' after 'moves to'")
            return "moves " + self.take(_DIRECTIONS, "a direction")
        if w == "stays":
            self.i += 1
            self.take(("still",), "'still' after 'stays'")
            return "stays still"
        if w in ("bounces", "grows", "shrinks"):
            self.i += 1
            return w
        return "stays still"

    def parse(self) -> Scene:
        unknown = sorted(set(self.words) - set(vocabulary()))
        if unknown:
            raise _error(f"unknown word(s) {', '.join(map(repr, unknown))} in prompt {self.prompt!r}")
        if not self.words:
            raise _error("empty prompt")
        objects = []
        while True:
            article = self.take(ARTICLES, "an object ('a', 'an' or 'the')")
            color = self.take(COLORS, "an object colour")
            shape = self.take(SHAPES, "a shape")
            objects.append(ObjectSpec(color, shape, self.motion(), ref=article == "the"))
            if self.peek() == "and":
                self.i += 1
                continue
            if self.peek() in ARTICLES:
                continue
            break
        background, given = DEFAULT_BACKGROUND, False
        if self.peek() == "on":
            self.i += 1
            if self.peek() in ("a", "the"):
                self.i += 1
            background, given = self.take(BACKGROUNDS, "a background colour"), True
            self.take(("background",), "'background'")
        if self.peek() is not None:
            raise _error(f"in prompt {self.prompt!r}: unexpected word {self.peek()!r} at word {self.i + 1}; "
                         f"a prompt has at most {MAX_OBJECTS} objects and ends with the background")
        return Scene(tuple(objects), background, given)


def parse(prompt: Union[str, Scene]) -> Scene:
    """Parse a prompt into a Scene; raises PromptError (with the grammar) on anything else."""
    if isinstance(prompt, Scene):
        return prompt
    return _Parser(prompt).parse()


# ---------------------------------------------------------------------------------------------
# Sampling

def _rng(rng: Union[np.random.Generator, int, None]) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


_N_OBJECT_PROBS = (0.4, 0.35, 0.25)
_BG_PROBS = {"black": 0.5, "gray": 0.25, "white": 0.25}


def sample_scene(rng: Union[np.random.Generator, int, None] = None, num_objects: int | None = None) -> Scene:
    """A random scene: 1-3 objects with distinct colours (40/35/25 %), uniform shapes and motions,
    background black 50 % (named in the text half of the time), gray 25 %, white 25 %."""
    rng = _rng(rng)
    n = int(rng.choice(3, p=_N_OBJECT_PROBS)) + 1 if num_objects is None else int(num_objects)
    if not 1 <= n <= MAX_OBJECTS:
        raise PromptError(f"num_objects must be 1..{MAX_OBJECTS}, got {num_objects}")
    bg_names = list(_BG_PROBS)
    background = bg_names[int(rng.choice(len(bg_names), p=list(_BG_PROBS.values())))]
    given = background != "black" or bool(rng.random() < 0.5)
    colors = [c for c in COLORS if COLORS[c] != BACKGROUNDS[background]]
    picked = rng.choice(len(colors), size=n, replace=False)
    objects = tuple(ObjectSpec(colors[int(c)], SHAPES[int(rng.integers(len(SHAPES)))],
                               MOTIONS[int(rng.integers(len(MOTIONS)))]) for c in picked)
    return Scene(objects, background, given)


def sample_prompt(rng: Union[np.random.Generator, int, None] = None, num_objects: int | None = None) -> str:
    """Canonical text of `sample_scene(rng)`: deterministic for a given generator state / seed."""
    return sample_scene(rng, num_objects).prompt()


# ---------------------------------------------------------------------------------------------
# Train / held-out split
#
# The unit is the object triple (colour, shape, motion). A triple is held out when
#     (colour index + 3 * shape index + motion index) % 8 == 0
# (indices into COLORS, SHAPES, MOTIONS). That is 24 of the 192 triples, laid out as a Latin square:
# every colour+shape pair has exactly one held-out motion, every shape+motion pair exactly one held-out
# colour, every colour+motion pair at most one held-out shape. So every word and every pair of
# attributes is seen in training, but a held-out prompt asks for an object the model never saw.
# A prompt is held out when any of its objects is a held-out triple; training uses only the others.

_COLOR_INDEX = {c: i for i, c in enumerate(COLORS)}
_SHAPE_INDEX = {s: i for i, s in enumerate(SHAPES)}
_MOTION_INDEX = {m: i for i, m in enumerate(MOTIONS)}


def is_held_out_triple(color: str, shape: str, motion: str) -> bool:
    """True when the (colour, shape, motion) combination is reserved for evaluation."""
    return (_COLOR_INDEX[color] + 3 * _SHAPE_INDEX[shape] + _MOTION_INDEX[motion]) % 8 == 0


def held_out_triples() -> list[tuple[str, str, str]]:
    """The 24 held-out (colour, shape, motion) triples, in a fixed order."""
    return [(c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS if is_held_out_triple(c, s, m)]


def is_held_out(prompt: Union[str, Scene]) -> bool:
    """True when any object of the prompt is a held-out triple (never seen in training)."""
    scene = parse(prompt)
    return any(is_held_out_triple(o.color, o.shape, o.motion) for o in scene.objects)


def sample_train_prompt(rng: Union[np.random.Generator, int, None] = None, num_objects: int | None = None) -> str:
    """A random training prompt: `sample_prompt` redrawn until no object is a held-out triple."""
    rng = _rng(rng)
    while True:
        scene = sample_scene(rng, num_objects)
        if not is_held_out(scene):
            return scene.prompt()


def train_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` distinct training prompts, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        p = sample_train_prompt(rng)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


class _SplitMix:
    """A tiny fixed pseudo-random sequence (splitmix64), so the held-out list never depends on the
    numpy version."""

    def __init__(self, seed: int):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def below(self, n: int) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return (z ^ (z >> 31)) % n


def held_out_prompts() -> list[str]:
    """The fixed evaluation set: 72 prompts, three per held-out triple (alone, with one and with two
    training objects), backgrounds cycling black (named or not) / gray / white."""
    mix = _SplitMix(20240531)
    out: list[str] = []
    for t, (color, shape, motion) in enumerate(held_out_triples()):
        for n in (1, 2, 3):
            background = ("black", "gray", "white", "black")[(t + n) % 4]
            if COLORS[color] == BACKGROUNDS[background]:
                background = "gray"
            given = background != "black" or (t + n) % 2 == 0
            objects = [ObjectSpec(color, shape, motion)]
            while len(objects) < n:
                c = list(COLORS)[mix.below(len(COLORS))]
                s, m = SHAPES[mix.below(len(SHAPES))], MOTIONS[mix.below(len(MOTIONS))]
                if (any(o.color == c for o in objects) or COLORS[c] == BACKGROUNDS[background]
                        or is_held_out_triple(c, s, m)):
                    continue
                objects.insert(mix.below(len(objects) + 1), ObjectSpec(c, s, m))
            out.append(Scene(tuple(objects), background, given).prompt())
    return out
