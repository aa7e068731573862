import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from vidrt.testing import make_tiny_wan  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB between two arrays on the same scale (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory) -> Path:
    """A tiny random diffusers Wan folder (UniPC, patch 1x2x2, 2 heads x 12)."""
    return make_tiny_wan(tmp_path_factory.mktemp("tiny_wan") / "wan")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
