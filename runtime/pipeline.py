"""Text-to-video pipeline: prompt -> UMT5 context -> flow-matching loop over the DiT -> causal VAE -> Video.

One path; the speed switches (attention backend, precision, fused ops, cross-attention K/V reuse,
batched CFG) are settings on it, each compared against the exact path (fp32, sdpa) in tests.
"""
from __future__ import annotations

import json
import logging
import math
import operator
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from vidrt.attention import check_backend
from vidrt.checkpoints.load import (load_text_encoder, load_transformer, load_vae,
                                    resolve_layout)
from vidrt.errors import CheckpointError, ConfigError, LatencyError, ShapeError, out_of_memory_as_shape_error
from vidrt.models.dit import WanDiT
from vidrt.precision import check_plain_precision, check_precision, dtype_of, is_quantized, resolve_device
from vidrt.regions import RegionRun, Regions
from vidrt.video import Video, to_frames

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "default"
EMBEDDED_CAUSAL_MODEL = "default-causal"   # the default model's VAE + text encoder with its causal DiT


@dataclass
class GenerationDefaults:
    """Per-model defaults; a checkpoint may override them in its vidrt.json."""

    height: int = 480
    width: int = 832
    num_frames: int = 81
    steps: int = 50
    guidance: float = 5.0
    guidance_2: Optional[float] = None  # two-expert (Wan 2.2) checkpoints: the low-noise expert's; None = guidance
    fps: float = 16.0
    max_sequence_length: int = 512
    sampler: str = "auto"  # "auto" = the checkpoint's scheduler_config
    shift: Optional[float] = None  # None = the checkpoint's flow_shift
    negative_prompt: str = ""
    region_layout: Optional[str] = None  # regions=True's layout: "world" (the synthetic world's); None = none

    @classmethod
    def from_dict(cls, d: dict, where: str = "vidrt.json") -> "GenerationDefaults":
        from vidrt.models.config_types import check_config, field_types

        check_config(d, field_types(cls), where)
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class StepState:
    """What an ``on_step`` callback sees after each denoising step. The tensors are the loop's own (fp32, on the
    pipeline's device, every candidate row): read them or clone them, do not modify them."""

    step: int                # index of the step just taken (0-based)
    steps: int               # steps in the run
    sigma: float             # noise level the step started from (1 = pure noise)
    latents: torch.Tensor    # (N*B, C, T', H', W') after the step
    x0: torch.Tensor         # the clean-latent estimate of this step's prediction (what a stop decodes)


def embedded_model_path(causal: bool = False) -> Path:
    """Folder of the embedded default model shipped inside the package (``causal``: of its causal DiT,
    a diffusers transformer folder used with the default model's VAE and text encoder)."""
    return Path(str(resources.files("vidrt") / "assets" / ("default_causal" if causal else "default")))


def embedded_causal_transformer() -> Optional[Path]:
    """The embedded causal DiT's transformer folder, or None when this build has none."""
    path = embedded_model_path(causal=True) / "transformer"
    return path if (path / "config.json").is_file() else None


