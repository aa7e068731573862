"""Kernel tests run on CPU under Triton's interpreter unless a CUDA GPU is present.

TRITON_INTERPRET must be set before the kernel modules are imported (``triton.jit`` picks the
interpreter at decoration time), so it is set here, at collection, before any test module runs.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture(scope="session")
def device() -> str:
    return "cpu" if INTERPRET else "cuda"
