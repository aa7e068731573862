"""make_sampler: names, diffusers configs, overrides and the errors a user gets."""
import json

import numpy as np
import pytest
import torch

from vidrt.errors import CheckpointError, ConfigError, ShapeError, VidrtError
from vidrt.samplers import (WAN21_SCHEDULER_CONFIG, FlowEulerSampler, UniPCSampler, load_scheduler_config,
                            make_sampler)

EULER_CFG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 7.0,
             "use_dynamic_shifting": False, "base_shift": 0.5, "max_shift": 1.15}


@pytest.mark.parametrize("name,cls", [
    ("euler", FlowEulerSampler), ("flow_euler", FlowEulerSampler), (" Euler ", FlowEulerSampler),
    ("FlowMatchEulerDiscreteScheduler", FlowEulerSampler),
    ("unipc", UniPCSampler), ("UniPC", UniPCSampler), ("UniPCMultistepScheduler", UniPCSampler),
])
def test_names_and_aliases(name, cls):
    s = make_sampler(name, 5)
    assert type(s) is cls and s.steps == len(s) == 5 and s.timesteps.shape == (5,)


def test_auto_without_config_is_wan21_unipc():
    for name in (None, "auto"):
        s = make_sampler(name, 10)
        assert isinstance(s, UniPCSampler)
        assert s.shift == 3.0 and s.config.solver_order == 2 and s.config.solver_type == "bh2"
        assert s.config.final_sigmas_type == "zero" and s.config.lower_order_final


def test_auto_follows_class_name_and_shift_override():
    s = make_sampler("auto", 8, config=EULER_CFG)
    assert isinstance(s, FlowEulerSampler) and s.shift == 7.0
    s = make_sampler("auto", 8, config=EULER_CFG, shift=2.5)
    assert s.shift == 2.5 and s.sigmas[1].item() != make_sampler("auto", 8, config=EULER_CFG).sigmas[1].item()
    u = make_sampler("auto", 8, config=dict(WAN21_SCHEDULER_CONFIG, flow_shift=5.0))
    assert isinstance(u, UniPCSampler) and u.shift == 5.0
    assert make_sampler("auto", 8, config=WAN21_SCHEDULER_CONFIG, shift=1.5).shift == 1.5


def test_missing_keys_take_diffusers_defaults():
    s = make_sampler("auto", 4, config={"_class_name": "FlowMatchEulerDiscreteScheduler"})
    assert s.shift == 1.0 and s.num_train_timesteps == 1000
    u = make_sampler("auto", 4, config={"_class_name": "UniPCMultistepScheduler", "use_flow_sigmas": True,
                                        "prediction_type": "flow_prediction"})
    assert u.shift == 1.0 and u.config.solver_order == 2


def test_cross_class_config_lends_shift():
    """Running Euler on a Wan (UniPC) checkpoint keeps its flow shift, and vice versa."""
    e = make_sampler("euler", 6, config=WAN21_SCHEDULER_CONFIG)
    assert isinstance(e, FlowEulerSampler) and e.shift == 3.0
    assert torch.equal(e.sigmas, make_sampler("euler", 6, shift=3.0, config=EULER_CFG).sigmas)
    u = make_sampler("unipc", 6, config=EULER_CFG)
    assert isinstance(u, UniPCSampler) and u.shift == 7.0 and u.config.solver_type == "bh2"


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        make_sampler("ddim", 10)
    msg = str(e.value)
    assert "ddim" in msg and "'euler'" in msg and "'unipc'" in msg and "'auto'" in msg
    assert isinstance(e.value, VidrtError)
    with pytest.raises(ConfigError):
        make_sampler(3, 10)


@pytest.mark.parametrize("steps", [0, -2, 2.5, True, "10", None])
def test_bad_step_counts(steps):
    with pytest.raises(ConfigError, match="steps"):
        make_sampler("euler", steps)


@pytest.mark.parametrize("shift", [0, -1.0, float("nan"), float("inf"), "3", True])
def test_bad_shift(shift):
    with pytest.raises(ConfigError, match="shift"):
        make_sampler("unipc", 4, shift=shift)


