"""`vidrt bench --compare old.json new.json`: regressions and improvements beyond run-to-run noise.

Results are matched on (case id, label). A metric regressed when the new runs' p10 lies above the
old runs' p90 (the noise bands do not overlap) *and* the median grew by more than ``min_change``;
an improvement is the mirror image. Everything else is noise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from vidrt.bench import schema
from vidrt.errors import ConfigError

METRICS = ("latency_s", "text_s", "dit_per_step_s", "vae_s")


@dataclass
class Change:
    case: str
    label: str
    metric: str
    old: dict
    new: dict
    verdict: str  # regression | improvement | noise

    @property
    def ratio(self) -> float:
        return self.new["median"] / self.old["median"] if self.old["median"] else float("inf")


@dataclass
class Comparison:
    changes: list[Change] = field(default_factory=list)
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    env_diff: dict[str, tuple] = field(default_factory=dict)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "improvement"]


def verdict(old: dict, new: dict, min_change: float = 0.05) -> str:
    """regression / improvement when the p10-p90 bands are disjoint and the medians differ by > min_change."""
    r = new["median"] / old["median"] if old["median"] else float("inf")
    if new["p10"] > old["p90"] and r > 1 + min_change:
        return "regression"
    if new["p90"] < old["p10"] and r < 1 - min_change:
        return "improvement"
    return "noise"


def _metric(result: dict, name: str) -> Optional[dict]:
    return result.get("latency_s") if name == "latency_s" else (result.get("stages") or {}).get(name)


def _index(doc: dict) -> dict[tuple[str, str], dict]:
    return {(c["id"], r["label"]): r for c in doc["cases"] for r in c["results"]}


def load(path: Union[str, Path]) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--compare: {path} does not exist; pass two files written by `vidrt bench --json`") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--compare: {path} is not JSON ({e}); pass files written by `vidrt bench --json`") from None
    return schema.check(doc, str(path))


def compare(old: dict, new: dict, min_change: float = 0.05) -> Comparison:
    """Every shared (case, label, metric) with its verdict, plus what only one side has."""
    a, b = _index(old), _index(new)
    out = Comparison(only_old=[f"{c} / {l}" for c, l in a if (c, l) not in b],
                     only_new=[f"{c} / {l}" for c, l in b if (c, l) not in a])
    for key in [k for k in a if k in b]:
        for m in METRICS:
            o, n = _metric(a[key], m), _metric(b[key], m)
            if o and n:
                out.changes.append(Change(key[0], key[1], m, o, n, verdict(o, n, min_change)))
    for k in ("device_name", "threads", "torch", "diffusers"):
        if old["environment"].get(k) != new["environment"].get(k):
            out.env_diff[k] = (old["environment"].get(k), new["environment"].get(k))
    return out


def _band(s: dict) -> str:
    return f"{_ms(s['median'])} [{_ms(s['p10'])}-{_ms(s['p90'])}]"


def _ms(x: float) -> str:
    return f"{x * 1000:.1f}ms" if x < 1 else f"{x:.2f}s"


def format_comparison(c: Comparison, show_noise: bool = False) -> str:
    """A plain-text report: regressions first, then improvements (and noise on request)."""
    lines = []
    if c.env_diff:
        lines.append("note: environments differ: " + ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in c.env_diff.items()))
    rows = [x for x in c.changes if show_noise or x.verdict != "noise"]
    rows.sort(key=lambda x: ({"regression": 0, "improvement": 1, "noise": 2}[x.verdict], -x.ratio))
    if rows:
        w = max(len(f"{x.case} {x.label}") for x in rows)
        for x in rows:
            lines.append(f"{x.verdict.upper():11} {f'{x.case} {x.label}':{w}}  {x.metric:15} "
                         f"{_band(x.old)} -> {_band(x.new)}  x{x.ratio:.2f}")
    for name, items in (("only in old", c.only_old), ("only in new", c.only_new)):
        if items:
            lines.append(f"{name}: " + ", ".join(items))
    noise = sum(x.verdict == "noise" for x in c.changes)
    lines.append(f"{len(c.regressions)} regression(s), {len(c.improvements)} improvement(s), "
                 f"{noise} within noise, of {len(c.changes)} compared metrics")
    return "\n".join(lines)
