"""Cache policy specs ("teacache", "first_block", "cfg", combined with '+') -> cache objects for one run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from vidrt.caching.step_cache import BlockStackCache, CfgCache, FirstBlockCache, TeaCache
from vidrt.errors import ConfigError

POLICIES = ("teacache", "first_block", "cfg")
DEFAULT_THRESHOLD = {"teacache": 0.15, "first_block": 0.08}


@dataclass
class CachePlan:
    """The caches of one generation: at most one block-stack cache and an optional CFG cache."""

    block: Optional[BlockStackCache] = None
    cfg: Optional[CfgCache] = None

    def reset(self, coefficients: Optional[Sequence[float]] = None) -> None:
        """Every cache starts afresh (a two-expert checkpoint switched experts); ``coefficients``: the new expert's
        TeaCache rescaling."""
        if self.block is not None:
            self.block.reset(coefficients)
        if self.cfg is not None:
            self.cfg.reset()

    def stats(self) -> dict:
        out: dict = {}
        if self.block is not None:
            out[self.block.name] = self.block.stats.as_dict()
        if self.cfg is not None:
            out["cfg"] = self.cfg.stats()
        return out


def parse_policy(spec: Optional[str]) -> list[str]:
    """'teacache+cfg' -> ['teacache', 'cfg']; None / '' / 'none' -> []."""
    if spec is None or spec in ("", "none", "None"):
        return []
    names = [s.strip() for s in spec.split("+") if s.strip()]
    bad = [n for n in names if n not in POLICIES]
    if bad:
        raise ConfigError(f"unknown cache policy {'+'.join(bad)!r}; choose from {', '.join(POLICIES)} "
                          "(combine with '+', e.g. 'teacache+cfg') or None")
    if "teacache" in names and "first_block" in names:
        raise ConfigError("'teacache' and 'first_block' both cache the block stack; pick one (either may add '+cfg')")
    return names


def make_cache(spec, threshold: Optional[float] = None, *, coefficients: Sequence[float] = (1.0, 0.0),
               cfg_interval: int = 2, warmup_steps: int = 1, final_steps: int = 1) -> CachePlan:
    if isinstance(spec, CachePlan):
        return spec
    if isinstance(spec, BlockStackCache):  # a ready cache object (calibration recorders, custom policies)
        return CachePlan(block=spec)
    names = parse_policy(spec)
    plan = CachePlan()
    if threshold is not None and (threshold != threshold or threshold < 0):
        raise ConfigError(f"cache_threshold={threshold}; use a number >= 0 (0 = always compute)")
    for n in names:
        if n == "teacache":
            plan.block = TeaCache(DEFAULT_THRESHOLD[n] if threshold is None else threshold, coefficients,
                                  warmup_steps=warmup_steps, final_steps=final_steps)
        elif n == "first_block":
            plan.block = FirstBlockCache(DEFAULT_THRESHOLD[n] if threshold is None else threshold,
                                         warmup_steps=warmup_steps, final_steps=final_steps)
        elif n == "cfg":
            if int(cfg_interval) < 1:
                raise ConfigError(f"cfg_interval={cfg_interval}; use 1 (always compute) or more")
            plan.cfg = CfgCache(cfg_interval, warmup_steps=warmup_steps, final_steps=final_steps)
    return plan
