"""The attention entry point: sdpa backend vs an explicit softmax over the mask spec, and input errors."""
import math

import pytest
import torch

import vidrt
from vidrt.attention import MaskSpec, attention
from vidrt.kernels.reference import build_rope_3d


def naive(q, k, v, allowed=None):
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v.double()).float()


def test_block_causal_with_kv_prefix():
    q, k, v = torch.randn(1, 8, 2, 16), torch.randn(1, 20, 2, 16), torch.randn(1, 20, 2, 16)
    m = MaskSpec.block_causal(chunk_tokens=4, q_offset=12)  # 12 cached tokens, then 2 chunks of queries
    allowed = torch.zeros(8, 20, dtype=torch.bool)
    for i in range(8):
        allowed[i, : (12 + i) // 4 * 4 + 4] = True
    assert torch.equal(m.dense(8, 20), allowed)
    torch.testing.assert_close(attention(q, k, v, mask=m), naive(q, k, v, allowed), atol=1e-5, rtol=1e-5)


def test_tile_window_and_rope():
    grid = (3, 4, 5)
    n = 60
    q, k, v = (torch.randn(2, n, 2, 24) for _ in range(3))
    m = MaskSpec.tile_window(grid, window=(1, 0, 1), tile=(1, 2, 2))
    dense = m.dense(n, n)
    coords = [(t, h, w) for t in range(3) for h in range(4) for w in range(5)]
    for i, (t, h, w) in enumerate(coords[:7]):
        for j, (t2, h2, w2) in enumerate(coords):
            assert bool(dense[i, j]) == (abs(t - t2) <= 1 and h // 2 == h2 // 2 and abs(w // 2 - w2 // 2) <= 1)
    rope = build_rope_3d(24, grid)
    from vidrt.kernels.reference import apply_rope

    c, s = rope.dense()
    expect = naive(apply_rope(q, c, s), apply_rope(k, c, s), v, dense)
    torch.testing.assert_close(attention(q, k, v, rope_q=rope, rope_k=rope, mask=m), expect, atol=1e-5, rtol=1e-5)


def test_kv_lens_ignores_padding():
    q, k, v = torch.randn(2, 5, 1, 16), torch.randn(2, 7, 1, 16), torch.randn(2, 7, 1, 16)
    out = attention(q, k, v, kv_lens=torch.tensor([3, 7]))
    torch.testing.assert_close(out[0:1], naive(q[0:1], k[0:1, :3], v[0:1, :3]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1:2], naive(q[1:2], k[1:2], v[1:2]), atol=1e-5, rtol=1e-5)


def test_bad_inputs_are_clear():
    q = torch.randn(1, 12, 2, 16)
    with pytest.raises(vidrt.ShapeError, match="batch, tokens, heads, head_dim"):
        attention(q[0], q[0], q[0])
    with pytest.raises(vidrt.ShapeError, match="disagree"):
        attention(q, torch.randn(1, 12, 2, 8), torch.randn(1, 12, 2, 8))
    with pytest.raises(vidrt.ShapeError, match="window mask grid"):
        attention(q, q, q, mask=MaskSpec.tile_window((2, 2, 2), (1, 1, 1)))
    with pytest.raises(vidrt.ShapeError, match="rope_q covers"):
        attention(q, q, q, rope_q=build_rope_3d(16, (1, 2, 2)))
    with pytest.raises(vidrt.ConfigError, match="unknown attention backend"):
        attention(q, q, q, backend="cudnn")


def test_block_causal_sink_chunks_mask():
    """sink_chunks: context chunks see the sinks and themselves, the last chunk sees everything before it."""
    from vidrt.attention import MaskSpec

    m = MaskSpec.block_causal(1, sink_chunks=1).dense(4, 4)
    assert m.int().tolist() == [[1, 0, 0, 0],
                                [1, 1, 0, 0],
                                [1, 0, 1, 0],
                                [1, 1, 1, 1]]
    assert torch.equal(MaskSpec.block_causal(2).dense(6, 6), MaskSpec.block_causal(2, sink_chunks=-1).dense(6, 6))
    # a 2-token chunk grid with two sink chunks and a query offset (a KV prefix): the last chunk sees all
    m = MaskSpec.block_causal(2, q_offset=4, sink_chunks=2).dense(4, 8)
    assert m[:2].int().tolist() == [[1, 1, 1, 1, 1, 1, 0, 0]] * 2 and m[2:].all()
