from pathlib import Path

import pytest
import torch

from vidrt.testing import drop_checkout_root, make_tiny_wan

drop_checkout_root(Path(__file__).resolve().parents[1])   # before any test module imports transformers / diffusers


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory) -> Path:
    """A tiny random diffusers Wan folder (UniPC, patch 1x2x2, 2 heads x 12)."""
    return make_tiny_wan(tmp_path_factory.mktemp("tiny_wan") / "wan")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same seed on one thread (tiny shapes; deterministic, no oversubscription)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
