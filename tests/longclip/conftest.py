from pathlib import Path

import pytest
import torch

from vidrt.longclip import make_causal_variant
from vidrt.testing import make_tiny_wan


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the CPU is shared: keep these tests small and single-threaded


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """Tiny random bidirectional Wan folder."""
    return make_tiny_wan(tmp_path_factory.mktemp("longclip") / "base")


@pytest.fixture(scope="session")
def tiny_causal(tiny_base, tmp_path_factory) -> Path:
    """The same random weights as a causal variant with 2 latent frames per chunk."""
    return make_causal_variant(tiny_base, tmp_path_factory.mktemp("longclip") / "causal", num_frame_per_block=2)


@pytest.fixture(scope="session")
def causal_pipe_patch1(tmp_path_factory):
    """A causal variant at patch 1x1x1 (a token per latent pixel, 4x the tokens per frame)."""
    from vidrt.pipeline import Pipeline

    root = tmp_path_factory.mktemp("longclip_p1")
    base = make_tiny_wan(root / "base", patch=(1, 1, 1))
    return Pipeline.from_pretrained(make_causal_variant(base, root / "causal", num_frame_per_block=2))


@pytest.fixture(scope="session")
def causal_pipe(tiny_causal):
    from vidrt.pipeline import Pipeline

    return Pipeline.from_pretrained(tiny_causal)


@pytest.fixture(scope="session")
def base_pipe(tiny_base):
    from vidrt.pipeline import Pipeline

    return Pipeline.from_pretrained(tiny_base)
