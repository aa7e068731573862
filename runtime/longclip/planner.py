"""Per-part latency plans of a stream: each part planned for the cache it will see, corrected by the last parts.

``stream(latency_target=)`` asks the caching scheduler for steps, step cache and CFG mode. A chunk of a causal
model attends to a cache that fills over the first chunks and then stays full, and the machine's speed drifts
while a minute-long clip runs, so one plan made before the first chunk is not enough: this plans every part with
the tokens it will attend to, and scales the cost model by how the finished parts ran against their predictions.
"""
from __future__ import annotations

import logging
from typing import Optional

from vidrt.errors import LatencyError
from vidrt.longclip.kv_cache import KVCacheConfig

logger = logging.getLogger(__name__)

__all__ = ["PartPlanner"]


class PartPlanner:
    """Plans part ``i`` (``plan(i)``) into the stream's shared settings; ``observe(seconds)`` after it ran.

    ``kv``: the causal cache's shape (None for sliding windows or the recompute reference). ``damping``: the share
    of a part's prediction error carried into the cost model's scale (a geometric step; 1 = follow the last part).
    ``headroom``: plans aim this share under the target, since every part must make it and predictions scatter
    a few per cent around the truth (session 15: steady chunks within -8 / +9 % of their prediction).
    """

    def __init__(self, pipe, target_s: float, shape: tuple, *, cfg: bool, default_steps: int, settings,
                 kv: Optional[KVCacheConfig] = None, damping: float = 0.5, headroom: float = 0.05):
        self.pipe, self.target_s, self.shape, self.cfg = pipe, float(target_s), shape, cfg
        self.headroom = headroom
        self.default_steps, self.settings, self.kv, self.damping = default_steps, settings, kv, damping
        self.scale: Optional[float] = None  # cost-model scale learnt from finished parts (None: probe the load)
        self.schedule = None
        self.replans = 0

    def _past(self, index: int) -> dict:
        kv = self.kv
        if kv is None:
            return {}
        seen = min(index, kv.sink_chunks + kv.window_chunks) * kv.chunk_tokens
        commit = min(index, kv.sink_chunks) * kv.chunk_tokens if kv.commit_context == "sinks" else seen
        return {"kv_tokens": seen, "commit_kv_tokens": commit}

    def _schedule(self, index: int):
        kw = dict(cfg=self.cfg, default_steps=self.default_steps, cost_scale=self.scale, **self._past(index))
        try:
            return self.pipe.plan(self.target_s * (1.0 - self.headroom), self.shape, **kw)
        except LatencyError:  # no room to spare: aim at the target itself
            return self.pipe.plan(self.target_s, self.shape, **kw)

    def plan(self, index: int):
        """Plan part ``index``; the first plan raises LatencyError for an impossible target (before any work),
        later ones keep the previous plan when the corrected cost model finds none that fits."""
        try:
            sched = self._schedule(index)
        except LatencyError:
            if self.schedule is None:
                raise
            logger.warning("part %d: no plan fits %.3fs on the corrected cost model (x%.2f); keeping %s", index,
                           self.target_s, self.scale or 1.0, self.schedule.plan.label())
            return self.schedule
        if self.scale is None:  # the probe's view of the machine is where the correction starts
            self.scale = sched.load_factor if sched.load_check == "rescaled" else 1.0
        if self.schedule is not None and sched.plan != self.schedule.plan:
            self.replans += 1
        self.schedule = sched
        p, s = sched.plan, self.settings
        s.steps, s.cache, s.cache_threshold, s.cfg_interval = p.steps, p.cache_spec, p.threshold, p.cfg_interval
        return sched

    def observe(self, seconds: float) -> None:
        """A part planned by the last ``plan`` took ``seconds`` (text encoding excluded)."""
        predicted = self.schedule.predicted_s
        if predicted > 0 and seconds > 0 and self.scale is not None:
            self.scale *= (seconds / predicted) ** self.damping