class Pipeline:
    """Runs a Wan-family text-to-video checkpoint. Build it with :meth:`from_pretrained`.

    ``transformer`` denoises every step, except in two-expert checkpoints (Wan 2.2 A14B): there
    ``transformer_2`` takes the timesteps below ``boundary_ratio * num_train_timesteps`` (low noise), as in
    diffusers' WanPipeline.
    """

    def __init__(self, transformer: WanDiT, vae, text_encoder, *, scheduler_config: dict,
                 defaults: GenerationDefaults, device: torch.device, precision: str, attention: str,
                 source: str = "", vae_scale_temporal: int = 4, vae_scale_spatial: int = 8,
                 transformer_2: Optional[WanDiT] = None, boundary_ratio: Optional[float] = None):
        if (transformer_2 is None) != (boundary_ratio is None):
            raise ConfigError("a two-expert pipeline needs both transformer_2 and boundary_ratio (or neither)")
        self.transformer = transformer
        self.transformer_2 = transformer_2
        self.boundary_ratio = boundary_ratio
        self.vae = vae
        self.text_encoder = text_encoder
        self.scheduler_config = scheduler_config
        self.defaults = defaults
        self.device = device
        self.precision = precision
        self.attention = attention
        self.source = source
        self.vae_scale_temporal = vae_scale_temporal
        self.vae_scale_spatial = vae_scale_spatial
        self.batch_cfg = True  # cond + uncond in one DiT call
        self.cost_load_check = True  # latency targets: rescale the cached cost model to the machine's load now
        self.teacache_coefficients: tuple[float, ...] = (1.0, 0.0)  # fitted by `vidrt calibrate`
        self.teacache_coefficients_2: Optional[tuple[float, ...]] = None  # transformer_2's (None: the same)
        self._verifier = None
        for dit in self.experts:
            dit.set_attention_backend(attention)

    @property
    def experts(self) -> list[WanDiT]:
        """The DiTs that denoise: [transformer], or [transformer, transformer_2] for a two-expert checkpoint."""
        return [self.transformer] if self.transformer_2 is None else [self.transformer, self.transformer_2]

    @property
    def verifier(self):
        """What ``candidates=N`` keeps the best clip by: an object with ``score(videos (B, 3, T, H, W) in [-1, 1],
        prompts) -> (B,)`` scores, higher is better. Loaded on first use from the checkpoint's ``verifier/`` folder
        (the embedded model ships one, `vidrt.world.verifier`); None when there is none. Assign your own to use
        best-of-N with any checkpoint."""
        if self._verifier is None and self.source and (Path(self.source) / "verifier" / "config.json").is_file():
            from vidrt.world.verifier import load_verifier

            self._verifier = load_verifier(Path(self.source) / "verifier", self.device)
        return self._verifier

    @verifier.setter
    def verifier(self, value) -> None:
        if value is not None and not callable(getattr(value, "score", None)):
            raise ConfigError(f"a verifier needs a score(videos, prompts) method; got {type(value).__name__}")
        self._verifier = value

    def expert_index(self, timestep) -> int:
        """Which of :attr:`experts` denoises at ``timestep`` (0..num_train_timesteps): 1 below the boundary."""
        if self.transformer_2 is None:
            return 0
        boundary = self.boundary_ratio * float(self.scheduler_config.get("num_train_timesteps", 1000))
        return 0 if float(timestep) >= boundary else 1

    def experts_at(self, timesteps: torch.Tensor) -> list[int]:
        """:meth:`expert_index` of every timestep of a schedule (one host sync for all of them)."""
        if self.transformer_2 is None:
            return [0] * len(timesteps)
        return [self.expert_index(t) for t in timesteps.tolist()]

    def guidance_scales(self, guidance=None, guidance_2=None) -> tuple[float, ...]:
        """Each expert's classifier-free guidance scale, checked: ``guidance`` (None: the model's default) and, for a
        two-expert checkpoint, the low-noise expert's ``guidance_2`` (None: the checkpoint's, else ``guidance``)."""
        d = self.defaults
        guidance = d.guidance if guidance is None else _number(
            "guidance", guidance, "use a finite number, e.g. guidance=5.0 (<= 1 turns classifier-free guidance off)")
        if self.transformer_2 is None:
            if guidance_2 is not None:
                raise ConfigError("guidance_2 is the low-noise expert's scale of a two-expert (Wan 2.2 A14B) "
                                  "checkpoint; this pipeline has one DiT: use guidance")
            return (guidance,)
        guidance_2 = (d.guidance_2 if d.guidance_2 is not None else guidance) if guidance_2 is None else _number(
            "guidance_2", guidance_2, "use a finite number, e.g. guidance_2=3.0 (<= 1 turns guidance off there)")
        return guidance, guidance_2

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: Union[str, Path, None] = None,
        *,
        device: Union[str, torch.device, None] = "cpu",
        precision: str = "fp32",
        attention: str = "sdpa",
        transformer: Union[str, Path, None] = None,
        transformer_2: Union[str, Path, None] = None,
        boundary_ratio: Optional[float] = None,
        vae_precision: Optional[str] = None,
        text_precision: Optional[str] = None,
        fused_ops: bool = False,
        backend: str = "torch",
    ) -> "Pipeline":
        """Load a checkpoint folder (diffusers or original Wan layout); no path = the embedded default model.

        ``transformer=`` swaps in another DiT (diffusers transformer folder, original Wan DiT folder or a
        bare state-dict file) that reuses this checkpoint's VAE and text encoder. ``transformer_2=`` does the
        same for the low-noise expert of a two-expert (Wan 2.2 A14B) checkpoint, or makes a one-DiT checkpoint a
        two-expert one together with ``boundary_ratio`` (which also overrides a checkpoint's own). ``vae_precision`` and
        ``text_precision`` default to fp32 for the VAE and to ``precision`` for the text encoder.
        ``fused_ops`` runs the DiT's norm+modulate and gated residuals as Triton kernels.
        """
        dev = resolve_device(device)
        dtype = check_precision(precision, dev)
        if backend != "torch":  # exported graphs (vidrt.export): same sampler loop, other networks
            from vidrt.export.backends import build_pipeline

            swaps = [n for n, v in (("transformer", transformer), ("transformer_2", transformer_2),
                                    ("boundary_ratio", boundary_ratio)) if v is not None]
            if swaps:
                raise ConfigError(f"{', '.join(swaps)}= cannot change an exported model (backend={backend!r}); build "
                                  "a checkpoint folder with those components and export it, or use backend='torch'")

            return build_pipeline(cls, path, backend=backend, device=dev, precision=precision, attention=attention)
        vae_dtype = check_plain_precision(vae_precision or "fp32", dev, "VAE")
        text_dtype = (check_plain_precision(text_precision, dev, "text encoder") if text_precision
                      else dtype_of(precision))  # quantized DiT modes: their compute dtype (bf16)
        check_backend(attention)
        if str(path) == EMBEDDED_CAUSAL_MODEL:
            if transformer is not None:
                raise ConfigError(f"'{EMBEDDED_CAUSAL_MODEL}' already names its transformer; pass the base model "
                                  f"('{EMBEDDED_MODEL}') with transformer=")
            transformer = embedded_causal_transformer()
            if transformer is None:
                raise CheckpointError(f"the embedded causal model is not in this build "
                                      f"({embedded_model_path(causal=True)} has no transformer/config.json); "
                                      "train it with tools/train_default_model.py or pass a causal checkpoint")
            path = None
        if path is None or str(path) == EMBEDDED_MODEL:
            path = embedded_model_path()
            if not (path / "model_index.json").is_file():
                raise CheckpointError(f"the embedded default model is not in this build ({path} is empty); "
                                      "pass a checkpoint folder, or reinstall vidrt from a release")
        layout = resolve_layout(path)
        defaults = GenerationDefaults.from_dict(layout.defaults, where=str(layout.root / "vidrt.json"))
        boundary = _check_boundary(layout, transformer_2, boundary_ratio)
        t0 = time.perf_counter()
        dit = load_transformer(layout.transformer, dtype=dtype, device=dev)
        if transformer is not None:
            dit = load_transformer(transformer, dtype=dtype, device=dev, base_config=dit.config)
        dit_2 = None
        if boundary is not None:
            dit_2 = load_transformer(transformer_2 or layout.transformer_2, dtype=dtype, device=dev,
                                     base_config=dit.config)
            _check_experts(dit, dit_2)
        for expert in (dit, dit_2):
            if expert is not None and is_quantized(precision):  # fp8 / int8: quantize the block linears
                from vidrt.quant import quantize_dit

                quantize_dit(expert, precision)
        vae = load_vae(layout, dtype=vae_dtype, device=dev)
        _check_latent_channels(dit, vae, layout)
        text = load_text_encoder(layout, dtype=text_dtype, device=dev, max_length=defaults.max_sequence_length)
        logger.info("loaded %s (%s layout) in %.1fs", layout.root, layout.kind, time.perf_counter() - t0)
        pipe = cls(dit, vae, text, scheduler_config=layout.scheduler_config, defaults=defaults, device=dev,
                   precision=precision, attention=attention, source=str(layout.root),
                   vae_scale_temporal=vae.temporal_factor, vae_scale_spatial=vae.spatial_factor,
                   transformer_2=dit_2, boundary_ratio=boundary)
        if fused_ops:
            check_backend("triton")
            for expert in pipe.experts:
                expert.set_fused_ops(True)
        from vidrt.caching.calibration import load_calibration

        calibration = load_calibration(layout.root)
        if calibration.get("teacache_coefficients"):
            pipe.teacache_coefficients = tuple(calibration["teacache_coefficients"])
        if calibration.get("teacache_coefficients_2") and dit_2 is not None:
            pipe.teacache_coefficients_2 = tuple(calibration["teacache_coefficients_2"])
        return pipe

    # ------------------------------------------------------------------ shapes
    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.patch_embedding.weight.dtype

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """(B, C, T', H', W') of the latents for a clip; a clear error for sizes the model cannot make."""
        st, ss = self.vae_scale_temporal, self.vae_scale_spatial
        _, ph, pw = self.transformer.config.patch_size
        if num_frames < 1 or (num_frames - 1) % st:
            k = max(0, round((num_frames - 1) / st))
            raise ShapeError(f"num_frames={num_frames} is not {st}k+1; the causal VAE makes 1 + {st}k frames. "
                             f"Use {st * k + 1} or {st * (k + 1) + 1}")
        mult_h, mult_w = ss * ph, ss * pw
        if height <= 0 or width <= 0 or height % mult_h or width % mult_w:
            raise ShapeError(f"height x width = {height}x{width} must be positive multiples of {mult_h}x{mult_w} "
                             f"(VAE x{ss} times patch {ph}x{pw}); e.g. {max(mult_h, height // mult_h * mult_h)}x"
                             f"{max(mult_w, width // mult_w * mult_w)}")
        return (batch, self.transformer.config.in_channels, (num_frames - 1) // st + 1, height // ss, width // ss)

    # ------------------------------------------------------------------ text
    def encode_prompts(self, prompts: Sequence[str], max_sequence_length: Optional[int] = None) -> torch.Tensor:
        n = self.defaults.max_sequence_length if max_sequence_length is None else self._text_len(max_sequence_length)
        ctx = self.text_encoder.encode(list(prompts), n)
        return ctx.to(self.device, self.dtype)

    def _text_len(self, n) -> int:
        """``max_sequence_length`` as a positive whole number (UMT5's relative positions set no upper limit)."""
        n = _whole("max_sequence_length", n)
        if n < 1:
            raise ConfigError(f"max_sequence_length={n}; use at least 1 text position, or None for the model's "
                              f"{self.defaults.max_sequence_length}")
        return n

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, Sequence[str]],
        negative_prompt: Union[str, Sequence[str], None] = None,
        *,
        num_frames: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        guidance_2: Optional[float] = None,
        seed: int = 0,
        latents: Optional[torch.Tensor] = None,
        output: str = "video",
        sampler: Optional[str] = None,
        shift: Optional[float] = None,
        max_sequence_length: Optional[int] = None,
        cache: Optional[str] = None,
        cache_threshold: Optional[float] = None,
        cfg_interval: int = 2,
        guidance_interval: Optional[tuple[float, float]] = None,
        latency_target: Optional[float] = None,
        deadline: Optional[float] = None,
        candidates: int = 1,
        on_step: Optional[Callable[[StepState], Optional[bool]]] = None,
        regions: Union[bool, Regions, None] = None,
        progress: bool = True,
    ) -> Union[Video, list[Video], torch.Tensor]:
        """Generate one clip per prompt. Returns a Video (a list for a list of prompts), or the final
        latents (B, C, T', H', W') with ``output="latent"``.

        ``latents`` fixes the initial noise (same shape as :meth:`latent_shape`), else it is drawn from
        ``seed`` on the CPU (so a seed gives the same clip on every device). ``cache`` switches on step
        caches ("teacache", "first_block", "cfg", or combined like "teacache+cfg") with
        ``cache_threshold`` (the CFG cache runs the unconditional branch every ``cfg_interval`` steps);
        their statistics land in ``video.stats["cache"]``. ``guidance_interval`` (sigma_lo, sigma_hi) applies
        classifier-free guidance only at noise levels in that range (Kynkaanniemi et al. 2024) and runs the
        conditional branch alone elsewhere (fewer DiT calls); None: at every step.

        Two-expert checkpoints (Wan 2.2 A14B): ``guidance_2`` is the low-noise expert's scale (default: the
        checkpoint's, else ``guidance``), as diffusers' ``guidance_scale_2``. A step runs classifier-free guidance
        when its own scale is > 1; step caches start afresh when the expert changes. ``video.stats["experts"]``
        counts the steps each expert took.

        ``latency_target`` (seconds) lets the scheduler choose steps, cache and CFG mode (overriding
        those arguments) from this device's calibrated cost model; an impossible target raises
        LatencyError before any work. ``deadline`` (a ``time.time()`` instant) stops denoising cleanly
        when reached and decodes the current estimate; ``stats["stopped"]`` says how far it got.

        ``candidates=N`` (best-of-N) samples N clips per prompt in one batch -- candidate c from ``seed + c``, or
        from rows ``c*B .. c*B+B-1`` of ``latents`` (N*B rows) -- and keeps the one :attr:`verifier` scores highest
        (N times the DiT and VAE work); ``stats["candidates"]`` holds every score and the pick. Candidate 0 is the
        clip ``candidates=1`` gives.

        ``on_step(state)`` is called after every denoising step with a :class:`StepState` (previews of the clean
        estimate, progress reports, research probes); returning ``False`` (any false value but None) stops denoising
        there and decodes that estimate, as a deadline does (``stats["stopped"]["reason"] == "callback"``). Time spent
        in the callback counts toward a ``latency_target``'s budget and a ``deadline``.

        ``regions`` switches on regional prompting from the sample's own layout (`vidrt.regions`): after a few
        plain steps each object of a multi-object prompt is found in the clean estimate and its region denoised
        under its own one-object prompt (one more DiT row per object and step, one VAE decode per layout read).
        True uses the checkpoint's layout (the embedded model's: `vidrt.world.layout.WorldLayout`); a
        :class:`vidrt.Regions` sets the layout and when it is read. ``stats["regions"]`` reports the reads.
        """
        from vidrt.caching.policy import CachePlan, make_cache, parse_policy
        from vidrt.caching.step_cache import BlockStackCache
        from vidrt.samplers import make_sampler

        # every argument checked here, before any work (text encoding, the latency plan's calibration)
        d = self.defaults
        single = isinstance(prompt, str)
        prompts = _strings("prompt", prompt)
        candidates = _whole("candidates", candidates)
        if candidates < 1:
            raise ConfigError(f"candidates={candidates}; use 1 (no selection) or more clips per prompt to pick from")
        if candidates > 1:
            if self.verifier is None:
                raise ConfigError(f"candidates={candidates} needs a verifier to pick the best clip and "
                                  f"{self.source or 'this pipeline'} has none (no verifier/ folder); set "
                                  "pipe.verifier or use candidates=1")
            check = getattr(self.verifier, "check_prompts", None)
            if check is not None:
                check(prompts)
        if any(not p.strip() for p in prompts):
            logger.warning("empty prompt: the clip is generated without text conditioning; describe a scene "
                           "to steer it")
        if negative_prompt is None:
            negative_prompt = d.negative_prompt
        negs = _strings("negative_prompt", negative_prompt)
        if isinstance(negative_prompt, str):
            negs = negs * len(prompts)
        if len(negs) != len(prompts):
            raise ConfigError(f"{len(negs)} negative prompts for {len(prompts)} prompts; give one or one per prompt")
        if output not in ("video", "latent"):
            raise ConfigError(f"output={output!r}; use 'video' or 'latent'")
        num_frames = d.num_frames if num_frames is None else _whole("num_frames", num_frames)
        height = d.height if height is None else _whole("height", height)
        width = d.width if width is None else _whole("width", width)
        steps = d.steps if steps is None else _whole("steps", steps)
        scales = self.guidance_scales(guidance, guidance_2)
        guidance = scales[0]
        if steps < 1:
            raise ConfigError(f"steps={steps}; use at least 1 denoising step")
        if shift is not None:
            shift = _number("shift", shift, "use a number such as 3.0, or None for the checkpoint's flow_shift")
        if max_sequence_length is not None:
            max_sequence_length = self._text_len(max_sequence_length)
        asked = prompts
        if candidates > 1:   # one batch of N x B clips, candidate-major: candidate c is rows c*B .. c*B+B-1
            prompts, negs = prompts * candidates, negs * candidates
        shape = self.latent_shape(len(prompts), num_frames, height, width)
        cfg = max(scales) > 1.0
        if guidance_interval is not None:
            try:
                lo, hi = (float(v) for v in guidance_interval)
            except (TypeError, ValueError):
                lo = hi = math.nan
            if not 0.0 <= lo < hi:
                raise ConfigError(f"guidance_interval={_got(guidance_interval)}; give (sigma_lo, sigma_hi) with "
                                  "0 <= sigma_lo < sigma_hi, e.g. (0.0, 0.8)")
        if cache is not None and not isinstance(cache, (str, CachePlan, BlockStackCache)):
            raise ConfigError(f"cache={_got(cache)}; use a policy name: 'teacache', 'first_block', 'cfg', "
                              "a combination like 'teacache+cfg', or None")
        if cache_threshold is not None:
            cache_threshold = _number("cache_threshold", cache_threshold, "use a number >= 0 (0 = always compute)")
            if (cache_threshold and latency_target is None and not isinstance(cache, (CachePlan, BlockStackCache))
                    and not {"teacache", "first_block"} & set(parse_policy(cache))):
                logger.warning("cache_threshold=%g has no effect without a block-stack cache; pass "
                               "cache='teacache' or 'first_block' to use it", cache_threshold)
        if latency_target is not None:
            latency_target = _number("latency_target", latency_target,
                                     "give a time budget in seconds, a number > 0, e.g. latency_target=30")
            if latency_target <= 0:
                raise ConfigError(f"latency_target={latency_target:g} must be > 0 seconds, e.g. latency_target=30")
        if deadline is not None:
            deadline = _number("deadline", deadline, "give a time.time() instant, e.g. deadline=time.time() + 60")
        if on_step is not None and not callable(on_step):
            raise ConfigError(f"on_step={_got(on_step)}; give a function taking a vidrt.StepState (return False to "
                              "stop), or None")
        regions = self._regions(regions, cache, latency_target)
        region_run = None
        if regions is not None:   # the layout splits the prompts now, so a prompt it cannot read fails before work
            region_run = RegionRun(regions, prompts, steps, temporal=self.vae_scale_temporal)
        if latents is None:
            seed = _whole("seed", seed)
            if not -2**63 <= seed < 2**64 - candidates + 1:
                top = ("2**64" if candidates == 1
                       else f"2**64 - {candidates - 1}) (candidates use seeds seed .. seed + {candidates - 1}")
                raise ConfigError(f"seed={seed} is out of range; use an integer in [-2**63, {top}), e.g. seed=0")
        elif not isinstance(latents, torch.Tensor):
            raise ConfigError(f"latents must be a torch.Tensor of shape {shape}, not {type(latents).__name__} "
                              "(convert with torch.as_tensor), or None to draw them from seed")
        elif tuple(latents.shape) != shape:
            per = f" x {candidates} candidates" if candidates > 1 else ""
            raise ShapeError(f"latents have shape {tuple(latents.shape)} but {num_frames} frames at {height}x{width} "
                             f"for {len(asked)} prompt(s){per} need {shape}")
        elif not torch.isfinite(latents).all():
            raise ConfigError("latents contain NaN/inf; pass finite initial noise, e.g. torch.randn(shape), or None")

        schedule = None
        if deadline is not None and time.time() >= deadline:
            raise LatencyError(f"deadline already passed ({time.time() - deadline:.2f}s ago); nothing was run")
        if latency_target is not None:
            guided = self._guided_steps(scales, sampler or d.sampler, shift if shift is not None else d.shift,
                                        (lo, hi) if guidance_interval is not None else None)
            schedule = self.plan(latency_target, shape, cfg=guided or cfg, default_steps=steps)
            p = schedule.plan
            steps, cache, cache_threshold, cfg_interval = p.steps, p.cache_spec or "teacache", p.threshold, p.cfg_interval
            logger.info("latency target %.2fs: %s (predicted %.2fs)", latency_target, p.label(), schedule.predicted_s)

        stats: dict[str, Any] = {"precision": self.precision, "attention": self.attention, "steps": steps,
                                 "guidance": guidance, "height": height, "width": width, "num_frames": num_frames,
                                 "tokens": _tokens(shape, self.transformer.config.patch_size)}
        oom = (f"out of memory generating {num_frames} frames at {height}x{width} ({stats['tokens']} tokens, batch "
               f"{len(prompts)}); lower the size, frames or batch")
        with out_of_memory_as_shape_error(oom):   # the initial noise is the first large allocation
            if latents is None:   # candidate c from seed + c (candidate 0: the plain call's noise)
                one = (len(asked),) + shape[1:]
                latents = torch.cat([torch.randn(one, generator=torch.Generator("cpu").manual_seed(seed + c),
                                                 dtype=torch.float32) for c in range(candidates)])
            latents = latents.to(self.device, torch.float32)
        t_start = time.perf_counter()

        with out_of_memory_as_shape_error(oom):
            # text
            t0 = time.perf_counter()
            b0 = len(asked)   # best-of-N: each text encoded once, its states repeated for every candidate
            ctx = self.encode_prompts(prompts[:b0] + (negs[:b0] if cfg else []), max_sequence_length)
            if candidates > 1:
                ctx = torch.cat([ctx[:b0]] * candidates + ([ctx[b0:]] * candidates if cfg else []))
            sub_ctx = kv_sub = backdrops = None
            if region_run is not None and region_run.subs:   # each distinct sub-prompt encoded once
                uniq = list(dict.fromkeys(region_run.subs))
                sub_ctx = self.encode_prompts(uniq, max_sequence_length)[[uniq.index(q) for q in region_run.subs]]
                sub_owner = region_run.owner.to(self.device)
            stats["text_s"] = time.perf_counter() - t0

            # denoise
            t0 = time.perf_counter()
            smp = make_sampler(sampler or d.sampler, steps, shift=shift if shift is not None else d.shift,
                               config=self.scheduler_config, device=self.device)
            b = len(prompts)
            plan = make_cache(cache, cache_threshold, coefficients=self.teacache_coefficients,
                              cfg_interval=cfg_interval)
            expert, expert_steps = -1, [0] * len(self.experts)
            step_experts = self.experts_at(smp.timesteps)
            controller = None
            if schedule is not None:
                from vidrt.caching.scheduler import Controller

                budget = schedule.target_s - (time.perf_counter() - t_start) - schedule.decode_s
                controller = Controller(schedule, budget, time.perf_counter())
            x0_estimate = None
            bar = tqdm(total=steps, desc="denoise", unit="step", disable=not progress, leave=False)
            for i, t in enumerate(smp.timesteps):
                if deadline is not None and time.time() >= deadline and x0_estimate is not None:
                    logger.warning("deadline reached after %d of %d steps; decoding the current estimate", i, steps)
                    stats["stopped"] = {"reason": "deadline", "completed_steps": i, "steps": steps}
                    latents = x0_estimate
                    break
                x = latents.to(self.dtype)
                if step_experts[i] != expert:  # the first step, or a two-expert checkpoint's switch
                    if expert >= 0:   # cached residuals / CFG deltas are the other expert's
                        plan.reset(self.teacache_coefficients_2 if step_experts[i] == 1 else None)
                    expert = step_experts[i]
                    dit, scale = self.experts[expert], scales[expert]
                    kv_all = dit.prepare_context(ctx)
                    kv_cond = [(k[:b], v[:b]) for k, v in kv_all] if cfg else kv_all
                    kv_uncond = [(k[b:], v[b:]) for k, v in kv_all] if cfg else None
                    if sub_ctx is not None:
                        kv_sub = dit.prepare_context(sub_ctx)
                expert_steps[expert] += 1
                guided = scale > 1.0 and (guidance_interval is None or lo <= smp.sigma_at(i) <= hi)
                full_cfg = guided and (plan.cfg is None or plan.cfg.compute_uncond(i, steps))
                if plan.block is not None:
                    plan.block.begin_step(i, steps, [["cond"] * b + ["uncond"] * b] if full_cfg and self.batch_cfg
                                          else [["cond"] * b, ["uncond"] * b])
                if full_cfg and self.batch_cfg:
                    out = dit(torch.cat([x, x]), t.expand(2 * b).to(self.device), context_kv=kv_all,
                              step_cache=plan.block)
                    cond, uncond = out[:b], out[b:]
                else:
                    ts = t.expand(b).to(self.device)
                    cond = dit(x, ts, context_kv=kv_cond, step_cache=plan.block)
                    uncond = dit(x, ts, context_kv=kv_uncond, step_cache=plan.block) if full_cfg else None
                if guided and plan.cfg is not None:
                    if full_cfg:
                        plan.cfg.record(cond, uncond)
                    else:
                        uncond = plan.cfg.estimate(cond)
                if region_run is not None and region_run.masks is not None:   # each object's region: its prompt
                    xs = x[sub_owner]
                    if region_run.isolate:
                        if backdrops is None:
                            backdrops = self._backdrops(region_run, latents.shape, num_frames, height, width)
                        xs = region_run.isolated(x, cond, float(smp.sigma_at(i)), backdrops)
                    sub = dit(xs, t.expand(len(sub_owner)).to(self.device), context_kv=kv_sub)
                    cond = region_run.mix(cond, sub)
                pred = uncond + scale * (cond - uncond) if guided else cond
                if deadline is not None or on_step is not None or region_run is not None:
                    x0_estimate = latents - smp.sigma_at(i) * pred.float()
                latents = smp.step(pred, i, latents)
                if region_run is not None and region_run.reads_after(i):
                    region_run.read(self.decode(x0_estimate[region_run.rows]), x0_estimate.shape[2:])
                if controller is not None:
                    controller.after_step(i, plan.block)
                bar.update()
                if on_step is not None and _stops(on_step(StepState(i, steps, float(smp.sigma_at(i)), latents,
                                                                    x0_estimate))) and i + 1 < steps:
                    stats["stopped"] = {"reason": "callback", "completed_steps": i + 1, "steps": steps}
                    latents = x0_estimate
                    break
            bar.close()
            if not torch.isfinite(latents).all():  # one check (one host sync) for the whole loop
                done = stats.get("stopped", {}).get("completed_steps", steps)
                overflow = "" if self.precision == "fp32" else f", or {self.precision} overflowed: try precision='fp32'"
                raise CheckpointError(f"the denoised latents contain NaN/inf after {done} step(s): the checkpoint "
                                      f"may be corrupt (re-download or re-convert it){overflow}")
            if schedule is not None:
                stats["schedule"] = schedule.as_dict()
            if self.transformer_2 is not None:
                stats["experts"] = {"boundary_ratio": self.boundary_ratio, "guidance_2": scales[1],
                                    "steps": expert_steps}
            if region_run is not None:
                stats["regions"] = region_run.stats()
            if cache:
                stats["cache"] = {"policy": cache if isinstance(cache, str) else type(cache).__name__,
                                  "threshold": cache_threshold, **plan.stats()}
            stats["dit_s"] = time.perf_counter() - t0
            stats["dit_per_step_s"] = stats["dit_s"] / steps
            if output == "latent" and candidates == 1:
                return latents

            # decode
            t0 = time.perf_counter()
            videos = self.decode(latents, progress=progress)
            stats["vae_s"] = time.perf_counter() - t0
            picks = None
            if candidates > 1:   # best-of-N: keep each prompt's best-scored clip
                t0 = time.perf_counter()
                scores = self.verifier.score(videos, prompts).float().cpu().view(candidates, len(asked))
                picks = scores.argmax(0)
                keep = picks * len(asked) + torch.arange(len(asked))
                latents, videos, prompts = latents[keep.to(latents.device)], videos[keep.to(videos.device)], asked
                stats["verify_s"] = time.perf_counter() - t0
                if output == "latent":
                    return latents
            stats["total_s"] = time.perf_counter() - t_start
            if schedule is not None:
                stats["schedule"]["actual_s"] = stats["total_s"]
            out = [Video(to_frames(v), fps=d.fps, prompt=p, stats=dict(stats), latents=latents[j:j + 1].cpu())
                   for j, (v, p) in enumerate(zip(videos, prompts))]
            if picks is not None:
                for j, video in enumerate(out):
                    video.stats["candidates"] = {"n": candidates, "picked": int(picks[j]),
                                                 "scores": [float(v) for v in scores[:, j]]}
            return out[0] if single else out

    def stream(self, shots, seconds: Optional[float] = None, latency_target: Optional[float] = None, **kw):
        """Long clips chunk by chunk: yields parts (decoded frames, timings, real-time factor) as they finish.

        ``shots``: a prompt or a list of ``vidrt.longclip.Shot``. Causal models (num_frame_per_block > 0)
        run chunk-wise with a KV cache; bidirectional ones fall back to sliding windows. See
        :func:`vidrt.longclip.stream.stream` for every option.
        """
        from vidrt.longclip.shots import as_shots
        from vidrt.longclip.stream import stream

        shots = as_shots(shots)   # a malformed shot list fails here, before any model work
        return stream(self, shots, seconds=seconds, latency_target=latency_target, **kw)

    def _regions(self, regions, cache, latency_target) -> Optional[Regions]:
        """``regions`` checked: None / False (off), True (the checkpoint's layout) or a :class:`vidrt.Regions`."""
        if regions is None or regions is False:
            return None
        if regions is True:
            name = self.defaults.region_layout
            if name is not None and name != "world":
                raise ConfigError(f"vidrt.json names region_layout {name!r}, which vidrt does not know (known: "
                                  "'world'); fix the checkpoint's vidrt.json or pass regions=vidrt.Regions(...)")
            if name is None:
                where = self.source or "this pipeline"
                raise ConfigError(f"regions=True needs the checkpoint's region layout and {where} names none "
                                  "(vidrt.json 'region_layout'); pass regions=vidrt.Regions(layout=...) with your "
                                  "own, or regions=None")
            from vidrt.world.layout import WorldLayout

            regions = Regions(WorldLayout())
        elif isinstance(regions, Regions):
            regions.__post_init__()   # fields may have been changed since it was made
        else:
            raise ConfigError(f"regions={_got(regions)}; use True (the checkpoint's layout), a vidrt.Regions, "
                              "or None")
        if cache is not None or latency_target is not None:
            raise ConfigError("regions cannot be combined with a step cache or a latency_target (the regions' "
                              "extra DiT rows are not in their cost model); drop one of them")
        return regions

    def _backdrops(self, run, shape, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Normalised latents of each row's empty scene (its layout's backdrop colour in every frame)."""
        out = torch.zeros(shape, device=self.device, dtype=torch.float32)
        done: dict[tuple, torch.Tensor] = {}
        for row, p in enumerate(run.prompts):
            rgb = run.backdrop(p)
            if rgb not in done:
                video = (torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1).view(1, 3, 1, 1, 1)
                video = video.expand(1, 3, num_frames, height, width).to(self.device, self.vae.dtype)
                done[rgb] = self.vae.normalize(self.vae.encode(video)).float()
            out[row] = done[rgb][0]
        return out

    def _guided_steps(self, scales: Sequence[float], sampler: str, shift: Optional[float],
                      interval: Optional[tuple[float, float]]):
        """For the latency planner: step count -> which steps run classifier-free guidance, when that differs per
        step (a two-expert model with one scale <= 1, a guidance interval); None when all steps are alike."""
        if interval is None and len({s > 1.0 for s in scales}) == 1:
            return None
        from vidrt.samplers import make_sampler

        def guided(steps: int) -> list[bool]:
            smp = make_sampler(sampler, steps, shift=shift, config=self.scheduler_config, device="cpu")
            return [scales[e] > 1.0 and (interval is None or interval[0] <= smp.sigma_at(i) <= interval[1])
                    for i, e in enumerate(self.experts_at(smp.timesteps))]

        return guided

    def plan(self, latency_target: float, shape: Sequence[int], *, cfg, default_steps: int,
             kv_tokens: int = 0, commit_kv_tokens: Optional[int] = None, cost_scale: Optional[float] = None):
        """The scheduler's plan for a generation of latent ``shape`` within ``latency_target`` seconds.

        For one KV-cached causal chunk: ``kv_tokens`` past tokens each call attends to, and the chunk's commit
        forward over ``commit_kv_tokens`` of them (see ``vidrt.caching.scheduler.predict_seconds``).
        ``cost_scale``: a correction of the cost model measured on finished work (a stream's parts), used instead
        of the load probe. ``cfg``: guidance on every step (bool), or step count -> each step's (see
        ``vidrt.caching.scheduler.predict_seconds``)."""
        from vidrt.caching.scheduler import calibrate_cost, choose_plan, knobs_for, probe_grid, rescaled_for_load

        cost = calibrate_cost(self)
        if cost_scale is not None:
            cost = cost.scaled(float(cost_scale))
        elif self.cost_load_check:  # a cached cost model goes stale on a shared machine
            cost = rescaled_for_load(self, cost, grid=probe_grid(token_grid(shape, self.transformer.config.patch_size)))
        return choose_plan(latency_target, cost, knobs_for(self, default_steps),
                           tokens=_tokens(shape, self.transformer.config.patch_size), batch=shape[0],
                           voxels=shape[2] * shape[3] * shape[4], cfg=cfg, kv_tokens=kv_tokens,
                           commit_kv_tokens=commit_kv_tokens)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """Final (normalised) latents -> video (B, 3, T, H, W) in [-1, 1].

        Streams through the VAE's temporal cache in chunks sized to a memory budget (identical to a
        one-shot decode), so long clips decode in flat memory.
        """
        z = self.vae.denormalize(latents.to(self.device, self.vae.dtype))
        chunk = self.vae.auto_chunk_frames(z.shape[0], z.shape[3], z.shape[4])
        stream = self.vae.stream_decoder()
        parts = []
        for s in tqdm(range(0, z.shape[2], chunk), desc="decode", unit="chunk", disable=not progress, leave=False):
            parts.append(stream.decode(z[:, :, s:s + chunk]))
        return torch.cat(parts, dim=2)


def _check_boundary(layout, transformer_2, boundary_ratio) -> Optional[float]:
    """The boundary_ratio the pipeline runs with (None: one DiT); a ConfigError for a pair that cannot be built."""
    if boundary_ratio is not None:
        boundary_ratio = _number("boundary_ratio", boundary_ratio, "use a number in (0, 1), e.g. 0.875")
        if not 0.0 < boundary_ratio < 1.0:
            raise ConfigError(f"boundary_ratio={boundary_ratio:g}; use a number in (0, 1): the share of the timestep "
                              "range, from the top, that `transformer` (the high-noise expert) denoises, e.g. 0.875")
    if transformer_2 is None and layout.transformer_2 is None:
        if boundary_ratio is not None:
            raise ConfigError(f"boundary_ratio={boundary_ratio:g} but {layout.root} has one DiT; pass the low-noise "
                              "expert with transformer_2=, or drop boundary_ratio")
        return None
    boundary = boundary_ratio if boundary_ratio is not None else layout.boundary_ratio
    if boundary is None and transformer_2 is not None:
        raise ConfigError("transformer_2= makes this a two-expert pipeline: pass boundary_ratio= too (the share of "
                          "the timestep range, from the top, that the first expert denoises, e.g. 0.875)")
    return boundary   # None: a folder's transformer_2 without boundary_ratio does not run, as in diffusers


def _check_latent_channels(dit: WanDiT, vae, layout) -> None:
    """The DiT denoises the VAE's latents: text-to-video checkpoints read and write z_dim channels."""
    cin, cout, z = dit.config.in_channels, dit.config.out_channels, vae.z_dim
    if cin != z or cout != z:
        kind = ""
        index = layout.root / "model_index.json"
        if index.is_file():
            kind = f" (model_index.json names {json.loads(index.read_text()).get('_class_name')})"
        raise CheckpointError(f"the transformer reads {cin} and writes {cout} latent channels but the VAE's latents "
                              f"have {z}: an image-to-video or otherwise conditioned Wan checkpoint{kind}, or a "
                              "transformer from another model; vidrt runs text-to-video checkpoints (in_channels = "
                              "out_channels = the VAE's z_dim)")


