"""``make_sampler``: pick and build a sampler from a name, a step count and a scheduler config."""
from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import os
from collections.abc import Mapping
from typing import Any

import torch

from vidrt.errors import CheckpointError, ConfigError
from vidrt.samplers.base import Sampler
from vidrt.samplers.config import (EULER_CLASS, UNIPC_CLASS, WAN21_SCHEDULER_CONFIG, FlowEulerConfig,
                                   UniPCConfig, check_shift)
from vidrt.samplers.flow_euler import FlowEulerSampler
from vidrt.samplers.unipc import UniPCSampler

__all__ = ["make_sampler", "SAMPLER_NAMES", "load_scheduler_config"]

log = logging.getLogger(__name__)

SAMPLER_NAMES = ("euler", "unipc")
_ALIASES = {
    "euler": "euler", "flow_euler": "euler", "flowmatch_euler": "euler", EULER_CLASS.lower(): "euler",
    "unipc": "unipc", "unipc_multistep": "unipc", UNIPC_CLASS.lower(): "unipc",
}
_BY_CLASS = {EULER_CLASS: "euler", UNIPC_CLASS: "unipc"}


def load_scheduler_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a diffusers scheduler config: a scheduler_config.json file or the folder holding it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "scheduler_config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"scheduler config {path} does not exist; pass the checkpoint's "
                              f"scheduler/scheduler_config.json (or config=None for Wan 2.1 defaults).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"scheduler config {path} is not valid JSON ({e}); re-download or fix the file.") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"scheduler config {path} holds a {type(config).__name__}, not a JSON object; "
                              f"fix or replace the file.")
    return config


def _resolve_name(name: str | None, config: Mapping[str, Any] | None) -> str:
    valid = ", ".join(repr(n) for n in SAMPLER_NAMES + ("auto",))
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"sampler name {name!r} is not a string; use one of {valid}.")
    key = (name or "auto").strip().lower()
    if key != "auto":
        if key not in _ALIASES:
            raise ConfigError(f"unknown sampler {name!r}; valid samplers are {valid}.")
        return _ALIASES[key]
    if config is None:
        return "unipc"  # Wan 2.1's default scheduler
    cls = config.get("_class_name")
    if cls not in _BY_CLASS:
        raise ConfigError(f"scheduler config has _class_name={cls!r}, which vidrt cannot run; supported are "
                          f"{EULER_CLASS} and {UNIPC_CLASS}. Pick one of them yourself: sampler='euler' or "
                          f"sampler='unipc' (CLI: --sampler euler|unipc; make_sampler(name='euler'|'unipc')).")
    return _BY_CLASS[cls]


def _euler_config(config: Mapping[str, Any]) -> FlowEulerConfig:
    if config.get("_class_name") in (None, EULER_CLASS):
        return FlowEulerConfig.from_diffusers(config)
    # another scheduler's config (e.g. Wan's UniPC one): keep its training length and flow shift
    shift = config.get("flow_shift", config.get("shift", 1.0))
    return FlowEulerConfig(num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
                           shift=check_shift(shift, "scheduler config flow_shift"))


def _unipc_config(config: Mapping[str, Any]) -> UniPCConfig:
    if config.get("_class_name") == EULER_CLASS:
        # an Euler checkpoint run with UniPC: its shift, Wan's UniPC settings otherwise
        return UniPCConfig(num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
                           flow_shift=check_shift(config.get("shift", 1.0), "scheduler config shift"))
    return UniPCConfig.from_diffusers(config)


def make_sampler(name: str | None, steps: int, *, shift: float | None = None,
                 config: Mapping[str, Any] | str | os.PathLike | None = None,
                 device: torch.device | str | None = None) -> Sampler:
    """Build a sampler for ``steps`` model evaluations.

    Args:
        name: "euler" (flow-matching Euler), "unipc" (UniPC multistep), or "auto"/None to follow
            ``config["_class_name"]`` (UniPC when there is no config). diffusers class names work too.
        steps: number of denoising steps, >= 1.
        shift: flow shift; overrides the config's ``shift``/``flow_shift``.
        config: a diffusers scheduler_config.json as a dict (or its path / folder). Without one,
            Wan 2.1's settings apply (UniPC bh2, order 2, flow shift 3.0). A config of the other
            sampler's class lends its training length and shift.
        device: where ``timesteps`` live (sigmas stay on the CPU).
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_scheduler_config(config)
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(f"config must be a scheduler_config.json dict, path or None, not "
                          f"{type(config).__name__}.")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ConfigError(f"steps={steps!r} is not a valid step count; pass an integer >= 1 "
                          f"(Wan uses 50, distilled models 4-8).")
    steps = int(steps)
    key = _resolve_name(name, config)
    source = config if config is not None else WAN21_SCHEDULER_CONFIG
    if key == "euler":
        cfg = _euler_config(source)
        if shift is not None:
            cfg = dataclasses.replace(cfg, shift=check_shift(shift))
        sampler: Sampler = FlowEulerSampler(steps, cfg, device=device)
    else:
        cfg = _unipc_config(source)
        if shift is not None:
            cfg = dataclasses.replace(cfg, flow_shift=check_shift(shift))
        sampler = UniPCSampler(steps, cfg, device=device)
    log.debug("sampler %r: %s", name, sampler)
    return sampler
