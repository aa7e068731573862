"""Sampler schedules (sigmas, timesteps) equal diffusers' bit for bit."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

from vidrt.samplers import WAN21_SCHEDULER_CONFIG, make_sampler, shift_sigmas  # noqa: E402

STEPS = [1, 2, 4, 20, 50]
SHIFTS = [1.0, 3.0, 5.0, 7.0]


def _unipc_oracle(steps, **cfg):
    sched = UniPCMultistepScheduler.from_config(dict(WAN21_SCHEDULER_CONFIG, **cfg))
    sched.set_timesteps(steps)
    return sched


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("shift", SHIFTS)
def test_euler_schedule_matches_diffusers(steps, shift):
    ref = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(steps)
    s = make_sampler("euler", steps, shift=shift)
    assert s.timesteps.dtype == torch.float32 and s.sigmas.dtype == torch.float32
    assert s.timesteps.shape == (steps,) and s.sigmas.shape == (steps + 1,)
    assert torch.equal(s.timesteps, ref.timesteps)
    assert torch.equal(s.sigmas, ref.sigmas)
    assert s.sigma_at(0) == 1.0 and s.sigma_at(steps) == 0.0


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_unipc_schedule_matches_diffusers(steps, shift, final):
    ref = _unipc_oracle(steps, flow_shift=shift, final_sigmas_type=final)
    s = make_sampler("unipc", steps, shift=shift, config=dict(WAN21_SCHEDULER_CONFIG, final_sigmas_type=final))
    assert s.timesteps.dtype == torch.int64
    assert torch.equal(s.timesteps, ref.timesteps)
    assert torch.equal(s.sigmas, ref.sigmas)
    assert s.sigmas[0].item() == pytest.approx(1 - 1e-6, abs=1e-7)  # first sigma nudged below 1
    assert (s.sigmas[-1].item() == 0.0) == (final == "zero")


def test_wan_default_schedule_values():
    """Independent of diffusers: 4 UniPC steps at shift 3 -> sigmas s*x/(1+(s-1)x) at x=1, .75, .5, .25."""
    s = make_sampler(None, 4)
    xs = torch.tensor([1.0, 0.75 + 0.25 / 1000, 0.5 + 0.5 / 1000, 0.25 + 0.75 / 1000], dtype=torch.float64)
    want = shift_sigmas(xs, 3.0)
    want[0] -= 1e-6
    torch.testing.assert_close(s.sigmas[:4].double(), want, atol=1e-7, rtol=0)
    assert s.timesteps.tolist() == [int(v * 1000) for v in want.tolist()]
    assert s.timesteps.tolist() == [999, 900, 750, 500]


def test_timesteps_follow_device_argument():
    s = make_sampler("euler", 3, device="cpu")
    assert s.timesteps.device.type == "cpu" and s.sigmas.device.type == "cpu"