def _check_experts(high: WanDiT, low: WanDiT) -> None:
    """Both experts read the same latents and text and write the same velocity."""
    names = ("in_channels", "out_channels", "patch_size", "text_dim", "num_frame_per_block")
    diff = [f"{n} {getattr(high.config, n)} vs {getattr(low.config, n)}" for n in names
            if getattr(high.config, n) != getattr(low.config, n)]
    if diff:
        raise CheckpointError(f"the two experts do not fit together ({'; '.join(diff)} for transformer vs "
                              "transformer_2); both must come from one two-expert checkpoint or share its layout")


def token_grid(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, int, int]:
    """(t, h, w) DiT tokens of latents of ``shape`` (B, C, T', H', W') at ``patch``."""
    return shape[2] // patch[0], shape[3] // patch[1], shape[4] // patch[2]


def _tokens(shape: Sequence[int], patch: Sequence[int]) -> int:
    t, h, w = token_grid(shape, patch)
    return t * h * w


def _stops(answer) -> bool:
    """Whether an ``on_step`` callback's return value asks to stop: any false value but None (``False``, 0,
    ``numpy.False_``, a false 0-d tensor)."""
    return answer is not None and not bool(answer)


def _got(value) -> str:
    """A value for an error message: its repr when short, else its type."""
    r = repr(value)
    return r if len(r) <= 40 else f"a {type(value).__name__}"


def _strings(name: str, value) -> list[str]:
    """A prompt argument (a string or a non-empty list of strings) as a list; a ConfigError otherwise."""
    items = ([value] if isinstance(value, str) else
             list(value) if isinstance(value, Iterable) and not isinstance(value, (bytes, dict)) else [])
    if not items or not all(isinstance(p, str) for p in items):
        raise ConfigError(f"{name} must be a string or a non-empty list of strings, not {_got(value)}")
    return items


def _whole(name: str, value) -> int:
    """An integer argument (numpy ints and 32.0 pass); a ConfigError for strings, bools, fractions, NaN."""
    if not isinstance(value, (bool, str, bytes)):
        try:
            return operator.index(value)
        except TypeError:
            pass
        try:
            f = float(value)
        except (TypeError, ValueError):
            f = math.nan
        if f.is_integer():
            return int(f)
    raise ConfigError(f"{name}={_got(value)}; pass a whole number (an int)")


def _number(name: str, value, fix: str) -> float:
    """A finite float argument; a ConfigError saying ``fix`` for strings, bools, NaN and inf."""
    try:
        v = math.nan if isinstance(value, (bool, str, bytes)) else float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise ConfigError(f"{name}={_got(value)}; {fix}")
    return v
