"""Summaries of repeated measurements: median and the p10-p90 band that `compare` uses as noise."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def summarize(samples: Sequence[float]) -> dict:
    """{median, p10, p90, min, max, n, samples} of the values (percentiles linearly interpolated)."""
    x = np.asarray([float(s) for s in samples], dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize needs at least one sample")
    p10, med, p90 = np.percentile(x, [10, 50, 90])
    return {"median": float(med), "p10": float(p10), "p90": float(p90), "min": float(x.min()),
            "max": float(x.max()), "n": int(x.size), "samples": [float(v) for v in x]}


def ratio(num: Optional[dict], den: Optional[dict]) -> Optional[float]:
    """median(num) / median(den), or None when either is missing or the denominator is zero."""
    if not num or not den or not den.get("median"):
        return None
    return float(num["median"]) / float(den["median"])
