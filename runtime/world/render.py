"""Ground-truth renderer of the synthetic world: prompt + size + frame count + fps + seed -> frames.

Geometry (all objects of one size `r` have the same area, pi * r^2, whatever their shape):
circle of radius r; axis-aligned square of half side 0.886 r; equilateral triangle, apex up, centred
on its centroid. Edges are anti-aliased with analytic coverage from the signed distance
(alpha = clamp(0.5 - distance_in_pixels, 0, 1)).

Motion: a motion covers its full extent over a shot of one second or more (frames - 1 >= fps) and a
proportional part of it in shorter shots; a 1-frame render is a still image.
- moves left/right/up/down: 0.45 of the frame width/height, at constant speed;
- bounces: parabolic hops 0.3 of the frame height high, one hop per second (at least one);
- grows / shrinks: the linear size is multiplied / divided by 1.7, at a constant exponential rate;
- stays still: nothing moves.
Sizes (r) lie in [0.05, 0.3] x min(height, width); start sizes and positions come from the seed, chosen
so the whole motion stays inside the frame and objects do not overlap (when the frame has room).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from vidrt.errors import ShapeError
from vidrt.world.grammar import BACKGROUNDS, COLORS, Scene, parse

__all__ = ["render", "TRAVEL", "GROWTH", "BOUNCE_HEIGHT", "FULL_MOTION_SECONDS", "SIZE_RANGE",
           "motion_amount", "bounce_count"]

TRAVEL = 0.45                 # fraction of the frame axis a "moves ..." object covers per shot
GROWTH = 1.7                  # linear size factor of "grows" / "shrinks" per shot
BOUNCE_HEIGHT = 0.3           # fraction of the frame height of one hop
BOUNCE_PERIOD_S = 1.0         # seconds per hop
FULL_MOTION_SECONDS = 1.0     # a shot this long (or longer) shows the full motion
SIZE_RANGE = (0.05, 0.3)      # r as a fraction of min(height, width)
_MEAN_SIZE = (0.085, 0.13)    # preferred geometric-mean size over an object's life
_MIN_GAP = 0.04               # wanted clearance between objects, fraction of min(height, width)

# Half extents of each shape in units of r: (left, right, up, down).
_SQUARE_HALF = math.sqrt(math.pi) / 2
_TRI_INRADIUS = math.sqrt(math.pi / (3 * math.sqrt(3)))
EXTENTS = {
    "circle": (1.0, 1.0, 1.0, 1.0),
    "square": (_SQUARE_HALF,) * 4,
    "triangle": (math.sqrt(3) * _TRI_INRADIUS, math.sqrt(3) * _TRI_INRADIUS, 2 * _TRI_INRADIUS, _TRI_INRADIUS),
}


def motion_amount(num_frames: int, fps: float) -> float:
    """Fraction of the full motion a shot of `num_frames` frames at `fps` shows (0 for an image)."""
    return min(1.0, max(0, num_frames - 1) / fps / FULL_MOTION_SECONDS)


def bounce_count(num_frames: int, fps: float) -> int:
    """Number of hops of a bouncing object in a shot."""
    return max(1, int(round(max(0, num_frames - 1) / fps / BOUNCE_PERIOD_S)))


@dataclass
class _Track:
    """Per-frame centre (pixels) and size r (pixels) of one object in one shot."""
    x: np.ndarray
    y: np.ndarray
    r: np.ndarray


@dataclass
class _Life:
    """The shots an object appears in, for planning its whole trajectory at once."""
    shape: str
    shots: list  # [(shot index, motion, amount, hops)]


def _profile(life: _Life) -> tuple[np.ndarray, list, list, list]:
    """Cumulative log-size at shot boundaries, and the x / y displacement values an object reaches
    (boundaries and bounce tops), relative to its start, before any scaling."""
    ell = [0.0]
    for _, motion, a, _ in life.shots:
        step = math.log(1 + (GROWTH - 1) * a)
        ell.append(ell[-1] + (step if motion == "grows" else -step if motion == "shrinks" else 0.0))
    x, y = [0.0], [0.0]
    xs, ys = [0.0], [0.0]
    for _, motion, a, _ in life.shots:
        dx = {"moves left": -TRAVEL * a, "moves right": TRAVEL * a}.get(motion, 0.0)
        dy = {"moves up": -TRAVEL * a, "moves down": TRAVEL * a}.get(motion, 0.0)
        if motion == "bounces":
            ys.append(y[-1] - BOUNCE_HEIGHT * a)
        x.append(x[-1] + dx)
        y.append(y[-1] + dy)
        xs.append(x[-1])
        ys.append(y[-1])
    return np.array(ell), x, y, (xs, ys)


def _fit_interval(values: Sequence[float], lo_margin: float, hi_margin: float) -> tuple[float, float, float]:
    """Start interval [lo, hi] for a coordinate in [0, 1] whose offsets are `values`, and the factor
    by which the offsets must shrink to fit (1 when they fit)."""
    vmin, vmax = min(values), max(values)
    room = 1.0 - lo_margin - hi_margin
    scale = 1.0
    if vmax - vmin > room:
        scale = max(room, 0.0) / (vmax - vmin)
    lo, hi = lo_margin - vmin * scale, 1.0 - hi_margin - vmax * scale
    if hi < lo:
        lo = hi = (lo + hi) / 2
    return lo, hi, scale


class _Planner:
    """Chooses every object's start size and position once, over all the shots it appears in."""

    def __init__(self, shots, frames, height, width, fps, seed):
        self.shots, self.frames = shots, list(frames)
        self.h, self.w, self.fps = height, width, fps
        self.m = min(height, width)
        self.rng = np.random.default_rng(seed)
        self.tracks: dict[tuple[int, int], _Track] = {}  # (shot, object id) -> track

    def plan(self) -> list[list[_Track]]:
        lives: dict[int, _Life] = {}
        for k, (scene, ids, _) in enumerate(self.shots):
            n = self.frames[k]
            for obj, oid in zip(scene.objects, ids):
                life = lives.setdefault(oid, _Life(obj.shape, []))
                life.shots.append((k, obj.motion, motion_amount(n, self.fps), bounce_count(n, self.fps)))
        for oid, life in lives.items():
            self._plan_object(oid, life)
        return [[self.tracks[(k, oid)] for oid in ids] for k, (_, ids, _) in enumerate(self.shots)]

    def _plan_object(self, oid: int, life: _Life) -> None:
        rng = self.rng
        ell, x_bound, y_bound, (x_ext, y_ext) = _profile(life)
        lo_r, hi_r = math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1])
        ell_scale = 1.0
        if ell.max() - ell.min() > hi_r - lo_r:
            ell_scale = (hi_r - lo_r) / (ell.max() - ell.min())
        ell = ell * ell_scale
        feas = (lo_r - ell.min(), hi_r - ell.max())
        pref = (math.log(_MEAN_SIZE[0]) - ell.mean(), math.log(_MEAN_SIZE[1]) - ell.mean())
        lo, hi = max(feas[0], pref[0]), min(feas[1], pref[1])
        if lo > hi:
            lo, hi = feas
        log_r0 = rng.uniform(lo, hi) if hi > lo else lo
        r_max = math.exp(log_r0 + ell.max()) * self.m
        el, er, eu, ed = (e * r_max for e in EXTENTS[life.shape])
        x_lo, x_hi, sx = _fit_interval(x_ext, el / self.w, er / self.w)
        y_lo, y_hi, sy = _fit_interval(y_ext, eu / self.h, ed / self.h)

        best, best_gap = None, -math.inf
        for _ in range(60):
            x0, y0 = rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)
            tracks = self._tracks(life, x0, y0, log_r0, ell, x_bound, y_bound, sx, sy)
            gap = self._clearance(life, tracks)
            if gap > best_gap:
                best, best_gap = tracks, gap
            if gap >= _MIN_GAP * self.m:
                break
        for k, track in best.items():
            self.tracks[(k, oid)] = track

    def _tracks(self, life, x0, y0, log_r0, ell, x_bound, y_bound, sx, sy) -> dict[int, _Track]:
        out = {}
        for j, (k, motion, a, hops) in enumerate(life.shots):
            n = self.frames[k]
            u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
            xa, xb = x0 + sx * x_bound[j], x0 + sx * x_bound[j + 1]
            ya, yb = y0 + sy * y_bound[j], y0 + sy * y_bound[j + 1]
            x = xa + (xb - xa) * u
            y = ya + (yb - ya) * u
            if motion == "bounces":
                f = (u * hops) % 1.0
                y = y - sy * BOUNCE_HEIGHT * a * 4 * f * (1 - f)
            lr = log_r0 + ell[j] + (ell[j + 1] - ell[j]) * u
            out[k] = _Track(x * self.w, y * self.h, np.exp(lr) * self.m)
        return out

    def _clearance(self, life, tracks) -> float:
        """Smallest gap (pixels) between this object's circumcircle and the others' in shared frames."""
        gap = math.inf
        for k, t in tracks.items():
            for (k2, _), other in self.tracks.items():
                if k2 != k:
                    continue
                d = np.hypot(t.x - other.x, t.y - other.y) - 1.6 * (t.r + other.r)
                gap = min(gap, float(d.min()))
        return gap


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        a = _SQUARE_HALF * r
        qx, qy = np.abs(dx) - a, np.abs(dy) - a
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0)
    rho = _TRI_INRADIUS * r
    c = math.sqrt(3) / 2
    return np.maximum(np.maximum(dy, -c * dx - 0.5 * dy), c * dx - 0.5 * dy) - rho


