"""Sampler settings, read from a diffusers ``scheduler/scheduler_config.json`` dict.

Only the settings Wan-style flow models use are implemented; a config that switches on anything
else (Karras sigmas, dynamic shifting, thresholding, ...) is rejected with a ConfigError naming the
option, rather than silently sampling differently from diffusers.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

from vidrt.errors import ConfigError

__all__ = ["FlowEulerConfig", "UniPCConfig", "WAN21_SCHEDULER_CONFIG", "EULER_CLASS", "UNIPC_CLASS"]

log = logging.getLogger(__name__)

EULER_CLASS = "FlowMatchEulerDiscreteScheduler"
UNIPC_CLASS = "UniPCMultistepScheduler"

# scheduler/scheduler_config.json of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (flow_shift 3.0 is for 480p,
# Wan recommends 5.0 for 720p).
WAN21_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": UNIPC_CLASS,
    "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
    "disable_corrector": [], "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero", "flow_shift": 3.0, "lower_order_final": True,
    "num_train_timesteps": 1000, "predict_x0": True, "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False, "sample_max_value": 1.0, "solver_order": 2,
    "solver_p": None, "solver_type": "bh2", "steps_offset": 0, "thresholding": False,
    "timestep_spacing": "linspace", "trained_betas": None, "use_beta_sigmas": False,
    "use_exponential_sigmas": False, "use_flow_sigmas": True, "use_karras_sigmas": False,
}

# option -> the one value vidrt implements (a falsy value stands for every falsy value).
_EULER_FIXED = {
    "use_dynamic_shifting": False, "invert_sigmas": False, "shift_terminal": None,
    "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
    "stochastic_sampling": False,
}
_UNIPC_FIXED = {
    "use_flow_sigmas": True, "prediction_type": "flow_prediction", "predict_x0": True,
    "thresholding": False, "solver_p": None, "use_karras_sigmas": False,
    "use_exponential_sigmas": False, "use_beta_sigmas": False, "use_dynamic_shifting": False,
    "shift_terminal": None,
}
# diffusers maps these older solver names to bh2
_BH2_ALIASES = ("midpoint", "heun", "logrho")


def _check_fixed(config: Mapping[str, Any], fixed: Mapping[str, Any], sampler: str) -> None:
    for key, want in fixed.items():
        got = config.get(key, want)
        same = (bool(got) == bool(want)) if (want is None or isinstance(want, bool)) else got == want
        if not same:
            raise ConfigError(
                f"scheduler config sets {key}={got!r}, which vidrt's {sampler} sampler does not implement "
                f"(it needs {key}={want!r}); remove that option from scheduler_config.json or pass "
                f"config=None to use the Wan 2.1 defaults.")


def _positive_int(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"scheduler config {key}={value!r} must be a positive integer; fix the value "
                          f"(diffusers' default is {default}).")
    return value


def check_shift(shift: Any, where: str = "shift") -> float:
    """A flow shift must be a finite number > 0 (1.0 = no shift)."""
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise ConfigError(f"{where}={shift!r} is not a valid flow shift; pass a number > 0 "
                          f"(Wan 2.1 uses 3.0 for 480p and 5.0 for 720p, 1.0 means no shift).")
    return float(shift)


def _unknown_keys(config: Mapping[str, Any], known: set[str], cls: str) -> None:
    extra = sorted(k for k in config if not k.startswith("_") and k not in known)
    if extra:
        log.debug("ignoring %s options vidrt does not read: %s", cls, ", ".join(extra))


@dataclass(frozen=True)
class FlowEulerConfig:
    """Settings of flow-matching Euler (diffusers FlowMatchEulerDiscreteScheduler)."""
    num_train_timesteps: int = 1000
    shift: float = 1.0

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> "FlowEulerConfig":
        _check_fixed(config, _EULER_FIXED, "euler")
        _unknown_keys(config, set(_EULER_FIXED) | {
            "num_train_timesteps", "shift", "base_shift", "max_shift", "base_image_seq_len",
            "max_image_seq_len", "time_shift_type"}, EULER_CLASS)
        return cls(num_train_timesteps=_positive_int(config, "num_train_timesteps", 1000),
                   shift=check_shift(config.get("shift", 1.0), "scheduler config shift"))


@dataclass(frozen=True)
class UniPCConfig:
    """Settings of UniPC multistep with flow sigmas (diffusers UniPCMultistepScheduler with
    use_flow_sigmas=True, prediction_type="flow_prediction", predict_x0=True)."""
    num_train_timesteps: int = 1000
    flow_shift: float = 1.0
    solver_order: int = 2
    solver_type: str = "bh2"
    lower_order_final: bool = True
    final_sigmas_type: str = "zero"
    disable_corrector: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_shift(self.flow_shift, "flow_shift")
        if isinstance(self.solver_order, bool) or not isinstance(self.solver_order, int) or self.solver_order < 1:
            raise ConfigError(f"solver_order={self.solver_order!r} must be a positive integer (Wan uses 2).")
        if self.solver_type not in ("bh1", "bh2"):
            raise ConfigError(f"solver_type={self.solver_type!r} is not a UniPC solver; use 'bh1' or 'bh2' "
                              f"(Wan uses 'bh2').")
        if self.final_sigmas_type not in ("zero", "sigma_min"):
            raise ConfigError(f"final_sigmas_type={self.final_sigmas_type!r} is unknown; use 'zero' "
                              f"(Wan) or 'sigma_min'.")
        # Without lower_order_final the last step uses older predictions across a step whose
        # log-SNR change is infinite (final sigma 0) or zero (sigma_min, order >= 3): diffusers
        # returns NaN or fails to solve there, so refuse the combination up front.
        if not self.lower_order_final and self.solver_order >= (2 if self.final_sigmas_type == "zero" else 3):
            raise ConfigError(f"lower_order_final=False with solver_order={self.solver_order} and "
                              f"final_sigmas_type={self.final_sigmas_type!r} breaks the last UniPC step "
                              f"(NaN in diffusers); set lower_order_final=True (Wan's setting).")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in self.disable_corrector):
            raise ConfigError(f"disable_corrector={self.disable_corrector!r} must list integer step indices.")

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> "UniPCConfig":
        _check_fixed(config, _UNIPC_FIXED, "unipc")
        _unknown_keys(config, set(_UNIPC_FIXED) | {
            "num_train_timesteps", "flow_shift", "solver_order", "solver_type", "lower_order_final",
            "final_sigmas_type", "disable_corrector", "beta_start", "beta_end", "beta_schedule",
            "trained_betas", "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing",
            "steps_offset", "rescale_betas_zero_snr", "time_shift_type", "sigma_min", "sigma_max"},
            UNIPC_CLASS)
        solver_type = config.get("solver_type", "bh2")
        if solver_type in _BH2_ALIASES:
            solver_type = "bh2"
        disable = config.get("disable_corrector") or ()
        if not isinstance(disable, (list, tuple)):
            raise ConfigError(f"scheduler config disable_corrector={disable!r} must be a list of step indices.")
        return cls(num_train_timesteps=_positive_int(config, "num_train_timesteps", 1000),
                   flow_shift=check_shift(config.get("flow_shift", 1.0), "scheduler config flow_shift"),
                   solver_order=config.get("solver_order", 2),
                   solver_type=solver_type,
                   lower_order_final=bool(config.get("lower_order_final", True)),
                   final_sigmas_type=config.get("final_sigmas_type", "zero"),
                   disable_corrector=tuple(disable))