@pytest.mark.parametrize("cfg,key", [
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}, "use_dynamic_shifting"),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "stochastic_sampling": True}, "stochastic_sampling"),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_karras_sigmas": True}, "use_karras_sigmas"),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "invert_sigmas": True}, "invert_sigmas"),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift_terminal": 0.1}, "shift_terminal"),
    (dict(WAN21_SCHEDULER_CONFIG, use_flow_sigmas=False), "use_flow_sigmas"),
    (dict(WAN21_SCHEDULER_CONFIG, prediction_type="epsilon"), "prediction_type"),
    (dict(WAN21_SCHEDULER_CONFIG, thresholding=True), "thresholding"),
    (dict(WAN21_SCHEDULER_CONFIG, use_exponential_sigmas=True), "use_exponential_sigmas"),
    (dict(WAN21_SCHEDULER_CONFIG, predict_x0=False), "predict_x0"),
    (dict(WAN21_SCHEDULER_CONFIG, solver_type="bh3"), "solver_type"),
    (dict(WAN21_SCHEDULER_CONFIG, solver_order=0), "solver_order"),
    (dict(WAN21_SCHEDULER_CONFIG, final_sigmas_type="one"), "final_sigmas_type"),
    (dict(WAN21_SCHEDULER_CONFIG, lower_order_final=False), "lower_order_final"),
    (dict(WAN21_SCHEDULER_CONFIG, num_train_timesteps=0), "num_train_timesteps"),
    (dict(WAN21_SCHEDULER_CONFIG, disable_corrector="1"), "disable_corrector"),
])
def test_unsupported_config_options_are_named(cfg, key):
    with pytest.raises(ConfigError, match=key):
        make_sampler("auto", 6, config=cfg)


def test_supported_variants_build():
    assert make_sampler("auto", 6, config=dict(WAN21_SCHEDULER_CONFIG, solver_type="midpoint")).config.solver_type == "bh2"
    s = make_sampler("auto", 6, config=dict(WAN21_SCHEDULER_CONFIG, lower_order_final=False, solver_order=2,
                                            final_sigmas_type="sigma_min"))
    assert not s.config.lower_order_final


def test_unknown_class_in_auto_mode():
    with pytest.raises(ConfigError, match="DDIMScheduler.*name='euler'"):
        make_sampler("auto", 6, config={"_class_name": "DDIMScheduler"})
    with pytest.raises(ConfigError, match="_class_name=None"):
        make_sampler(None, 6, config={"shift": 3.0})
    with pytest.raises(ConfigError, match="dict"):
        make_sampler("euler", 6, config=[("shift", 3.0)])


def test_config_from_file_or_folder(tmp_path):
    folder = tmp_path / "scheduler"
    folder.mkdir()
    (folder / "scheduler_config.json").write_text(json.dumps(dict(WAN21_SCHEDULER_CONFIG, flow_shift=5.0)))
    for where in (folder, folder / "scheduler_config.json", str(folder)):
        s = make_sampler("auto", 4, config=where)
        assert isinstance(s, UniPCSampler) and s.shift == 5.0
    assert load_scheduler_config(folder)["flow_shift"] == 5.0
    with pytest.raises(CheckpointError, match="does not exist"):
        make_sampler("auto", 4, config=tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        make_sampler("auto", 4, config=tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a JSON object"):
        make_sampler("auto", 4, config=tmp_path / "list.json")


@pytest.mark.parametrize("name", ["euler", "unipc"])
def test_step_argument_errors(name):
    s = make_sampler(name, 4)
    x = torch.zeros(1, 2, 1, 2, 2)
    with pytest.raises(ConfigError, match="integer step index"):
        s.step(x, s.timesteps[0], x)
    with pytest.raises(ConfigError, match="outside 0..3"):
        s.step(x, 4, x)
    with pytest.raises(ConfigError, match="outside 0..3"):
        s.step(x, -1, x)
    with pytest.raises(ShapeError, match="shaped like"):
        s.step(torch.zeros(1, 2, 1, 2, 3), 0, x)
    with pytest.raises(ConfigError, match="outside 0..4"):
        s.sigma_at(5)
    with pytest.raises(ShapeError, match="randn_like"):
        s.scale_noise(x, 0.5, torch.zeros(3))
    assert s.step(x, 0, x).shape == x.shape
    s.reset()  # numpy integers are valid indices too
    assert s.step(x, np.int64(0), x).shape == x.shape


def test_euler_step_is_the_flow_update():
    """Independent of diffusers: x_next = x + (sigma_next - sigma) * v."""
    s = make_sampler("euler", 3, shift=1.0)
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    sig = s.sigmas.double()
    torch.testing.assert_close(s.step(v, 1, x).double(), x.double() + (sig[2] - sig[1]) * v.double(),
                               atol=1e-6, rtol=0)
    # with shift 1 the Euler sigmas are an even grid from 1 down to 1/1000 then 0
    torch.testing.assert_close(s.sigmas.double(), torch.tensor([1.0, 0.50050, 0.001, 0.0], dtype=torch.float64),
                               atol=1e-6, rtol=0)
