"""Flow-matching samplers (Euler, UniPC) matching diffusers' schedulers step for step.

    from vidrt.samplers import make_sampler
    sampler = make_sampler("unipc", 50, shift=3.0)        # or make_sampler("auto", 50, config=cfg_dict)
    for i, t in enumerate(sampler.timesteps):
        latents = sampler.step(model(latents, t), i, latents)
"""
from vidrt.samplers.base import Sampler
from vidrt.samplers.config import WAN21_SCHEDULER_CONFIG, FlowEulerConfig, UniPCConfig
from vidrt.samplers.factory import SAMPLER_NAMES, load_scheduler_config, make_sampler
from vidrt.samplers.flow_euler import FlowEulerSampler
from vidrt.samplers.schedule import euler_schedule, flow_interpolate, shift_sigmas, unipc_flow_schedule
from vidrt.samplers.unipc import UniPCSampler

__all__ = [
    "Sampler", "make_sampler", "SAMPLER_NAMES", "load_scheduler_config",
    "FlowEulerSampler", "UniPCSampler", "FlowEulerConfig", "UniPCConfig", "WAN21_SCHEDULER_CONFIG",
    "euler_schedule", "unipc_flow_schedule", "shift_sigmas", "flow_interpolate",
]
