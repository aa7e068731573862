"""UniPC multistep sampler (predictor UniP + corrector UniC, B(h) variants) on flow sigmas.

Each step turns the model's velocity into an x0 prediction ``x0 = x - sigma * v``, corrects the
sample the previous step produced using that fresh prediction (UniC), then extrapolates to the
next sigma from the last ``order`` x0 predictions (UniP). Work happens in the log-SNR variable
``lambda = log((1 - sigma) / sigma)``. The arithmetic (float32 scalars, the order warm-up, lower
order on the final steps) follows diffusers' UniPCMultistepScheduler with use_flow_sigmas=True,
prediction_type="flow_prediction", predict_x0=True, which is what Wan 2.1 ships.

State (recent x0 predictions, the last sample) lives on the instance: one sampler runs one
trajectory at a time; starting again at index 0 (or calling ``reset()``) clears it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vidrt.errors import ConfigError
from vidrt.samplers.base import Sampler
from vidrt.samplers.config import UniPCConfig
from vidrt.samplers.schedule import unipc_flow_schedule

__all__ = ["UniPCSampler"]


@dataclass
class _BhTerms:
    """Scalar (0-d float32) coefficients of one UniP/UniC update from sigma_s0 to sigma_t."""
    ratio: torch.Tensor      # sigma_t / sigma_s0
    a_phi: torch.Tensor      # alpha_t * (e^{-h} - 1)
    a_b: torch.Tensor        # alpha_t * B(h)
    R: torch.Tensor          # (order, order) rows rks**(i-1)
    b: torch.Tensor          # (order,)
    d1s: list[torch.Tensor]  # scaled differences of older x0 predictions to the newest


def _weighted_sum(weights: torch.Tensor, terms: list[torch.Tensor]) -> torch.Tensor:
    out = weights[0] * terms[0]
    for w, term in zip(weights[1:], terms[1:]):
        out = out + w * term
    return out


class UniPCSampler(Sampler):
    """UniPC-p multistep flow sampler (p = ``config.solver_order``, Wan uses 2 with bh2)."""

    name = "unipc"

    def __init__(self, steps: int, config: UniPCConfig | None = None,
                 device: torch.device | str | None = None) -> None:
        self.config = config or UniPCConfig()
        self.steps = steps
        self.shift = self.config.flow_shift
        self.num_train_timesteps = self.config.num_train_timesteps
        timesteps, self.sigmas = unipc_flow_schedule(steps, self.shift, self.num_train_timesteps,
                                                     self.config.final_sigmas_type)
        self.timesteps = timesteps.to(device) if device is not None else timesteps
        self._no_corrector = frozenset(self.config.disable_corrector)
        self.reset()

    def reset(self) -> None:
        self._history: list[torch.Tensor] = []  # x0 predictions, newest last, at most solver_order
        self._warm = 0                          # steps taken so far, capped at solver_order
        self._last_sample: torch.Tensor | None = None
        self._last_order = 0
        self._next_index: int | None = None

    # -- public ---------------------------------------------------------------------------------

    def step(self, model_output: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        index = self._check_step_args(model_output, index, sample)
        if index != self._next_index:
            if self._next_index is not None and index != 0:
                raise ConfigError(
                    f"unipc is a multistep sampler: expected step index {self._next_index}, got {index}. "
                    f"Run the steps in order, or call reset() (or step index 0) to start a new trajectory.")
            self.reset()
        cfg = self.config

        x0 = sample - self.sigmas[index] * model_output
        if index > 0 and self._last_sample is not None and index - 1 not in self._no_corrector:
            sample = self._correct(index, x0)

        self._history = (self._history + [x0])[-cfg.solver_order:]
        order = cfg.solver_order
        if cfg.lower_order_final:
            order = min(order, self.steps - index)
        order = min(order, self._warm + 1)

        self._last_sample, self._last_order = sample, order
        prev = self._predict(index, sample, order)
        self._warm = min(self._warm + 1, cfg.solver_order)
        self._next_index = index + 1
        if self._next_index == self.steps:  # trajectory done: drop the latents we held on to
            self._history, self._last_sample = [], None
        return prev

    # -- UniP / UniC ----------------------------------------------------------------------------

    def _log_snr(self, index: int) -> torch.Tensor:
        sigma = self.sigmas[index]
        return torch.log(1 - sigma) - torch.log(sigma)

    def _terms(self, s0: int, t: int, order: int, history: list[torch.Tensor]) -> _BhTerms:
        """Coefficients to go from sigma index s0 (newest prediction history[-1]) to index t,
        using the predictions at s0-1 .. s0-order+1 for the higher-order differences."""
        lam_s0 = self._log_snr(s0)
        h = self._log_snr(t) - lam_s0
        m0 = history[-1]
        rks, d1s = [], []
        for k in range(1, order):
            rk = (self._log_snr(s0 - k) - lam_s0) / h
            rks.append(rk)
            d1s.append((history[-(k + 1)] - m0) / rk)
        rks.append(torch.ones(()))
        rks = torch.stack(rks)

        hh = -h  # x0-prediction form
        h_phi_1 = torch.expm1(hh)
        b_h = torch.expm1(hh) if self.config.solver_type == "bh2" else hh
        h_phi_k = h_phi_1 / hh - 1
        factorial = 1
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial

        sigma_t = self.sigmas[t]
        alpha_t = 1 - sigma_t
        return _BhTerms(ratio=sigma_t / self.sigmas[s0], a_phi=alpha_t * h_phi_1, a_b=alpha_t * b_h,
                        R=torch.stack(rows), b=torch.stack(b), d1s=d1s)

    def _predict(self, index: int, x: torch.Tensor, order: int) -> torch.Tensor:
        """UniP: extrapolate from sigma[index] to sigma[index + 1]."""
        terms = self._terms(index, index + 1, order, self._history)
        x_next = terms.ratio * x - terms.a_phi * self._history[-1]
        if terms.d1s:
            if order == 2:
                rhos = torch.ones(1, dtype=x.dtype) * 0.5
            else:
                rhos = torch.linalg.solve(terms.R[:-1, :-1], terms.b[:-1]).to(x.dtype)
            x_next = x_next - terms.a_b * _weighted_sum(rhos, terms.d1s)
        return x_next.to(x.dtype)

    def _correct(self, index: int, x0: torch.Tensor) -> torch.Tensor:
        """UniC: redo the previous step (index-1 -> index) with the new prediction ``x0``."""
        order = self._last_order
        x = self._last_sample
        terms = self._terms(index - 1, index, order, self._history)
        m0 = self._history[-1]
        x_corr = terms.ratio * x - terms.a_phi * m0
        if order == 1:
            rhos = torch.ones(1, dtype=x.dtype) * 0.5
        else:
            rhos = torch.linalg.solve(terms.R, terms.b).to(x.dtype)
        correction = rhos[-1] * (x0 - m0)
        if terms.d1s:
            correction = _weighted_sum(rhos[:-1], terms.d1s) + correction
        return (x_corr - terms.a_b * correction).to(x.dtype)
