"""The interface every vidrt sampler has: a fixed schedule plus ``step``.

A pipeline drives any sampler the same way::

    sampler = make_sampler("unipc", steps, shift=3.0)
    for i, t in enumerate(sampler.timesteps):
        velocity = model(latents, t.expand(batch), context)
        latents = sampler.step(velocity, i, latents)

``timesteps[i]`` is what the DiT receives at step i, ``sigmas[i]`` the noise level of the
latents going into step i (``sigmas[-1]`` is where the last step lands).
"""
from __future__ import annotations

import abc
import numbers

import torch

from vidrt.errors import ConfigError, ShapeError
from vidrt.samplers.schedule import flow_interpolate

__all__ = ["Sampler"]


class Sampler(abc.ABC):
    """A flow-matching sampler over a fixed number of steps.

    Attributes:
        name: registry name ("euler" or "unipc").
        steps: number of model evaluations.
        shift: flow shift the schedule was built with.
        num_train_timesteps: T of the model (timestep = sigma * T).
        timesteps: (steps,) the model's timestep input, on the sampler's device
            (float32 for Euler, int64 for UniPC -- as diffusers hands them to the model).
        sigmas: (steps+1,) float32 on the CPU (they feed scalar arithmetic only).
    """

    name: str
    steps: int
    shift: float
    num_train_timesteps: int
    timesteps: torch.Tensor
    sigmas: torch.Tensor

    @abc.abstractmethod
    def step(self, model_output: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        """Advance ``sample`` from ``sigmas[index]`` to ``sigmas[index + 1]`` given the model's
        velocity prediction at step ``index``; returns the new sample."""

    def reset(self) -> None:
        """Forget multistep history so a new trajectory can start (no-op for one-step samplers)."""

    def sigma_at(self, index: int) -> float:
        """Noise level of the latents entering step ``index`` (``index == steps`` is the end)."""
        if not 0 <= index <= self.steps:
            raise ConfigError(f"sigma index {index} is outside 0..{self.steps} of this {self.steps}-step "
                              f"{self.name} sampler; pass a step index in that range.")
        return float(self.sigmas[index])

    def scale_noise(self, x0: torch.Tensor, sigma, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean latents ``x0`` to level ``sigma`` (flow interpolation
        ``sigma * noise + (1 - sigma) * x0``); e.g. ``sigma=sampler.sigma_at(k)`` to start
        sampling at step k (video-to-video, partial denoising)."""
        if x0.shape != noise.shape:
            raise ShapeError(f"scale_noise got x0 of shape {tuple(x0.shape)} and noise of shape "
                             f"{tuple(noise.shape)}; pass noise shaped like x0 (torch.randn_like(x0)).")
        return flow_interpolate(x0, sigma, noise)

    def __len__(self) -> int:
        return self.steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, shift={self.shift})"

    # helpers for subclasses -------------------------------------------------------------------

    def _check_step_args(self, model_output: torch.Tensor, index: int, sample: torch.Tensor) -> int:
        """Validate ``step``'s arguments; returns the index as a plain int."""
        if isinstance(index, (torch.Tensor, bool)) or not isinstance(index, numbers.Integral):
            raise ConfigError(f"{self.name} step got index={index!r}; pass the integer step index i "
                              f"(from enumerate(sampler.timesteps)), not the timestep value.")
        if not 0 <= index < self.steps:
            raise ConfigError(f"step index {index} is outside 0..{self.steps - 1} of this "
                              f"{self.steps}-step {self.name} sampler; build it with more steps or "
                              f"pass a valid index.")
        if model_output.shape != sample.shape:
            raise ShapeError(f"{self.name} step got model_output of shape {tuple(model_output.shape)} "
                             f"for a sample of shape {tuple(sample.shape)}; the model must predict a "
                             f"velocity shaped like its input latents.")
        return int(index)
