"""Prompt-adherence scorer of the synthetic world: clip + prompt (or shot list) -> per-criterion scores.

It must judge clips of a small, imperfect generative model, so it measures what the prompt asks with
tolerant, explainable rules rather than comparing pixels with a ground-truth render:

1. The clip is box-downsampled to a working size (shorter side about 64 pixels).
2. Every pixel gets the nearest palette colour (object + background colours) when it is clearly
   nearer to it than to any other (distance < 0.6 x the second nearest and < 110 in RGB); blurred
   edges and odd colours stay unlabelled.
3. Per object colour, 4-connected components per frame; an object is the largest component of its
   colour (several objects of one colour are matched to components by shape).
4. Shape from two features of a soft mask around the component (alpha of the observed object colour
   over the observed local background): mass / (soft width x soft height) (circle 0.81, square 0.98,
   triangle 0.65 as measured) and bottom-minus-top mass asymmetry (triangle 0.4, others 0); nearest prototype wins.
5. Motion from the centroid / area track against the rules of the renderer (see `vidrt.world.render`).

Criteria, each in [0, 1] (None when it does not apply):
- presence:   per object, fraction of frames where an object of its colour is found; mean over objects
- shape:      per object, fraction of its (large enough) detections classified as its shape
- motion:     per object, how well its track fits its motion (direction, extent, monotonic progress)
- background: fraction of frames whose dominant background colour is the asked one
- temporal:   per object, 1 - (rate of position jumps, size jumps, appearing/disappearing between
              consecutive frames), 1 up to a 2 % rate, 0 from a 20 % rate; mean over objects, times
              the same measure of background-colour changes
- continuity: (shot lists) a referenced object starts its shot where, and as large as, it ended before
- identity:   (shot lists) a referenced object is the same object in its later shot: per reference, the
              fraction of the shot's frames showing an object of its colour x the fraction of those
              detections with its shape x its size at the start of the shot against the end of its last
              shot (1 within 1.3x, 0 from 2x). Position is continuity's business, so a hard cut that moves
              the object keeps its identity; a shot that forgets it, recolours it or redraws it as another
              shape does not.
- clean:      nothing the prompt did not ask for: per frame, the area of object-coloured components beyond
              the asked objects (every colour's components, less the largest one per asked object of that
              colour), 1 up to 0.5 % of the frame, 0 from 6 % (one extra object of the usual size: ~3 %,
              about 0.5); mean over frames. Without it a frame splattered with blobs of every colour scored
              full presence whenever one blob had the asked colour.
adherence = geometric mean of the criteria that apply, each floored at 0.05 (a single failed
criterion caps adherence at about 0.55, two at about 0.3).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

from vidrt.errors import PromptError, ShapeError
from vidrt.world.grammar import BACKGROUNDS, COLORS, MOTIONS, SHAPES, Scene, parse
from vidrt.world.render import BOUNCE_HEIGHT, GROWTH, TRAVEL, bounce_count, motion_amount
from vidrt.world.shots import Shot, parse_shots

__all__ = ["Score", "ObjectScore", "score", "mean_scores", "transition_faults", "WORK_SIZE"]

WORK_SIZE = 64
_FLOOR = 0.05
CRITERIA = ("presence", "shape", "motion", "background", "temporal", "continuity", "identity", "clean")  # see the docstring
_GLITCHES_OK, _GLITCHES_ZERO = 0.02, 0.2   # temporal: bad-transition rate scoring 1 / 0
_CLUTTER_OK, _CLUTTER_ZERO = 0.005, 0.06    # clean: share of the frame covered by unasked objects scoring 1 / 0
_RATIO, _ABS = 0.8, 110.0
_SIZE_CHANGE = (math.log(1.3), math.log(2.0))  # continuity / identity: |log area ratio| across a cut scoring 1 / 0
_PALETTE_NAMES = list(COLORS) + [b for b in BACKGROUNDS if b not in COLORS]
_PALETTE = np.array([COLORS.get(n, BACKGROUNDS.get(n)) for n in _PALETTE_NAMES], dtype=np.float32)
_BG_INDEX = [_PALETTE_NAMES.index(b) for b in BACKGROUNDS]
# (fill, asymmetry) of each shape as measured (ideal: pi/4, 1, 1/2 and 0, 0, 1/2; the 3x3 smoothing and
# blur move them a little), and the spread allowed around them.
_SHAPE_PROTOS = {"circle": (0.81, 0.0), "square": (0.98, 0.0), "triangle": (0.65, 0.4)}
_SHAPE_SCALE = (0.08, 0.12)


def _ramp(v: float, lo: float, hi: float) -> float:
    return float(np.clip((v - lo) / (hi - lo), 0.0, 1.0))


@dataclass
class ObjectScore:
    """Scores of one object of one shot, and what the scorer saw."""
    name: str
    presence: float
    shape: float
    motion: Optional[float]
    temporal: Optional[float]
    seen_shape: Optional[str]
    seen_motion: Optional[str]
    motion_fits: Optional[dict] = None   # fit of the track to every motion of the grammar


@dataclass
class Score:
    """Per-criterion scores in [0, 1] (None: not applicable) and their geometric mean `adherence`."""
    adherence: float
    presence: float
    shape: float
    background: float
    motion: Optional[float] = None
    temporal: Optional[float] = None
    continuity: Optional[float] = None
    identity: Optional[float] = None
    clean: Optional[float] = None
    objects: list[ObjectScore] = field(default_factory=list)
    shots: list["Score"] = field(default_factory=list)

    @property
    def criteria(self) -> dict[str, float]:
        return {n: getattr(self, n) for n in CRITERIA if getattr(self, n) is not None}

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Image analysis

def _prepare(frames) -> np.ndarray:
    """uint8 (T,H,W,3) / (H,W,3), or float in [0, 1] -> float32 (T,h,w,3) in [0,255] at working size."""
    x = np.asarray(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[:3]) < 1:
        raise ShapeError(f"frames must be (T, H, W, 3) (or one (H, W, 3) image), got shape {x.shape}")
    x = x.astype(np.float32) * (255.0 if x.dtype.kind == "f" and x.max() <= 1.0 else 1.0)
    t, h, w, _ = x.shape
    k = min(h, w) // WORK_SIZE
    if k >= 2:
        h2, w2 = h // k, w // k
        x = x[:, :h2 * k, :w2 * k].reshape(t, h2, k, w2, k, 3).mean(axis=(2, 4))
    return x


def _classify(x: np.ndarray) -> np.ndarray:
    """Palette label per pixel (index into _PALETTE_NAMES), -1 where no colour is clearly nearest."""
    d2 = (x * x).sum(-1, keepdims=True) - 2.0 * (x @ _PALETTE.T) + (_PALETTE * _PALETTE).sum(-1)
    d = np.sqrt(np.maximum(d2, 0.0))
    part = np.partition(d, 1, axis=-1)
    d1, d2 = part[..., 0], part[..., 1]
    label = d.argmin(-1)
    return np.where((d1 < _RATIO * d2) & (d1 < _ABS), label, -1)


def _components(mask: np.ndarray) -> np.ndarray:
    """4-connected component labels of a (T,h,w) bool mask (0 = background); label = a pixel index+1."""
    t, h, w = mask.shape
    lab = np.where(mask, np.arange(1, t * h * w + 1, dtype=np.int64).reshape(t, h, w), 0)
    while True:
        new = lab.copy()
        np.maximum(new[:, 1:], lab[:, :-1], out=new[:, 1:])
        np.maximum(new[:, :-1], lab[:, 1:], out=new[:, :-1])
        np.maximum(new[:, :, 1:], lab[:, :, :-1], out=new[:, :, 1:])
        np.maximum(new[:, :, :-1], lab[:, :, 1:], out=new[:, :, :-1])
        new *= mask
        flat = new.reshape(-1)
        jumped = np.where(new > 0, flat[np.maximum(new, 1) - 1], 0)  # pointer jumping: adopt my label's label
        np.maximum(new, jumped, out=new)
        if np.array_equal(new, lab):
            return lab
        lab = new


@dataclass
class _Blob:
    area: float
    cx: float
    cy: float
    shape: Optional[str]
    shape_cost: dict


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 box mean of a 2D array (edges replicated)."""
    p = np.pad(a, 1, mode="edge")
    rows = p[:-2] + p[1:-1] + p[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 9.0


def _blob(img: np.ndarray, labels: np.ndarray, ys: np.ndarray, xs: np.ndarray, color_index: int,
          min_shape_area: float) -> _Blob:
    """Features of one component. Shape features use a soft mask (alpha of the observed object colour
    over the observed local background), so blur and colour shifts barely move them."""
    area = float(len(xs))
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    h, w = labels.shape
    size = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    pad = max(3, int(0.5 * size))
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    win, lab = img[y0:y1, x0:x1], labels[y0:y1, x0:x1]
    ring = np.concatenate([win[0], win[-1], win[:, 0], win[:, -1]])
    bg = np.median(ring, axis=0)
    pix = img[ys, xs]
    far = np.linalg.norm(pix - bg, axis=1)
    obj = np.median(pix[far >= np.percentile(far, 75)], axis=0)   # the object's core colour, not its edges
    axis = obj - bg
    norm = float(axis @ axis)
    shape, cost = None, {s: math.inf for s in _SHAPE_PROTOS}
    if norm > 1e-6 and area >= min_shape_area:
        alpha = _box3((win - bg) @ axis / norm)   # 3x3 mean: keeps straight edges, divides noise by 3
        np.clip(alpha, 0.0, 1.0, out=alpha)
        alpha[alpha < 0.1] = 0.0   # noise floor; the tail mass it drops about cancels in mass / (w h)
        other = (lab >= 0) & (lab != color_index) & (lab < len(COLORS))   # pixels of other objects
        alpha[other] = 0.0
        col, row = alpha.max(axis=0), alpha.max(axis=1)
        bw, bh, mass = float(col.sum()), float(row.sum()), float(alpha.sum())
        rows = np.nonzero(row >= 0.5)[0]
        if bw > 0 and bh > 0 and mass > 0 and len(rows):
            fill = mass / (bw * bh)
            mid = (rows[0] + rows[-1] + 1) / 2.0
            r = np.arange(alpha.shape[0]) + 0.5
            top = float(alpha[r < mid].sum()) + 0.5 * float(alpha[r == mid].sum())
            asym = (mass - 2 * top) / mass
            cost = {s: ((fill - f) / _SHAPE_SCALE[0]) ** 2 + ((asym - a) / _SHAPE_SCALE[1]) ** 2
                    for s, (f, a) in _SHAPE_PROTOS.items()}
            shape = min(cost, key=cost.get)
    return _Blob(area, cx, cy, shape, cost)


class _Analysis:
    """Labels and per-colour components of one clip at working size."""

    def __init__(self, x: np.ndarray):
        self.t, self.h, self.w, _ = x.shape
        self.m = min(self.h, self.w)
        self.x = x
        self.labels = _classify(x)
        self.min_area = max(4.0, 0.3 * math.pi * (0.05 * self.m) ** 2)
        self.min_shape_area = max(12.0, 0.6 * math.pi * (0.05 * self.m) ** 2)
        self._cc: dict[str, np.ndarray] = {}
        self._big_memo: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def background(self) -> list[Optional[str]]:
        counts = np.stack([(self.labels == i).sum(axis=(1, 2)) for i in _BG_INDEX], axis=1)
        names = list(BACKGROUNDS)
        return [names[int(c.argmax())] if c.max() > 0 else None for c in counts]

    def _big(self, color: str, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Component labels of `color` in `frame`, and the ids and areas of those >= min_area, largest first
        (memoised: the tracks and the clean criterion both ask)."""
        key = (color, frame)
        if key not in self._big_memo:
            if color not in self._cc:
                self._cc[color] = _components(self.labels == _PALETTE_NAMES.index(color))
            lab = self._cc[color][frame]
            ids, areas = np.unique(lab[lab > 0], return_counts=True)
            big = areas >= self.min_area
            order = np.argsort(-areas[big], kind="stable")
            self._big_memo[key] = (lab, ids[big][order], areas[big][order])
        return self._big_memo[key]

    def blobs(self, color: str, frame: int, count: int) -> list[_Blob]:
        """The `count` largest components of `color` in `frame` (area >= min_area)."""
        ci = _PALETTE_NAMES.index(color)
        lab, ids, _ = self._big(color, frame)
        keep = ids[:count]
        out = []
        for i in keep:
            ys, xs = np.nonzero(lab == i)
            out.append(_blob(self.x[frame], self.labels[frame], ys, xs, ci, self.min_shape_area))
        return out


    def clutter(self, frame: int, asked: dict[str, int], background: Optional[str]) -> float:
        """Share of `frame` covered by object-coloured components (>= min_area) beyond the largest
        ``asked[colour]`` of each colour; the frame's background colour does not count."""
        area = 0
        for color in COLORS:
            if color == background:
                continue
            _, _, areas = self._big(color, frame)
            area += int(areas[asked.get(color, 0):].sum())
        return area / float(self.h * self.w)


# ---------------------------------------------------------------------------------------------
# Tracks and their scores

@dataclass
class _Track:
    present: np.ndarray   # (T,) bool
    x: np.ndarray         # centroid / width
    y: np.ndarray         # centroid / height
    area: np.ndarray      # pixels
    shapes: list          # seen shape per frame (None: absent or too small)


def _tracks(an: _Analysis, scene: Scene, frames: range) -> list[_Track]:
    n = len(frames)
    tracks = [_Track(np.zeros(n, bool), np.zeros(n), np.zeros(n), np.zeros(n), [None] * n) for _ in scene.objects]
    by_color: dict[str, list[int]] = {}
    for j, o in enumerate(scene.objects):
        by_color.setdefault(o.color, []).append(j)
    for color, objs in by_color.items():
        for i, f in enumerate(frames):
            blobs = an.blobs(color, f, len(objs))
            if len(objs) == 1:
                pairs = [(objs[0], blobs[0])] if blobs else []
            else:  # several objects of one colour: match blobs to objects by shape
                best, best_cost = [], math.inf
                for perm in itertools.permutations(objs, len(blobs)):
                    cost = sum(b.shape_cost[scene.objects[j].shape] for j, b in zip(perm, blobs))
                    if cost < best_cost:
                        best, best_cost = list(zip(perm, blobs)), cost
                pairs = best
            for j, b in pairs:
                tr = tracks[j]
                tr.present[i] = True
                tr.x[i], tr.y[i], tr.area[i] = b.cx / an.w, b.cy / an.h, b.area
                tr.shapes[i] = b.shape
    return tracks


def _corr(t: np.ndarray, v: np.ndarray) -> float:
    if len(t) < 3 or v.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(t, v)[0, 1])


def _motion_fits(tr: _Track, n: int, fps: float, h: int, w: int) -> dict[str, float]:
    """Fit in [0, 1] of the track to each motion, for a shot of n frames."""
    idx = np.nonzero(tr.present)[0]
    if len(idx) < max(2, 0.3 * n):
        return {m: 0.0 for m in MOTIONS}
    a = motion_amount(n, fps)
    e_move, e_hop, e_grow = TRAVEL * a, BOUNCE_HEIGHT * a, 2 * math.log(1 + (GROWTH - 1) * a)
    x, y, la = tr.x[idx], tr.y[idx], np.log(tr.area[idx])
    k = max(1, int(round(0.1 * len(idx))))
    dx, dy, dla = x[-k:].mean() - x[:k].mean(), y[-k:].mean() - y[:k].mean(), la[-k:].mean() - la[:k].mean()
    t = idx.astype(np.float64)
    fits = {}
    for motion, axis, sign in (("moves left", 0, -1), ("moves right", 0, 1), ("moves up", 1, -1),
                               ("moves down", 1, 1)):
        d = sign * (dx, dy)[axis]
        perp = abs((dy, dx)[axis])
        corr = _corr(t, sign * (x, y)[axis])
        fits[motion] = (_ramp(d, 0.2 * e_move, 0.5 * e_move) * _ramp(corr, 0.3, 0.8)
                        * (1 - _ramp(perp / max(d, 1e-6), 0.6, 1.2)))
    scale = min(h, w)
    spread = max(np.percentile(x, 90) - np.percentile(x, 10), 0) * w / scale
    spread = max(spread, (np.percentile(y, 90) - np.percentile(y, 10)) * h / scale)
    fits["stays still"] = (1 - _ramp(spread, 0.03, 0.08)) * (1 - _ramp(abs(dla), 0.2, 0.4))
    corr_a = _corr(t, la)
    fits["grows"] = _ramp(dla, 0.25 * e_grow, 0.6 * e_grow) * _ramp(corr_a, 0.3, 0.8)
    fits["shrinks"] = _ramp(-dla, 0.25 * e_grow, 0.6 * e_grow) * _ramp(-corr_a, 0.3, 0.8)
    # largest hop: a frame that is higher (smaller y) than some earlier and some later frame
    hop = float(np.minimum(np.maximum.accumulate(y) - y, np.maximum.accumulate(y[::-1])[::-1] - y).max())
    steps = np.diff(y)
    steps = steps[np.abs(steps) > 0.01]
    reversals = int((np.diff(np.sign(steps)) != 0).sum()) if len(steps) > 1 else 0
    expected_rev = 2 * bounce_count(n, fps) - 1
    fits["bounces"] = (_ramp(hop, 0.3 * e_hop, 0.6 * e_hop) * (1 - _ramp(abs(dx), 0.1, 0.2))
                       * (1 - _ramp(reversals - expected_rev, 1, 4)))
    return fits


def _max_step(motion: str, n: int, fps: float, h: int, w: int) -> float:
    """Largest plausible centroid step per frame (fraction of min(h, w)) for an object's motion."""
    a, m = motion_amount(n, fps), min(h, w)
    v = 0.0
    if n > 1:
        if motion in ("moves left", "moves right"):
            v = TRAVEL * a * w / m / (n - 1)
        elif motion in ("moves up", "moves down"):
            v = TRAVEL * a * h / m / (n - 1)
        elif motion == "bounces":
            v = 4 * BOUNCE_HEIGHT * a * h / m / ((n - 1) / bounce_count(n, fps))
    return max(0.08, 2.0 * v)


def _transition_faults(tr: _Track, max_step: float, h: int, w: int) -> dict[str, np.ndarray]:
    """Per transition between consecutive frames (T-1,): the object appears or vanishes, its centroid jumps further
    than its motion allows, its area changes by more than 1.5x."""
    p = tr.present
    both = p[1:] & p[:-1]
    step = np.hypot(np.diff(tr.x) * w, np.diff(tr.y) * h) / min(h, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        size_jump = np.abs(np.diff(np.log(np.maximum(tr.area, 1e-9))))
    return {"toggle": p[1:] != p[:-1], "position_jump": both & (step > max_step),
            "size_jump": both & (size_jump > math.log(1.5))}


def _temporal_track(tr: _Track, max_step: float, h: int, w: int) -> Optional[float]:
    if not tr.present.any() or len(tr.present) < 2:
        return None
    f = _transition_faults(tr, max_step, h, w)
    bad = f["toggle"] | f["position_jump"] | f["size_jump"]
    return 1.0 - _ramp(float(bad.mean()), _GLITCHES_OK, _GLITCHES_ZERO)


def transition_faults(frames, prompt: Union[str, Scene], fps: float = 16) -> list[Optional[dict[str, np.ndarray]]]:
    """What the temporal criterion counts, per object of a one-shot prompt: boolean arrays over the clip's T-1
    frame transitions (``toggle``, ``position_jump``, ``size_jump``); None for an object never found."""
    if not isinstance(prompt, (str, Scene)):
        raise PromptError(f"transition_faults takes one shot's prompt (a string or Scene), got "
                          f"{type(prompt).__name__}; for a shot list, pass each shot's frames with its own prompt")
    x = _prepare(frames)
    an = _Analysis(x)
    scene = parse(prompt)
    out: list[Optional[dict[str, np.ndarray]]] = []
    for obj, tr in zip(scene.objects, _tracks(an, scene, range(an.t))):
        present = tr.present.any() and an.t > 1
        out.append(_transition_faults(tr, _max_step(obj.motion, an.t, fps, an.h, an.w), an.h, an.w)
                   if present else None)
    return out


def _adherence(criteria: dict[str, float]) -> float:
    vals = [max(_FLOOR, v) for v in criteria.values()]
    return float(math.exp(sum(map(math.log, vals)) / len(vals)))


def _score_shot(an: _Analysis, scene: Scene, background: str, frames: range, fps: float,
                bg_seen: list) -> tuple[Score, list[_Track]]:
    n = len(frames)
    tracks = _tracks(an, scene, frames)
    objects = []
    for obj, tr in zip(scene.objects, tracks):
        presence = float(tr.present.mean())
        seen = [s for s in tr.shapes if s is not None]
        if seen:
            shape_score = sum(s == obj.shape for s in seen) / len(seen)
            seen_shape = max(SHAPES, key=seen.count)
        else:
            shape_score, seen_shape = (0.0, None)
        motion = seen_motion = temporal = fits = None
        if n > 1:
            fits = _motion_fits(tr, n, fps, an.h, an.w)
            motion = fits[obj.motion]
            best = max(fits, key=fits.get)
            seen_motion = best if fits[best] >= 0.3 else None
            temporal = _temporal_track(tr, _max_step(obj.motion, n, fps, an.h, an.w), an.h, an.w)
        objects.append(ObjectScore(obj.name, presence, float(shape_score), motion, temporal, seen_shape,
                                   seen_motion, fits))
    bgs = [bg_seen[f] for f in frames]
    bg_score = sum(b == background for b in bgs) / n
    asked: dict[str, int] = {}
    for o in scene.objects:
        asked[o.color] = asked.get(o.color, 0) + 1
    clean = np.mean([1.0 - _ramp(an.clutter(f, asked, bg_seen[f]), _CLUTTER_OK, _CLUTTER_ZERO) for f in frames])
    crit = {"presence": float(np.mean([o.presence for o in objects])),
            "shape": float(np.mean([o.shape for o in objects])),
            "background": float(bg_score), "clean": float(clean)}
    if n > 1:
        crit["motion"] = float(np.mean([o.motion for o in objects]))
        object_parts = [o.temporal for o in objects if o.temporal is not None]
        bg_changes = sum(a != b for a, b in zip(bgs[1:], bgs[:-1])) / (n - 1)
        bg_stable = 1.0 - _ramp(bg_changes, _GLITCHES_OK, _GLITCHES_ZERO)
        crit["temporal"] = float(np.mean(object_parts)) * bg_stable if object_parts else bg_stable
    return Score(_adherence(crit), **crit, objects=objects), tracks


def _references(shots: list[Shot], tracks: list[list[_Track]]):
    """(object, its track in the referring shot, its track in the last shot that showed it) per reference."""
    last: dict[int, tuple[int, int]] = {}   # object id -> (shot index, position in that shot)
    for k, shot in enumerate(shots):
        for j, (obj, oid) in enumerate(zip(shot.scene.objects, shot.object_ids)):
            if obj.ref and oid in last:
                pk, pj = last[oid]
                yield obj, tracks[k][j], tracks[pk][pj]
            last[oid] = (k, j)


def _continuity(shots: list[Shot], tracks: list[list[_Track]], h: int, w: int) -> Optional[float]:
    """Referenced objects must start a shot where, and as large as, they ended their last shot."""
    scores = []
    m = min(h, w)
    for _, after, before in _references(shots, tracks):
        ib, ia = np.nonzero(before.present)[0], np.nonzero(after.present)[0]
        if len(ib) == 0 or len(ia) == 0:
            scores.append(0.0)
            continue
        b, a = ib[-1], ia[0]
        jump = math.hypot((after.x[a] - before.x[b]) * w, (after.y[a] - before.y[b]) * h) / m
        size = abs(math.log(after.area[a] / before.area[b]))
        scores.append((1 - _ramp(jump, 0.08, 0.2)) * (1 - _ramp(size, *_SIZE_CHANGE)))
    return float(np.mean(scores)) if scores else None


def _edge_area(tr: _Track, end: bool) -> Optional[float]:
    """Median area of the track's first (end=False) or last quarter of detections (at least one)."""
    idx = np.nonzero(tr.present)[0]
    if len(idx) == 0:
        return None
    k = max(1, len(idx) // 4)
    return float(np.median(tr.area[idx[-k:] if end else idx[:k]]))


def _identity(shots: list[Shot], tracks: list[list[_Track]]) -> Optional[float]:
    """Referenced objects keep colour, shape and size in their later shots (see the module docstring)."""
    scores = []
    for obj, tr, earlier in _references(shots, tracks):
        seen = [s for s in tr.shapes if s is not None]
        before, after = _edge_area(earlier, end=True), _edge_area(tr, end=False)
        if not seen or before is None or after is None:
            scores.append(0.0)
            continue
        same_shape = sum(s == obj.shape for s in seen) / len(seen)
        size = abs(math.log(after / before))
        scores.append(float(tr.present.mean()) * same_shape * (1 - _ramp(size, *_SIZE_CHANGE)))
    return float(np.mean(scores)) if scores else None


def mean_scores(scores: Sequence[Score]) -> dict[str, Optional[float]]:
    """Adherence and each criterion averaged over several clips' scores (None where no clip has the criterion,
    e.g. motion over images)."""
    out: dict[str, Optional[float]] = {}
    for name in ("adherence",) + CRITERIA:
        vals = [getattr(s, name) for s in scores if getattr(s, name) is not None]
        out[name] = float(np.mean(vals)) if vals else None
    return out


def score(frames, prompt: Union[str, Scene, Sequence[Union[str, Scene, Shot]]], fps: float = 16,
          shot_frames: Optional[Sequence[int]] = None) -> Score:
    """Score a clip (uint8 (T,H,W,3), or float in [0,1]) against a prompt, a Scene or a shot list.

    For a shot list, `shot_frames` gives each shot's frame count (default: equal split); the result
    holds per-shot scores in `.shots` and adds the `continuity` criterion.
    """
    x = _prepare(frames)
    an = _Analysis(x)
    bg_seen = an.background()
    if isinstance(prompt, (str, Scene)):
        scene = parse(prompt)
        result, _ = _score_shot(an, scene, scene.background, range(an.t), fps, bg_seen)
        return result
    shots = parse_shots(prompt)
    if shot_frames is None:
        if an.t % len(shots):
            raise ShapeError(f"{an.t} frames do not split evenly into {len(shots)} shots: pass shot_frames")
        shot_frames = [an.t // len(shots)] * len(shots)
    shot_frames = [int(n) for n in shot_frames]
    if len(shot_frames) != len(shots) or sum(shot_frames) != an.t or min(shot_frames) < 1:
        raise ShapeError(f"shot_frames {shot_frames} must give {len(shots)} positive counts summing to the "
                         f"clip's {an.t} frames")
    per_shot, all_tracks, t0 = [], [], 0
    for shot, n in zip(shots, shot_frames):
        s, tr = _score_shot(an, shot.scene, shot.background, range(t0, t0 + n), fps, bg_seen)
        per_shot.append(s)
        all_tracks.append(tr)
        t0 += n
    crit: dict[str, float] = {}
    weights = np.array(shot_frames, dtype=np.float64)
    for name in ("presence", "shape", "background", "motion", "temporal", "clean"):
        vals = [(getattr(s, name), wt) for s, wt in zip(per_shot, weights) if getattr(s, name) is not None]
        if vals:
            crit[name] = float(sum(v * wt for v, wt in vals) / sum(wt for _, wt in vals))
    cont = _continuity(shots, all_tracks, an.h, an.w)
    if cont is not None:
        crit["continuity"] = cont
    ident = _identity(shots, all_tracks)
    if ident is not None:
        crit["identity"] = ident
    return Score(_adherence(crit), **crit, objects=[o for s in per_shot for o in s.objects], shots=per_shot)