def _draw(frame: np.ndarray, shape: str, cx: float, cy: float, r: float, color: np.ndarray) -> None:
    """Composite one anti-aliased shape onto a float frame (H, W, 3) in place."""
    h, w, _ = frame.shape
    ext = 1.6 * r + 1.5
    x0, x1 = max(0, int(cx - ext)), min(w, int(math.ceil(cx + ext)))
    y0, y1 = max(0, int(cy - ext)), min(h, int(math.ceil(cy + ext)))
    if x0 >= x1 or y0 >= y1:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    alpha = np.clip(0.5 - _signed_distance(shape, dx, dy, r), 0.0, 1.0)[..., None]
    region = frame[y0:y1, x0:x1]
    region += alpha * (color - region)


def _check_size(height: int, width: int, num_frames: int, fps: float) -> None:
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or v < 8:
            raise ShapeError(f"{name} must be an integer >= 8 pixels, got {v!r}")
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ShapeError(f"num_frames must be an integer >= 1 (1 = an image), got {num_frames!r}")
    if not fps > 0:
        raise ShapeError(f"fps must be positive, got {fps!r}")


def _render_sequence(shots: Sequence[tuple[Scene, Sequence[int], str]], frames: Sequence[int], height: int,
                     width: int, fps: float, seed: int) -> np.ndarray:
    """Render shots [(scene, object ids, background name)] of frames[k] frames each, objects with the
    same id being one object that continues across shots. Returns uint8 (sum(frames), H, W, 3)."""
    for n in frames:
        _check_size(height, width, n, fps)
    tracks = _Planner(shots, frames, height, width, fps, seed).plan()
    out = np.empty((sum(frames), height, width, 3), dtype=np.uint8)
    t0 = 0
    for (scene, _, background), shot_tracks, n in zip(shots, tracks, frames):
        bg = np.asarray(BACKGROUNDS[background], dtype=np.float32)
        colors = [np.asarray(COLORS[o.color], dtype=np.float32) for o in scene.objects]
        frame = np.empty((height, width, 3), dtype=np.float32)
        for i in range(n):
            frame[:] = bg
            for obj, track, color in zip(scene.objects, shot_tracks, colors):
                _draw(frame, obj.shape, float(track.x[i]), float(track.y[i]), float(track.r[i]), color)
            out[t0 + i] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
        t0 += n
    return out


def render(prompt_or_scene: Union[str, Scene], height: int, width: int, num_frames: int, fps: float = 16,
           seed: int = 0) -> np.ndarray:
    """Render a prompt (or parsed Scene) as uint8 frames (num_frames, height, width, 3).

    Deterministic for a seed; num_frames=1 gives an image; any height, width >= 8 work.
    """
    scene = parse(prompt_or_scene)
    ids = tuple(range(len(scene.objects)))
    return _render_sequence([(scene, ids, scene.background)], [num_frames], height, width, fps, seed)
