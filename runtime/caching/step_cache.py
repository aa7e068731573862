"""Step caches: skip the DiT's block stack on steps where its input barely moved.

Both caches plug into ``WanDiT.forward(step_cache=...)``; the pipeline tells them the step index
(``begin_step``) so warm-up and final steps are always computed. Within one step the first DiT
call decides; later calls of the same step (the unconditional branch when CFG is not batched)
follow that decision, each with its own cached residual.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch


@dataclass
class CacheStats:
    """Block-stack runs computed vs reused, counted per branch (cond / uncond rows of a batch)."""

    computed: dict[str, int] = field(default_factory=lambda: {"cond": 0, "uncond": 0})
    reused: dict[str, int] = field(default_factory=lambda: {"cond": 0, "uncond": 0})

    def count(self, kind: str, branches: Sequence[str]) -> None:
        target = self.computed if kind == "computed" else self.reused
        for b in branches:
            target[b] += 1

    def as_dict(self) -> dict:
        return {"computed": dict(self.computed), "reused": dict(self.reused)}


def rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean |a - b| / mean |b| (the relative L1 change TeaCache accumulates)."""
    return float((a.float() - b.float()).abs().mean() / b.float().abs().mean().clamp_min(1e-12))


class BlockStackCache:
    """Base class: owns step bookkeeping, warm-up/final forcing and per-call residual slots."""

    name = "base"

    def __init__(self, threshold: float, warmup_steps: int = 1, final_steps: int = 1):
        if threshold < 0:
            raise ValueError(f"cache threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)
        self.warmup_steps = int(warmup_steps)
        self.final_steps = int(final_steps)
        self.stats = CacheStats()
        self.branches: list[list[str]] = []  # branch names of the rows of each call in a step
        self._step, self._steps, self._slot = 0, 1, 0
        self._compute = True
        self._residual: dict[str, torch.Tensor] = {}   # branch ('cond' / 'uncond') -> its rows' residual
        self._prev: Optional[torch.Tensor] = None       # the change indicator's last value (subclasses)

    def begin_step(self, index: int, steps: int, branches: Sequence[Sequence[str]] = (("cond",),)) -> None:
        self._step, self._steps, self._slot = index, steps, 0
        self.branches = [list(b) for b in branches]

    def reset(self, coefficients: Optional[Sequence[float]] = None) -> None:
        """Forget every cached residual and indicator, so the next step computes: another model (a two-expert
        checkpoint's other expert) takes over from here. Statistics are kept. ``coefficients``: that model's
        TeaCache rescaling (TeaCache only)."""
        self._residual.clear()
        self._prev = None

    @property
    def forced(self) -> bool:
        return self._step < self.warmup_steps or self._step >= self._steps - self.final_steps

    def _next_slot(self, batch: int) -> tuple[int, list[str]]:
        """(slot index of this DiT call within the step, branch name of each of its batch rows)."""
        slot = self._slot
        self._slot += 1
        names = self.branches[slot] if slot < len(self.branches) else ["cond"] * batch
        rows = names if len(names) == batch else (names * batch)[:batch]
        return slot, rows

    @staticmethod
    def _by_branch(rows: Sequence[str]) -> dict[str, list[int]]:
        """Branch name -> its row indices, in order of first appearance."""
        out: dict[str, list[int]] = {}
        for i, name in enumerate(rows):
            out.setdefault(name, []).append(i)
        return out

    @staticmethod
    def _indicator_rows(branches: dict[str, list[int]]) -> list[int]:
        """Rows the change indicator watches: the conditional branch (present on every step, whether or not
        the CFG cache skips the unconditional one, so consecutive steps stay comparable)."""
        return branches.get("cond") or [i for idx in branches.values() for i in idx]

    def _store(self, branches: dict[str, list[int]], residual: torch.Tensor) -> None:
        for name, idx in branches.items():
            self._residual[name] = residual[idx]

    def _cached(self, branches: dict[str, list[int]], like: torch.Tensor) -> Optional[torch.Tensor]:
        """The stored residual of each row's branch, in the rows' order; None if a branch has none yet."""
        out = torch.empty_like(like)
        for name, idx in branches.items():
            r = self._residual.get(name)
            if r is None or r.shape[0] != len(idx) or r.shape[1:] != like.shape[1:]:
                return None
            out[idx] = r
        return out

    def run_blocks(self, dit, x: torch.Tensor, mod: torch.Tensor, run: Callable) -> torch.Tensor:
        raise NotImplementedError


class TeaCache(BlockStackCache):
    """TeaCache: accumulate the rescaled relative L1 change of block 0's modulated input; while the
    sum stays under the threshold, add the cached residual of the whole stack instead of running it.

    ``coefficients`` (highest degree first) map the input change to the expected output change;
    fitted per model by ``vidrt calibrate`` (identity when the model has no calibration).
    """

    name = "teacache"

    def __init__(self, threshold: float, coefficients: Sequence[float] = (1.0, 0.0), **kw):
        super().__init__(threshold, **kw)
        self.poly = np.poly1d(list(coefficients))
        self._acc = 0.0

    def reset(self, coefficients: Optional[Sequence[float]] = None) -> None:
        super().reset()
        self._acc = 0.0
        if coefficients is not None:
            self.poly = np.poly1d(list(coefficients))

    def run_blocks(self, dit, x, mod, run):
        slot, rows = self._next_slot(x.shape[0])
        branches = self._by_branch(rows)
        names = list(branches)
        if slot == 0:
            inp = dit.blocks[0].modulated_input(x, mod)[self._indicator_rows(branches)]
            if self.forced or self._prev is None or self._prev.shape != inp.shape:
                self._compute, self._acc = True, 0.0
            else:
                self._acc += max(0.0, float(self.poly(rel_l1(inp, self._prev))))
                self._compute = self._acc >= self.threshold
                if self._compute:
                    self._acc = 0.0
            self._prev = inp
        cached = None if self._compute else self._cached(branches, x)
        if cached is not None:
            self.stats.count("reused", names)
            return x + cached
        out = run(x)
        self._store(branches, out - x)
        self.stats.count("computed", names)
        return out


class FirstBlockCache(BlockStackCache):
    """First-block cache: always run block 0; if its residual changed by less than the threshold
    (relative L1) since the last computed step, reuse the cached residual of blocks 1.. instead."""

    name = "first_block"

    def __init__(self, threshold: float, **kw):
        super().__init__(threshold, **kw)

    def run_blocks(self, dit, x, mod, run):
        slot, rows = self._next_slot(x.shape[0])
        branches = self._by_branch(rows)
        names = list(branches)
        x1 = run(x, 0, 1)
        if slot == 0:
            r0 = (x1 - x)[self._indicator_rows(branches)]
            if self.forced or self._prev is None or self._prev.shape != r0.shape:
                self._compute = True
            else:
                self._compute = rel_l1(r0, self._prev) >= self.threshold
            if self._compute:
                self._prev = r0
        cached = None if self._compute else self._cached(branches, x1)
        if cached is not None:
            self.stats.count("reused", names)
            return x1 + cached
        out = run(x1, 1)
        self._store(branches, out - x1)
        self.stats.count("computed", names)
        return out


class CfgCache:
    """CFG cache (FasterCache-style): the unconditional branch runs every ``interval`` steps (and on
    warm-up/final steps); in between, uncond = cond - (cond - uncond) of the last full step."""

    name = "cfg"

    def __init__(self, interval: int = 2, warmup_steps: int = 1, final_steps: int = 1):
        if interval < 1:
            raise ValueError(f"cfg cache interval must be >= 1, got {interval}")
        self.interval, self.warmup_steps, self.final_steps = int(interval), int(warmup_steps), int(final_steps)
        self.delta: Optional[torch.Tensor] = None
        self.computed = 0
        self.reused = 0

    def reset(self) -> None:
        """Forget the last guidance delta (another model takes over): the next guided step runs uncond."""
        self.delta = None

    def compute_uncond(self, index: int, steps: int) -> bool:
        forced = index < self.warmup_steps or index >= steps - self.final_steps
        return forced or self.delta is None or (index - self.warmup_steps) % self.interval == 0

    def record(self, cond: torch.Tensor, uncond: torch.Tensor) -> None:
        self.delta = cond - uncond
        self.computed += 1

    def estimate(self, cond: torch.Tensor) -> torch.Tensor:
        self.reused += 1
        return cond - self.delta

    def stats(self) -> dict:
        return {"uncond_computed": self.computed, "uncond_reused": self.reused}
