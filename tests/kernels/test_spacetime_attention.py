"""Triton spacetime attention vs attention_reference: RoPE, masks, lengths, dtypes, bad inputs."""
import math

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'vidrt[triton]')")

from vidrt.kernels import spacetime_attention as sa  # noqa: E402
from vidrt.kernels.reference import MaskSpec, attention_reference, build_rope_3d  # noqa: E402

# max abs error vs the fp32 reference, by input dtype (inputs ~N(0,1)). The interpreter truncates
# fp32 -> bf16 instead of rounding to nearest, hence the looser bf16 bound.
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 4e-2}


def _qkv(b, lq, lk, h, d, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, n, h, d, generator=g) for n in (lq, lk, lk))
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def _check(q, k, v, dtype=torch.float32, **kw):
    out = sa.attention(q, k, v, **kw)
    assert out.shape == q.shape and out.dtype == q.dtype
    ref = attention_reference(q.float(), k.float(), v.float(), **kw)
    err = (out.float() - ref).abs().max().item()
    assert err <= TOL[dtype], f"max error {err} > {TOL[dtype]}"
    return out, ref


@pytest.mark.parametrize("grid", [(3, 1, 7), (2, 3, 5), (1, 4, 6)])
def test_full_mask_rope_odd_and_nonsquare_grids(grid, device):
    n = math.prod(grid)
    q, k, v = _qkv(2, n, n, 2, 64, device=device)
    rope = build_rope_3d(64, grid, device=device)
    _check(q, k, v, rope_q=rope, rope_k=rope)


@pytest.mark.parametrize("head_dim", [32, 96, 128, 24])
def test_head_dims_including_padded(head_dim, device):
    grid = (2, 3, 3)
    q, k, v = _qkv(1, 18, 18, 1, head_dim, device=device)
    rope = build_rope_3d(head_dim, grid, device=device)
    _check(q, k, v, rope_q=rope, rope_k=rope, scale=0.3)


def test_no_rope_cross_attention_with_text_lengths(device):
    q, k, v = _qkv(3, 30, 13, 2, 64, device=device)
    kv_lens = torch.tensor([13, 5, 1])
    _check(q, k, v, rope_q=build_rope_3d(64, (2, 3, 5), device=device), kv_lens=kv_lens)


def test_varlen_q_and_kv_lengths_zero_padded_rows(device):
    grid = (2, 2, 5)
    q, k, v = _qkv(3, 20, 20, 1, 64, device=device)
    rope = build_rope_3d(64, grid, device=device)
    q_lens, kv_lens = torch.tensor([20, 7, 0]), torch.tensor([20, 11, 0])
    out, _ = _check(q, k, v, rope_q=rope, rope_k=rope, q_lens=q_lens, kv_lens=kv_lens)
    assert out[1, 7:].abs().max() == 0 and out[2].abs().max() == 0
    assert out[1, :7].abs().min() > 0


@pytest.mark.parametrize("chunk,q_offset,lq,lk", [(15, 0, 45, 45), (7, 0, 23, 23), (15, 30, 15, 45), (10, 13, 25, 38)])
def test_block_causal_with_kv_prefix(chunk, q_offset, lq, lk, device):
    q, k, v = _qkv(2, lq, lk, 2, 64, device=device)
    _check(q, k, v, mask=MaskSpec.block_causal(chunk, q_offset))


def test_block_causal_rope_offsets_match_cache_layout(device):
    # KV cache: 2 past latent frames + the current one, 3x5 tokens per frame; queries are frame 2
    q, k, v = _qkv(1, 15, 45, 2, 64, device=device)
    rope_q = build_rope_3d(64, (1, 3, 5), start=(2, 0, 0), device=device)
    rope_k = build_rope_3d(64, (3, 3, 5), device=device)
    _check(q, k, v, rope_q=rope_q, rope_k=rope_k, mask=MaskSpec.block_causal(15, q_offset=30),
           kv_lens=torch.tensor([45]))


@pytest.mark.parametrize("grid,window,tile", [
    ((3, 5, 4), (1, 1, 1), (2, 2, 2)),    # padded tiles (grid not divisible)
    ((2, 4, 8), (0, 1, 0), (1, 4, 4)),    # tile of 16 tokens = one query block: no per-pair mask
    ((1, 6, 7), (0, 1, 2), (1, 1, 1)),    # 1-frame grid, token-sized tiles
    ((2, 3, 3), (5, 5, 5), (1, 2, 2)),    # window covers everything
    ((3, 4, 4), (0, 0, 0), (1, 2, 2)),    # own tile only
])
def test_tile_window(grid, window, tile, device):
    n = math.prod(grid)
    q, k, v = _qkv(2, n, n, 2, 64, device=device)
    rope = build_rope_3d(64, grid, device=device)
    _check(q, k, v, rope_q=rope, rope_k=rope, mask=MaskSpec.tile_window(grid, window, tile),
           kv_lens=torch.tensor([n, n - 9]), q_lens=torch.tensor([n - 3, n]))


def test_window_covering_everything_equals_full(device):
    grid = (2, 3, 4)
    q, k, v = _qkv(1, 24, 24, 1, 64, device=device)
    a = sa.attention(q, k, v, mask=MaskSpec.tile_window(grid, (2, 3, 4), (1, 1, 1)))
    b = sa.attention(q, k, v)
    assert torch.allclose(a, b, atol=1e-6)


