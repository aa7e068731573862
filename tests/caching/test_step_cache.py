"""Step caches on the one sampler loop: exact when they never skip, real skips and stats otherwise."""
import pytest
import torch

import vidrt
from vidrt.pipeline import Pipeline

KW = dict(height=32, width=32, num_frames=5, steps=8, seed=0, guidance=5.0, output="latent", progress=False,
          max_sequence_length=16)


@pytest.fixture(scope="module")
def pipe(tiny_wan):
    return Pipeline.from_pretrained(tiny_wan)


@pytest.fixture(scope="module")
def exact(pipe):
    return pipe("a red circle moves right", **KW)


@pytest.mark.parametrize("policy", ["teacache", "first_block", "cfg", "teacache+cfg"])
def test_threshold_zero_or_interval_one_is_exact(pipe, exact, policy):
    got = pipe("a red circle moves right", cache=policy, cache_threshold=0.0, cfg_interval=1, **KW)
    assert torch.allclose(got, exact, atol=1e-5)


@pytest.mark.parametrize("policy", ["teacache", "first_block"])
def test_large_threshold_reuses_and_reports(pipe, exact, policy):
    v = pipe("a red circle moves right", cache=policy, cache_threshold=1e9,
             **{**KW, "output": "video"})
    st = v.stats["cache"][policy]
    # warm-up step and final step computed (both branches, batched), every other step reused
    assert st["computed"] == {"cond": 2, "uncond": 2}
    assert st["reused"] == {"cond": 6, "uncond": 6}
    lat = pipe("a red circle moves right", cache=policy, cache_threshold=1e9, **KW)
    assert not torch.allclose(lat, exact, atol=1e-4)  # it really skipped work


def test_cfg_cache_halves_uncond_and_combines(pipe):
    v = pipe("a red circle moves right", cache="teacache+cfg", cache_threshold=0.0, **{**KW, "output": "video"})
    c = v.stats["cache"]
    assert c["cfg"] == {"uncond_computed": 5, "uncond_reused": 3}  # steps 0,1,3,5,7 full; 2,4,6 estimated
    assert c["teacache"]["computed"]["cond"] == 8 and c["teacache"]["computed"]["uncond"] == 5


@pytest.mark.parametrize("policy", ["teacache+cfg", "first_block+cfg"])
def test_block_cache_keeps_skipping_when_the_cfg_cache_changes_the_batch(pipe, policy):
    """With the CFG cache, steps alternate between cond+uncond and cond-only DiT calls; the block cache must
    compare the cond rows across them and keep each branch's residual (it used to reset on every change of
    batch shape, so the combination skipped 1 step in 20)."""
    v = pipe("a red circle moves right", cache=policy, cache_threshold=1e9, **{**KW, "output": "video"})
    st = v.stats["cache"][policy.split("+")[0]]
    assert v.stats["cache"]["cfg"] == {"uncond_computed": 5, "uncond_reused": 3}
    # warm-up and final step computed; every other step reuses, whichever rows the call carries
    assert st["computed"] == {"cond": 2, "uncond": 2}
    assert st["reused"] == {"cond": 6, "uncond": 3}


def test_unbatched_cfg_follows_the_same_decisions(pipe):
    a = pipe("a blue square moves up", cache="teacache", cache_threshold=0.3, **KW)
    pipe.batch_cfg = False
    try:
        b = pipe("a blue square moves up", cache="teacache", cache_threshold=0.3, **KW)
    finally:
        pipe.batch_cfg = True
    assert torch.allclose(a, b, atol=1e-5)


def test_bad_policies_are_clear(pipe):
    with pytest.raises(vidrt.ConfigError, match="unknown cache policy 'tea'"):
        pipe("a red circle", cache="tea", **KW)
    with pytest.raises(vidrt.ConfigError, match="pick one"):
        pipe("a red circle", cache="teacache+first_block", **KW)
    with pytest.raises(vidrt.ConfigError, match="cfg_interval"):
        pipe("a red circle", cache="cfg", cfg_interval=0, **KW)
    with pytest.raises(vidrt.ConfigError, match="cache_threshold"):
        pipe("a red circle", cache="teacache", cache_threshold=-1.0, **KW)
