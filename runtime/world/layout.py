"""Where the synthetic world's objects are in a frame: the embedded model's layout for regional prompting
(`vidrt.regions`).

A prompt of the grammar splits into its objects, each alone on the scene's background ("a red circle moves
right and a blue square stays still on a gray background" -> "a red circle moves right on a gray background",
"a blue square stays still on a gray background"). In a decoded clean estimate, per frame, blobs are the
8-connected pixels far from the asked background colour (an early estimate's colour wash covering much of the
frame is no blob), matched one-to-one to the prompt's objects by the distance of their mean colour to the
objects' palette colours (per frame the assignment of least total distance; with ``track`` per track of blobs
linked across frames, longest first, each to its nearest free object; pairs too far apart stay unmatched; objects
sharing their colour with another object of the prompt are never matched, since colour cannot tell them apart,
and are left to the full prompt). This is deliberately independent of the scorer (`vidrt.world.score`): a plain
colour segmentation, no shape or motion reading.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidrt.world.grammar import BACKGROUNDS, COLORS, Scene, parse

__all__ = ["WorldLayout", "components"]


def components(fg: torch.Tensor, max_iters: int = 256) -> torch.Tensor:
    """8-connected component labels of boolean masks (N, H, W) -> (N, H, W) int64, 0 = not in ``fg`` (label
    propagation: every pixel takes the largest label among its neighbours until nothing changes, at most
    ``max_iters`` rounds: components longer than that many pixels end split, far beyond any object here)."""
    n, h, w = fg.shape
    keep = fg.float()
    lab = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(n, h, w) * keep
    for _ in range(max_iters):
        new = F.max_pool2d(lab[:, None], 3, 1, 1)[:, 0] * keep
        if torch.equal(new, lab):
            break
        lab = new
    return lab.long()


@dataclass
class WorldLayout:
    """:class:`vidrt.regions.RegionLayout` of the synthetic world's prompts.

    threshold: RGB distance from the background colour above which a pixel belongs to a blob.
    min_area / max_share: a blob's size bounds (pixels; share of the frame).
    max_distance: RGB distance of a blob's mean colour to an object's colour beyond which they are not matched
        (a blob drawn in another colour than every object's is left to the full prompt).
    max_blobs: the largest blobs per frame considered.
    track: on clips, link each frame's blobs to the next frame's (nearest centroids) into tracks and match whole
        tracks to objects by their mean colour, longest first: a small DiT's objects drift in colour from frame to
        frame (a red square drawn purple, then blue), and per-frame matching hands such frames to the wrong
        object's prompt or to none; a track keeps them its object's. Off: every frame matched on its own.
    max_jump: the farthest a blob's centroid moves between frames and stays on its track (share of the frame's
        smaller side).
    """

    threshold: float = 60.0
    min_area: int = 6
    max_share: float = 0.25
    max_distance: float = 150.0
    max_blobs: int = 6
    track: bool = True
    max_jump: float = 0.25

    def split(self, prompt: str) -> list[str]:
        """Each object of a multi-object prompt alone on its background; [] for one object (nothing to bind)."""
        scene = parse(prompt)
        if len(scene.objects) < 2:
            return []
        return [Scene((type(o)(o.color, o.shape, o.motion),), scene.background, True).prompt() for o in scene.objects]

    def backdrop(self, prompt: str) -> tuple[int, int, int]:
        """The scene without its objects: the background colour."""
        return BACKGROUNDS[parse(prompt).background]

    def masks(self, frames: torch.Tensor, prompt: str) -> torch.Tensor:
        scene = parse(prompt)
        t, h, w, _ = frames.shape
        n = len(scene.objects) if len(scene.objects) > 1 else 0
        out = torch.zeros(n, t, h, w, dtype=torch.bool)
        if n == 0:
            return out
        frames = frames.float()
        fg = (frames - torch.tensor(BACKGROUNDS[scene.background], dtype=torch.float32)).norm(dim=-1) > self.threshold
        labels = components(fg)
        colors = [o.color for o in scene.objects]
        matchable = [k for k, c in enumerate(colors) if colors.count(c) == 1]
        if not matchable:
            return out
        palette = torch.tensor([COLORS[colors[k]] for k in matchable], dtype=torch.float32)
        blobs = []       # per frame: [(label, area, (y, x) centroid, mean colour)]
        for f in range(t):
            ids, areas = labels[f].unique(return_counts=True)
            sized = sorted(((int(a), int(i)) for i, a in zip(ids, areas)
                            if i > 0 and self.min_area <= a <= self.max_share * h * w), reverse=True)
            row = []
            for a, i in sized[: self.max_blobs]:
                ys, xs = torch.nonzero(labels[f] == i, as_tuple=True)
                row.append((i, a, (float(ys.float().mean()), float(xs.float().mean())), frames[f, ys, xs].mean(0)))
            blobs.append(row)
        if self.track and t > 1:
            pairs = self._match_tracks(blobs, palette, min(h, w))
        else:
            pairs = []
            for f, row in enumerate(blobs):
                if row:
                    cost = torch.cdist(palette, torch.stack([b[3] for b in row]))     # (objects, blobs)
                    pairs += [(o, f, b) for o, b in _assignment(cost) if cost[o, b] <= self.max_distance]
        for o, f, b in pairs:
            out[matchable[o], f] = labels[f] == blobs[f][b][0]
        return out

    def _match_tracks(self, blobs: list, palette: torch.Tensor, size: int) -> list[tuple[int, int, int]]:
        """(object, frame, blob) pairs: blobs linked frame to frame into tracks (nearest centroids, one-to-one,
        at most ``max_jump`` of the frame apart), each track matched to an object by its mean colour over its
        frames, the longest tracks first."""
        tracks: list[list[tuple[int, int]]] = []    # each: [(frame, blob)]
        open_: dict[int, int] = {}                   # blob of the previous frame -> its track
        for f, row in enumerate(blobs):
            links: dict[int, int] = {}
            if f and blobs[f - 1] and row:
                prev = torch.tensor([b[2] for b in blobs[f - 1]])
                cur = torch.tensor([b[2] for b in row])
                dist = torch.cdist(prev, cur)
                links = {c: open_[p] for p, c in _assignment(dist) if dist[p, c] <= self.max_jump * size}
            open_ = {}
            for b in range(len(row)):
                if b not in links:
                    links[b] = len(tracks)
                    tracks.append([])
                tracks[links[b]].append((f, b))
                open_[b] = links[b]
        if not tracks:
            return []
        colour = torch.stack([sum(blobs[f][b][3] * blobs[f][b][1] for f, b in tr) / sum(blobs[f][b][1] for f, b in tr)
                              for tr in tracks])
        cost = torch.cdist(palette, colour)         # (objects, tracks)
        owner: dict[int, int] = {}                   # track -> object
        used: list[set[int]] = [set() for _ in range(len(palette))]   # frames each object already has
        for k in sorted(range(len(tracks)), key=lambda k: (-len(tracks[k]), k)):
            frames_k = {f for f, _ in tracks[k]}
            ok = [o for o in range(len(palette)) if cost[o, k] <= self.max_distance and not used[o] & frames_k]
            if ok:
                o = min(ok, key=lambda o: float(cost[o, k]))
                owner[k] = o
                used[o] |= frames_k
        return [(o, f, b) for k, o in owner.items() for f, b in tracks[k]]


def _assignment(cost: torch.Tensor) -> list[tuple[int, int]]:
    """The one-to-one (row, column) pairs of least total cost, as many as the smaller side (brute force: at most
    3 objects and a handful of blobs)."""
    rows, cols = cost.shape
    k = min(rows, cols)
    best, best_cost = [], float("inf")
    for rs in itertools.permutations(range(rows), k):
        for cs in itertools.combinations(range(cols), k):
            c = float(sum(cost[r, col] for r, col in zip(rs, cs)))
            if c < best_cost:
                best, best_cost = list(zip(rs, cs)), c
    return best
