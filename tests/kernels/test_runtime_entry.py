"""The runtime's one attention entry point: backend='triton' agrees with backend='sdpa'."""
import math

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'vidrt[triton]')")

from vidrt.attention import MaskSpec, attention, available_backends  # noqa: E402
from vidrt.kernels.reference import build_rope_3d  # noqa: E402


@pytest.mark.parametrize("mask", [None, MaskSpec.full(), MaskSpec.block_causal(12),
                                  MaskSpec.tile_window((2, 3, 4), (0, 1, 1), (1, 1, 2))])
def test_triton_backend_matches_sdpa(mask, device):
    assert available_backends()["triton"] == "ok"
    grid = (2, 3, 4)
    n = math.prod(grid)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 2, 64, generator=g).to(device) for _ in range(3))
    rope = build_rope_3d(64, grid, device=device)
    kv_lens = torch.tensor([n, n - 5], device=device)
    kw = dict(rope_q=rope, rope_k=rope, mask=mask, kv_lens=kv_lens)
    out = attention(q, k, v, backend="triton", **kw)
    ref = attention(q, k, v, backend="sdpa", **kw)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert (out - ref).abs().max().item() < 2e-5


def test_triton_backend_cross_attention(device):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 21, 2, 64, generator=g).to(device)
    k, v = (torch.randn(2, 9, 2, 64, generator=g).to(device) for _ in range(2))
    lens = torch.tensor([9, 4], device=device)
    out = attention(q, k, v, kv_lens=lens, backend="triton")
    ref = attention(q, k, v, kv_lens=lens, backend="sdpa")
    assert (out - ref).abs().max().item() < 2e-5
