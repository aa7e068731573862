"""Flow-matching Euler: ``x_next = x + (sigma_next - sigma) * v``, one model call per step.

Step for step the same numbers as diffusers' FlowMatchEulerDiscreteScheduler (static shift): the
update runs in float32 and returns the model output's dtype, as diffusers does.
"""
from __future__ import annotations

import torch

from vidrt.samplers.base import Sampler
from vidrt.samplers.config import FlowEulerConfig
from vidrt.samplers.schedule import euler_schedule

__all__ = ["FlowEulerSampler"]


class FlowEulerSampler(Sampler):
    """First-order flow-matching sampler; stateless between steps."""

    name = "euler"

    def __init__(self, steps: int, config: FlowEulerConfig | None = None,
                 device: torch.device | str | None = None) -> None:
        self.config = config or FlowEulerConfig()
        self.steps = steps
        self.shift = self.config.shift
        self.num_train_timesteps = self.config.num_train_timesteps
        timesteps, self.sigmas = euler_schedule(steps, self.shift, self.num_train_timesteps)
        self.timesteps = timesteps.to(device) if device is not None else timesteps

    def step(self, model_output: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        index = self._check_step_args(model_output, index, sample)
        dt = self.sigmas[index + 1] - self.sigmas[index]
        prev = sample.to(torch.float32) + dt * model_output
        return prev.to(model_output.dtype)
