"""Every step of vidrt's samplers equals diffusers' on random trajectories with fake model outputs."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

from vidrt.errors import ConfigError  # noqa: E402
from vidrt.samplers import WAN21_SCHEDULER_CONFIG, make_sampler  # noqa: E402

SHAPE = (2, 4, 3, 4, 4)  # (B, C, T, H, W)
ATOL = 1e-6


def fake_model(x, i):
    """A deterministic, non-linear 'velocity' that depends on the sample and the step."""
    g = torch.Generator().manual_seed(1000 + i)
    bump = torch.randn(x.shape, generator=g).to(x.dtype)
    return torch.tanh(0.7 * x + 0.1 * i) - 0.3 * torch.sin(3 * x) + 0.2 * bump


def run_diffusers(sched, x, model_dtype=None, begin=0):
    outs = []
    for i, t in enumerate(sched.timesteps[begin:], start=begin):
        v = fake_model(x, i)
        x = sched.step(v if model_dtype is None else v.to(model_dtype), t, x, return_dict=False)[0]
        outs.append(x)
    return outs


def run_vidrt(sampler, x, model_dtype=None, begin=0):
    outs = []
    for i in range(begin, sampler.steps):
        v = fake_model(x, i)
        x = sampler.step(v if model_dtype is None else v.to(model_dtype), i, x)
        outs.append(x)
    return outs


def assert_same_trajectory(ours, ref):
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.dtype == b.dtype, f"step {i}"
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m: f"step {i}: {m}")


def noise(shape=SHAPE, dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def unipc_pair(steps, **cfg):
    config = dict(WAN21_SCHEDULER_CONFIG, **cfg)
    ref = UniPCMultistepScheduler.from_config(config)
    ref.set_timesteps(steps)
    return make_sampler("auto", steps, config=config), ref


def euler_pair(steps, shift):
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": shift}
    ref = FlowMatchEulerDiscreteScheduler.from_config(config)
    ref.set_timesteps(steps)
    return make_sampler("auto", steps, config=config), ref


@pytest.mark.parametrize("steps,shift", [(1, 3.0), (4, 1.0), (10, 3.0), (25, 5.0), (50, 7.0)])
def test_euler_steps_match_diffusers(steps, shift):
    ours, ref = euler_pair(steps, shift)
    x = noise()
    assert_same_trajectory(run_vidrt(ours, x), run_diffusers(ref, x))


UNIPC_CASES = [
    # steps, flow_shift, solver_order, solver_type, lower_order_final, final_sigmas_type
    (1, 3.0, 2, "bh2", True, "zero"),
    (2, 3.0, 2, "bh2", True, "zero"),
    (10, 3.0, 2, "bh2", True, "zero"),   # Wan 2.1 480p
    (20, 5.0, 2, "bh2", True, "zero"),   # Wan 2.1 720p
    (50, 3.0, 2, "bh2", True, "zero"),
    (7, 3.0, 3, "bh2", True, "zero"),
    (8, 5.0, 1, "bh2", True, "zero"),
    (9, 5.0, 2, "bh1", True, "sigma_min"),
    (6, 3.0, 2, "bh1", False, "sigma_min"),
    (12, 1.0, 3, "bh2", True, "sigma_min"),
]


@pytest.mark.parametrize("steps,shift,order,solver,lof,final", UNIPC_CASES)
def test_unipc_steps_match_diffusers(steps, shift, order, solver, lof, final):
    ours, ref = unipc_pair(steps, flow_shift=shift, solver_order=order, solver_type=solver,
                           lower_order_final=lof, final_sigmas_type=final)
    x = noise()
    assert_same_trajectory(run_vidrt(ours, x), run_diffusers(ref, x))


def test_unipc_disable_corrector_matches_diffusers():
    ours, ref = unipc_pair(8, disable_corrector=[1, 3, 4])
    x = noise()
    assert_same_trajectory(run_vidrt(ours, x), run_diffusers(ref, x))
    plain = make_sampler("unipc", 8, shift=3.0)
    assert not torch.allclose(run_vidrt(plain, x)[-1], run_vidrt(ours, x)[-1])  # the option does something


def test_unipc_last_step_lands_on_x0_prediction():
    """With final sigma 0 the last step returns x - sigma * v exactly (the clean estimate)."""
    s = make_sampler("unipc", 5)
    x = noise()
    for i in range(4):
        x = s.step(fake_model(x, i), i, x)
    v = fake_model(x, 4)
    assert torch.equal(s.step(v, 4, x), x - s.sigmas[4] * v)


@pytest.mark.parametrize("kind", ["euler", "unipc"])
def test_low_precision_model_output_dtypes_match_diffusers(kind):
    """bf16 velocity on fp32 latents: Euler returns bf16 and UniPC fp32, exactly like diffusers."""
    ours, ref = euler_pair(6, 5.0) if kind == "euler" else unipc_pair(6)
    x = noise()
    got, want = run_vidrt(ours, x, model_dtype=torch.bfloat16), run_diffusers(ref, x, model_dtype=torch.bfloat16)
    assert got[-1].dtype == (torch.bfloat16 if kind == "euler" else torch.float32)
    assert_same_trajectory(got, want)


@pytest.mark.parametrize("kind", ["euler", "unipc"])
def test_float64_trajectories_match_diffusers(kind):
    ours, ref = euler_pair(6, 3.0) if kind == "euler" else unipc_pair(6)
    x = noise(dtype=torch.float64)
    assert_same_trajectory(run_vidrt(ours, x), run_diffusers(ref, x))


def test_unipc_state_is_per_instance_and_restarts_at_index_zero():
    ours, _ = unipc_pair(6)
    x1, x2 = noise(seed=1), noise(seed=2)
    for x in (x1, x2, x1):  # three generations on one instance, no explicit reset
        _, ref = unipc_pair(6)
        assert_same_trajectory(run_vidrt(ours, x), run_diffusers(ref, x))

    # two instances stepped in lockstep do not share history
    a, b = make_sampler("unipc", 6), make_sampler("unipc", 6)
    xa, xb = x1, x2
    for i in range(6):
        xa = a.step(fake_model(xa, i), i, xa)
        xb = b.step(fake_model(xb, i), i, xb)
    torch.testing.assert_close(xa, run_vidrt(make_sampler("unipc", 6), x1)[-1], atol=0, rtol=0)
    torch.testing.assert_close(xb, run_vidrt(make_sampler("unipc", 6), x2)[-1], atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["euler", "unipc"])
def test_start_midway_matches_diffusers_begin_index(kind):
    ours, ref = euler_pair(10, 3.0) if kind == "euler" else unipc_pair(10)
    ref.set_begin_index(4)
    x = ours.scale_noise(noise(seed=3), ours.sigma_at(4), noise(seed=4))
    assert_same_trajectory(run_vidrt(ours, x, begin=4), run_diffusers(ref, x, begin=4))


def test_unipc_any_batch_dims():
    """diffusers needs (B, C, ...); vidrt also takes a bare vector and gives the same numbers."""
    ours, ref = unipc_pair(7, solver_order=3)
    x = noise(shape=(16,))
    got = run_vidrt(ours, x)
    want = run_diffusers(ref, x[None])
    assert_same_trajectory([g[None] for g in got], want)


def test_unipc_steps_must_run_in_order():
    s = make_sampler("unipc", 5)
    x = noise()
    x = s.step(fake_model(x, 0), 0, x)
    with pytest.raises(ConfigError, match="expected step index 1, got 3"):
        s.step(fake_model(x, 3), 3, x)
    s.reset()
    s.step(fake_model(x, 3), 3, x)  # fresh state may start anywhere


def test_bh1_zero_final_sigma_stays_finite():
    """diffusers' bh1 predictor multiplies B(h) = -inf by a zero residual on the last step and
    returns NaN; vidrt skips the empty residual, so it lands on the x0 prediction instead."""
    ours, ref = unipc_pair(5, solver_type="bh1")
    x = noise()
    got, want = run_vidrt(ours, x), run_diffusers(ref, x)
    assert_same_trajectory(got[:-1], want[:-1])
    assert torch.isfinite(got[-1]).all()
    assert torch.isnan(want[-1]).any()  # if diffusers fixes this, compare the last step too


@pytest.mark.parametrize("kind", ["euler", "unipc"])
def test_scale_noise_matches_diffusers(kind):
    ours, ref = euler_pair(8, 5.0) if kind == "euler" else unipc_pair(8)
    x0, eps = noise(seed=5), noise(seed=6)
    for i in (0, 3, 7):
        t = ref.timesteps[i:i + 1].repeat(SHAPE[0])
        want = ref.scale_noise(x0, t, eps) if kind == "euler" else ref.add_noise(x0, eps, t)
        torch.testing.assert_close(ours.scale_noise(x0, ours.sigma_at(i), eps), want, atol=ATOL, rtol=0)
    per_sample = ours.scale_noise(x0, torch.tensor([ours.sigma_at(1), ours.sigma_at(5)]), eps)
    torch.testing.assert_close(per_sample[1], ours.scale_noise(x0[1], ours.sigma_at(5), eps[1]), atol=0, rtol=0)
    assert torch.equal(ours.scale_noise(x0, 0.0, eps), x0) and torch.equal(ours.scale_noise(x0, 1.0, eps), eps)
