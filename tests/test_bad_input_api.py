"""Bad input to the Python API: a VidrtError naming the problem and the fix, before any work (tiny model only)."""
import logging
import math

import numpy as np
import pytest
import torch

import vidrt
from vidrt.pipeline import Pipeline

SMALL = dict(height=32, width=32, num_frames=1, steps=1, progress=False, max_sequence_length=16)


@pytest.fixture(scope="module")
def pipe(tiny_wan):
    return Pipeline.from_pretrained(tiny_wan)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:-1"])
def test_unknown_device(tiny_wan, device):
    with pytest.raises(vidrt.DeviceError, match=f"unknown device '{device}'; use 'cpu', 'cuda' or 'cuda:N'"):
        Pipeline.from_pretrained(tiny_wan, device=device)


@pytest.mark.parametrize("seed,match", [(99999999999999999999999, r"out of range.*-2\*\*63, 2\*\*64"),
                                        (None, "seed=None; pass a whole number"),
                                        ("abc", "seed='abc'; pass a whole number"),
                                        (True, "seed=True; pass a whole number")])
def test_bad_seed(pipe, seed, match):
    with pytest.raises(vidrt.ConfigError, match=match):
        pipe("a red circle", seed=seed, **SMALL)


def test_seed_range_edges_and_numpy_ints_still_work(pipe):
    a = pipe("a red circle", seed=-1, output="latent", **SMALL)
    b = pipe("a red circle", seed=2**64 - 1, output="latent", **SMALL)  # the same generator state as -1
    c = pipe("a red circle", seed=np.int64(3), output="latent", **{**SMALL, "height": 32.0})
    d = pipe("a red circle", seed=3, output="latent", **SMALL)
    assert torch.equal(a, b) and torch.equal(c, d)


@pytest.mark.parametrize("n", [0, -3])
def test_max_sequence_length_out_of_range(pipe, n):
    with pytest.raises(vidrt.ConfigError, match=rf"max_sequence_length={n}; use at least 1 text position"):
        pipe("a red circle", **{**SMALL, "max_sequence_length": n})


def test_max_sequence_length_above_the_default_still_runs(pipe):
    """UMT5's positions are relative: a longer text window than the checkpoint's default is allowed (bench
    --text-len, stream --max-sequence-length)."""
    out = pipe("a red circle", **{**SMALL, "max_sequence_length": SMALL["max_sequence_length"] + 8}, output="latent")
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kw,match", [
    (dict(prompt=None), "prompt must be a string or a non-empty list of strings, not None"),
    (dict(prompt=5), "prompt must be a string .* not 5"),
    (dict(negative_prompt=5), "negative_prompt must be a string .* not 5"),
    (dict(num_frames="five"), "num_frames='five'; pass a whole number"),
    (dict(width="32"), "width='32'; pass a whole number"),
    (dict(height=32.5), "height=32.5; pass a whole number"),
    (dict(steps=1.5), "steps=1.5; pass a whole number"),
    (dict(guidance="high"), "guidance='high'; use a finite number"),
    (dict(guidance=math.nan), "guidance=nan; use a finite number"),
    (dict(guidance=math.inf), "guidance=inf; use a finite number"),
    (dict(latents=np.zeros((1, 16, 1, 4, 4))), r"latents must be a torch.Tensor of shape \(1, 16, 1, 4, 4\), not ndarray"),
    (dict(latents=[0.0]), "latents must be a torch.Tensor of shape .* not list"),
    (dict(latents=torch.full((1, 16, 1, 4, 4), math.nan)), "latents contain NaN/inf; pass finite"),
    (dict(cache=3), "cache=3; use a policy name: 'teacache'"),
    (dict(cache="teacache", cache_threshold="big"), "cache_threshold='big'; use a number >= 0"),
    (dict(guidance_interval=0.5), r"guidance_interval=0.5; give \(sigma_lo, sigma_hi\)"),
    (dict(guidance_interval=(0.0, 0.5, 1.0)), r"give \(sigma_lo, sigma_hi\)"),
    (dict(latency_target="3s"), "latency_target='3s'; give a time budget in seconds"),
    (dict(latency_target=math.nan), "latency_target=nan; give a time budget in seconds"),
    (dict(latency_target=-5), "latency_target=-5 must be > 0 seconds"),
    (dict(latency_target=0), "latency_target=0 must be > 0 seconds"),
    (dict(deadline="soon"), r"deadline='soon'; give a time.time\(\) instant"),
])
def test_wrong_argument_types_and_values(pipe, kw, match):
    args = {"prompt": "a red circle", **SMALL, **kw}
    with pytest.raises(vidrt.ConfigError, match=match):
        pipe(**args)


@pytest.mark.parametrize("shots", [None, 123])
def test_stream_rejects_non_prompts(pipe, shots):
    with pytest.raises(vidrt.PromptError, match=f"shots={shots}; give a prompt, a Shot, a list of them"):
        pipe.stream(shots)


def test_empty_prompt_warns_but_runs(pipe, caplog):
    with caplog.at_level(logging.WARNING):
        v = pipe("  ", **SMALL)
    assert v.frames.shape == (1, 32, 32, 3)
    assert any("empty prompt" in r.message for r in caplog.records)


def test_cache_threshold_without_cache_warns_once(pipe, caplog):
    with caplog.at_level(logging.WARNING):
        pipe("a red circle", cache_threshold=0.2, **SMALL)
    assert len([r for r in caplog.records if "cache_threshold=0.2 has no effect" in r.message]) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipe("a red circle", cache="teacache", cache_threshold=0.2, **SMALL)
    assert not [r for r in caplog.records if "no effect" in r.message]


def test_nan_weights_raise_instead_of_a_black_clip(tiny_wan):
    bad = Pipeline.from_pretrained(tiny_wan)
    with torch.no_grad():
        next(bad.transformer.parameters()).fill_(math.nan)
    with pytest.raises(vidrt.CheckpointError, match=r"latents contain NaN/inf after 1 step\(s\): the checkpoint may"):
        bad("a red circle", **SMALL)


def test_out_of_memory_names_the_size(pipe, monkeypatch):
    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 1099511627776 bytes")

    monkeypatch.setattr(pipe.transformer, "forward", oom)
    with pytest.raises(vidrt.ShapeError, match=r"out of memory generating 1 frames at 32x32 \(4 tokens, batch 1\); "
                                               "lower the size, frames or batch"):
        pipe("a red circle", **SMALL)

    def other(*a, **k):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(pipe.transformer, "forward", other)
    with pytest.raises(RuntimeError, match="mat1 and mat2") as e:
        pipe("a red circle", **SMALL)
    assert not isinstance(e.value, vidrt.VidrtError)


def test_out_of_memory_on_the_initial_noise_names_the_size(pipe, monkeypatch):
    """The initial noise is the first large allocation of an oversized request: a ShapeError there too."""
    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(torch, "randn", oom)
    with pytest.raises(vidrt.ShapeError, match=r"out of memory generating 1 frames at 32x32"):
        pipe("a red circle", **SMALL)


def test_is_out_of_memory_tells_allocator_failures_apart():
    from vidrt.errors import is_out_of_memory

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
