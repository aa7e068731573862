import os
import sys
from pathlib import Path

# `python -m pytest` puts the working directory first on sys.path; from a checkout's root that makes kernels/ and
# export/ (vidrt.kernels, vidrt.export) importable as top-level `kernels` / `export`, shadowing installed packages of
# those names (transformers 5.25 imports PyPI's `kernels`). vidrt imports through its installed mapping, not the root.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _ROOT]

import pytest
import torch

from vidrt.testing import make_tiny_wan  # noqa: E402


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory) -> Path:
    """A tiny random diffusers Wan folder (UniPC, patch 1x2x2, 2 heads x 12)."""
    return make_tiny_wan(tmp_path_factory.mktemp("tiny_wan") / "wan")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same seed on one thread (tiny shapes; deterministic, no oversubscription)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
