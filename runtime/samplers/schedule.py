"""Flow-matching schedules: shifted sigmas and the timesteps a Wan DiT takes.

In flow matching a noisy latent is ``x_sigma = sigma * noise + (1 - sigma) * x0`` with sigma
running from 1 (pure noise) to 0 (clean). The *flow shift* bends the schedule towards high
noise, ``s * sigma / (1 + (s - 1) * sigma)``, which large frames need. The functions here build
the exact float64-then-float32 arrays diffusers builds, so schedules agree bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["shift_sigmas", "euler_schedule", "unipc_flow_schedule", "flow_interpolate"]


def shift_sigmas(sigmas, shift: float):
    """Apply the flow shift ``s*x / (1 + (s-1)*x)`` to a numpy array or tensor (dtype kept)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def euler_schedule(steps: int, shift: float, num_train_timesteps: int = 1000
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps float32 (steps,), sigmas float32 (steps+1,)) of flow-matching Euler.

    The end points are the shifted training sigmas at t=T and t=1 (computed in float32), the
    steps are spaced evenly in *unshifted* timestep between them and then shifted again in
    float64 -- the double shift of diffusers' FlowMatchEulerDiscreteScheduler, reproduced here.
    """
    n_train = num_train_timesteps
    train_ends = torch.tensor([float(n_train), 1.0], dtype=torch.float32) / n_train
    train_ends = shift_sigmas(train_ends, shift)
    sigma_max, sigma_min = train_ends[0].item(), train_ends[1].item()
    ts = np.linspace(sigma_max * n_train, sigma_min * n_train, steps)
    sigmas = torch.from_numpy(shift_sigmas(ts / n_train, shift)).to(torch.float32)
    timesteps = sigmas * n_train
    return timesteps, torch.cat([sigmas, torch.zeros(1)])


def unipc_flow_schedule(steps: int, shift: float, num_train_timesteps: int = 1000,
                        final_sigmas_type: str = "zero") -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps int64 (steps,), sigmas float32 (steps+1,)) of UniPC with flow sigmas.

    Sigmas are evenly spaced in [1, 1/T), shifted in float64, the first nudged to 1 - 1e-6 (so its
    log-SNR stays finite); timesteps are ``sigma * T`` truncated to integers; the final sigma is 0
    ("zero") or repeats the last one ("sigma_min"). Matches diffusers' UniPCMultistepScheduler.
    """
    n_train = num_train_timesteps
    sigmas = np.linspace(1, 1 / n_train, steps + 1)[:-1]
    sigmas = shift_sigmas(sigmas, shift)
    if np.fabs(sigmas[0] - 1) < 1e-6:
        sigmas[0] -= 1e-6
    timesteps = torch.from_numpy(sigmas * n_train).to(torch.int64)
    last = sigmas[-1] if final_sigmas_type == "sigma_min" else 0.0
    sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
    return timesteps, torch.from_numpy(sigmas)


def flow_interpolate(x0: torch.Tensor, sigma, noise: torch.Tensor) -> torch.Tensor:
    """Noise ``x0`` to level ``sigma``: ``sigma * noise + (1 - sigma) * x0``.

    ``sigma`` is a float, a 0-d tensor, or a (B,) tensor of one sigma per batch item; it is
    cast to ``x0``'s dtype first, as diffusers' ``scale_noise`` does.
    """
    sigma = torch.as_tensor(sigma, device=x0.device).to(x0.dtype)
    if sigma.ndim == 1:
        sigma = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    return sigma * noise + (1.0 - sigma) * x0
