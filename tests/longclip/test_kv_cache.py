"""The ring buffer: sinks stay, the window rolls, memory never grows, bad sizes get clear errors."""
import pytest
import torch

from vidrt.errors import ConfigError, ShapeError
from vidrt.longclip import KVCache, KVCacheConfig

FT = 2  # tokens per latent frame


def _cache(sink=1, window=2, chunk=1, batch=1):
    cfg = KVCacheConfig(chunk_frames=chunk, frame_tokens=FT, sink_frames=sink, window_frames=window)
    return KVCache(cfg, num_layers=2, batch=batch, heads=1, head_dim=4)


def _chunk_kv(c: int, tokens: int, batch: int = 1):
    k = torch.full((batch, tokens, 1, 4), float(c))
    return k, -k


def _commit(cache, c):
    n = cache.config.chunk_tokens
    cache.begin_chunk(n, commit=True)
    for layer in range(2):
        cache.layer(layer).update(*_chunk_kv(c, n))
    cache.end_chunk()


def test_ring_with_sinks_wraps_and_memory_stays_flat():
    cache = _cache(sink=1, window=2)
    ptr, nbytes = cache.k.data_ptr(), cache.nbytes
    assert cache.k.shape == (2, 1, (1 + 2 + 1) * FT, 1, 4)
    for c in range(10):
        # denoising view: past chunks (sinks + last two) + this chunk's own tokens, nothing else
        cache.begin_chunk(FT)
        k, v = cache.layer(1).update(*_chunk_kv(100 + c, FT))
        ids = sorted(set(k[0, :, 0, 0].tolist()))
        past = list(range(c)) if c <= 3 else [0, c - 2, c - 1]
        assert ids == sorted(set(past) | {100 + c}), c
        assert torch.equal(v, -k)
        assert k.shape[1] == (len(past) + 1) * FT
        _commit(cache, c)
        assert cache.k.data_ptr() == ptr and cache.nbytes == nbytes  # written in place, never reallocated
    assert cache.committed_chunks == 10 and cache.evicted_chunks == 10 - 3
    # the sink sits at the front for ever
    assert cache.k[0, 0, :FT, 0, 0].tolist() == [0.0] * FT


def test_multi_frame_chunks_and_drop_window():
    cache = _cache(sink=2, window=4, chunk=2)
    for c in range(5):
        _commit(cache, c)
    assert cache.full and cache.filled == 6 * FT
    cache.drop_window()  # hard cut: only the sink chunk stays visible
    cache.begin_chunk(2 * FT)
    k, _ = cache.layer(0).update(*_chunk_kv(9, 2 * FT))
    assert sorted(set(k[0, :, 0, 0].tolist())) == [0.0, 9.0]


def test_cfg_rows_and_errors():
    cache = _cache(batch=2)
    cache.begin_chunk(FT, rows=1)  # cond branch alone on a [cond, uncond] cache
    k, _ = cache.layer(0).update(*_chunk_kv(1, FT, batch=1))
    assert k.shape[0] == 1
    with pytest.raises(ShapeError, match="batch"):
        cache.begin_chunk(FT, commit=True, rows=1)
    with pytest.raises(ShapeError, match="whole chunks"):
        _cache(sink=2, window=2, chunk=2).begin_chunk(FT, commit=True)
    with pytest.raises(ShapeError, match="at most"):
        cache.begin_chunk(3 * FT)
    with pytest.raises(ConfigError, match="multiple of the chunk size"):
        KVCacheConfig(chunk_frames=3, frame_tokens=FT, sink_frames=3, window_frames=4)
    with pytest.raises(ConfigError, match="keeps nothing"):
        KVCacheConfig(chunk_frames=1, frame_tokens=FT)


def test_commit_context_sinks_skips_the_ring():
    """commit_context="sinks": a commit forward sees the sinks and its own chunk; denoising still sees all."""
    cfg = KVCacheConfig(chunk_frames=1, frame_tokens=FT, sink_frames=1, window_frames=2, commit_context="sinks")
    cache = KVCache(cfg, num_layers=2, batch=1, heads=1, head_dim=4)
    for c in range(6):
        cache.begin_chunk(FT)
        k, _ = cache.layer(0).update(*_chunk_kv(100 + c, FT))
        past = list(range(c)) if c <= 3 else [0, c - 2, c - 1]
        assert sorted(set(k[0, :, 0, 0].tolist())) == sorted(set(past) | {100 + c}), c
        cache.begin_chunk(FT, commit=True)
        for layer in range(2):
            k, v = cache.layer(layer).update(*_chunk_kv(c, FT))
            assert sorted(set(k[0, :, 0, 0].tolist())) == sorted({0, c}), c  # the ring is skipped
            assert torch.equal(v, -k)
        cache.end_chunk()
    assert cache.k[0, 0, :FT, 0, 0].tolist() == [0.0] * FT  # the ring still rolls as with "window"
    assert sorted(set(cache.k[0, 0, FT:3 * FT, 0, 0].tolist())) == [4.0, 5.0]
    with pytest.raises(ConfigError, match="commit_context"):
        KVCacheConfig(chunk_frames=1, frame_tokens=FT, sink_frames=1, window_frames=1, commit_context="all")
