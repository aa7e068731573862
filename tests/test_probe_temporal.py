"""tools/probe_temporal.py: fault rates per kind, across / within latent frames, first latent group / the rest."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
tool = load_script(ROOT / "tools/probe_temporal.py")


def _faults(toggle=(), position=(), size=(), n=8):
    f = {k: np.zeros(n, bool) for k in tool.KINDS}
    f["toggle"][list(toggle)] = True
    f["position_jump"][list(position)] = True
    f["size_jump"][list(size)] = True
    return f


def test_rates():
    clips = [[_faults(size=(0, 4)), None], [_faults(toggle=(1,), size=(1,))]]
    r = tool.rates(clips, temporal_factor=4)
    assert r["objects"] == 2 and r["objects_never_found"] == 1
    assert r["size_jump"] == pytest.approx(3 / 16) and r["toggle"] == pytest.approx(1 / 16)
    assert r["position_jump"] == 0
    # transitions 0 and 4 cross a latent frame (frame 0 alone, then groups of 4): 2 of the 4 such pairs jump
    assert r["size_jump_across_latent_frames"] == pytest.approx(2 / 4)
    assert r["size_jump_within_latent_frames"] == pytest.approx(1 / 12)
    # first group = transitions 0..3: faults at (0), (1) -> 2 of 8; after it: (4) -> 1 of 8
    assert r["any_fault_first_group"] == pytest.approx(2 / 8) and r["any_fault_after"] == pytest.approx(1 / 8)
    assert tool.rates([[None]]) == {}