def test_window_skips_key_tiles_outside_the_window(device):
    """NaN in every value row outside the window: a visited (even if masked) key block would give NaN."""
    grid, window, tile = (4, 4, 4), (0, 0, 0), (1, 4, 4)   # 4 tiles of 16 tokens, each sees itself only
    q, k, v = _qkv(1, 64, 64, 1, 64, device=device)
    mask = MaskSpec.tile_window(grid, window, tile)
    out = sa.attention(q, k, v, mask=mask, block_m=16, block_n=16)
    poisoned = v.clone()
    poisoned[:, 16:] = float("nan")   # tiles 1..3 (frames 1..3); queries of tile 0 must never load them
    out_p = sa.attention(q, k, poisoned, mask=mask, block_m=16, block_n=16)
    assert torch.isfinite(out_p[:, :16]).all()
    assert torch.equal(out_p[:, :16], out[:, :16])


def test_block_causal_skips_future_key_blocks(device):
    q, k, v = _qkv(1, 16, 64, 1, 64, device=device)
    mask = MaskSpec.block_causal(16, q_offset=16)   # queries are chunk 1: keys 0..31
    ref = attention_reference(q, k, v, mask=mask)
    v[:, 32:] = float("nan")
    out = sa.attention(q, k, v, mask=mask, block_m=16, block_n=16)
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() <= TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_dtypes(dtype, device):
    grid = (2, 3, 5)
    q, k, v = _qkv(1, 30, 30, 2, 64, dtype=dtype, device=device)
    rope = build_rope_3d(64, grid, device=device)
    _check(q, k, v, dtype, rope_q=rope, rope_k=rope, mask=MaskSpec.block_causal(15))
    _check(q, k, v, dtype, mask=MaskSpec.tile_window(grid, (0, 1, 1), (1, 1, 1)))


def test_noncontiguous_inputs(device):
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 3, 2, 21, 64, generator=g).to(device)   # (B, 3, H, L, D) -> (B, L, H, D) views
    q, k, v = (qkv[:, i].transpose(1, 2) for i in range(3))
    assert not q.is_contiguous()
    _check(q, k, v, rope_q=build_rope_3d(64, (1, 3, 7)), rope_k=build_rope_3d(64, (1, 3, 7)))


def test_bad_inputs_raise_before_launch(monkeypatch, device):
    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError("kernel launched despite invalid input")

    monkeypatch.setattr(sa, "_attn_fwd", NoLaunch())
    monkeypatch.setattr(sa, "_attn_fwd_tuned", NoLaunch())
    q, k, v = _qkv(1, 12, 12, 1, 64, device=device)
    with pytest.raises(ValueError, match="head_dim 100"):
        sa.attention(*_qkv(1, 4, 4, 1, 100, device=device))
    with pytest.raises(ValueError, match="head_dim 8"):
        sa.attention(*_qkv(1, 4, 4, 1, 8, device=device))
    with pytest.raises(ValueError, match="shapes disagree"):
        sa.attention(q, k[:, :, :, :32], v)
    with pytest.raises(ValueError, match="shapes disagree"):
        sa.attention(q, k, v[:, :5])
    with pytest.raises(ValueError, match="window mask grid"):
        sa.attention(q, k, v, mask=MaskSpec.tile_window((2, 2, 2), (1, 1, 1)))
    with pytest.raises(ValueError, match="rope_q covers a grid"):
        sa.attention(q, k, v, rope_q=build_rope_3d(64, (1, 3, 5)))
    with pytest.raises(ValueError, match="differs from rope_q grid"):
        sa.attention(q, k, v, rope_q=build_rope_3d(64, (1, 3, 4)), mask=MaskSpec.tile_window((1, 4, 3), (1, 1, 1)))
    with pytest.raises(ValueError, match="exceeds"):
        sa.attention(q, k, v, mask=MaskSpec.block_causal(4, q_offset=4))
    with pytest.raises(ValueError, match="sink-only context chunks"):
        sa.attention(q, k, v, mask=MaskSpec.block_causal(4, sink_chunks=1))
    with pytest.raises(ValueError, match="kv_lens must be an integer tensor"):
        sa.attention(q, k, v, kv_lens=torch.tensor([3, 4]))
    with pytest.raises(TypeError, match="dtypes differ"):
        sa.attention(q, k.half(), v)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        sa.attention(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match="power of two"):
        sa.attention(q, k, v, block_m=24, block_n=16)
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            sa.attention(q, k, v)


def test_empty_and_keyless_inputs(device):
    q, k, v = _qkv(1, 0, 5, 1, 64, device=device)
    assert sa.attention(q, k, v).shape == (1, 0, 1, 64)
    q, k, v = _qkv(1, 5, 0, 1, 64, device=device)
    assert sa.attention(q, k, v).abs().max() == 0


def test_autotune_prune_prefers_tile_aligned_blocks_and_fits_head_dim():
    configs = sa._gpu_configs()
    kept = sa._prune_configs(configs, {"seq_bucket": 1 << 15}, MASK=2, D_PAD=128, TILE_T=1, TILE_H=8, TILE_W=8)
    assert kept and all(64 % c.kwargs["BLOCK_M"] == 0 and 64 % c.kwargs["BLOCK_N"] == 0 for c in kept)
    assert len(kept) < len(configs)
    kept = sa._prune_configs(configs, {"seq_bucket": 1 << 15}, MASK=0, D_PAD=256)
    assert kept and all(c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 128 for c in kept)
    assert len(kept) < len(configs)
