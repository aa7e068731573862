"""Find and load the components of a checkpoint (diffusers folder or original Wan layout).

Every component goes through one path: config dataclass from the folder's own json, module
built on the meta device (no throw-away init), weights read lazily and converted per tensor.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from vidrt.checkpoints import wan_original
from vidrt.checkpoints.state import LazyStateDict, load_into, weight_files
from vidrt.errors import CheckpointError
from vidrt.models.config_types import check_config
from vidrt.models.dit import DiTConfig, WanDiT

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULER = {"_class_name": "UniPCMultistepScheduler", "flow_shift": 3.0, "num_train_timesteps": 1000,
                     "prediction_type": "flow_prediction", "use_flow_sigmas": True, "solver_order": 2,
                     "solver_type": "bh2", "predict_x0": True, "lower_order_final": True}
# Wan 2.2 T2V-A14B in the original layout (high_noise_model/ + low_noise_model/): the settings its release
# keeps in code (Wan2.2 wan/configs/wan_t2v_A14B.py), not in the folder. A vidrt.json beside it overrides them.
WAN22_A14B = {"boundary_ratio": 0.875, "flow_shift": 12.0, "steps": 40, "guidance": 4.0, "guidance_2": 3.0}
# Wan 2.2 TI2V-5B (config.json model_type "ti2v"; wan/configs/wan_ti2v_5B.py): 24 fps video, shift 5
WAN22_TI2V = {"flow_shift": 5.0, "fps": 24.0}


@dataclass
class CheckpointLayout:
    """Where each component of a checkpoint lives on disk."""

    kind: str  # "diffusers" | "wan_original"
    root: Path
    transformer: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path
    scheduler_config: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)  # vidrt.json: default sizes, steps, guidance, fps
    # Wan 2.2 A14B: the low-noise expert, which denoises the timesteps below boundary_ratio * num_train_timesteps
    # (`transformer` takes the rest); None for one-DiT checkpoints (Wan 2.1, the embedded model). Without a
    # boundary_ratio the folder's transformer_2 does not run (diffusers' rule) unless from_pretrained is given one
    transformer_2: Optional[Path] = None
    boundary_ratio: Optional[float] = None


def _read_json(path: Path) -> dict:
    """A json file holding an object (every json of a checkpoint does)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; the checkpoint folder is incomplete") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is corrupt, re-download it") from None
    check_config(data, {}, path)
    return data


def resolve_layout(path: str | Path) -> CheckpointLayout:
    """Identify a checkpoint folder: diffusers (model_index.json) or original Wan (config.json with dim)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise CheckpointError(f"checkpoint path {root} does not exist; pass a diffusers Wan folder, an original "
                              "Wan folder, or nothing for the embedded default model")
    if not root.is_dir():
        raise CheckpointError(f"{root} is a file; from_pretrained takes a folder (use transformer=FILE to swap "
                              "in a bare DiT state dict)")
    defaults = _read_json(root / "vidrt.json") if (root / "vidrt.json").is_file() else {}
    if (root / "model_index.json").is_file():
        index = _read_json(root / "model_index.json")
        missing = [c for c in ("transformer", "vae", "text_encoder", "tokenizer") if not (root / c).is_dir()]
        if missing:
            # components are the [library, class] entries that name a library (not flags like boundary_ratio)
            components = sorted(k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None)
            raise CheckpointError(f"diffusers folder {root} lacks component folder(s) {', '.join(missing)} "
                                  f"(its model_index.json names {', '.join(components) or 'none'}); copy the "
                                  "missing folder(s) from the original checkpoint, or download / export it again")
        sched = root / "scheduler" / "scheduler_config.json"
        if sched.is_file():
            scheduler = _read_json(sched)
        else:
            logger.warning("%s has no scheduler/scheduler_config.json; using vidrt's default Wan 2.1 scheduler "
                           "(UniPC, flow_shift %s). Copy scheduler/ from the original checkpoint to use its own",
                           root, DEFAULT_SCHEDULER["flow_shift"])
            scheduler = dict(DEFAULT_SCHEDULER)
        transformer_2, boundary = _diffusers_experts(root, index)
        if index.get("expand_timesteps"):   # Wan 2.2 TI2V-5B: its release's frame rate (the shift is in scheduler/)
            defaults = {"fps": WAN22_TI2V["fps"], **defaults}
        if "boundary_ratio" in defaults:
            logger.warning("%s sets boundary_ratio, which a diffusers folder keeps in model_index.json (where "
                           "diffusers reads it): ignored. Move it there, or pass boundary_ratio= to from_pretrained",
                           root / "vidrt.json")
        return CheckpointLayout("diffusers", root, root / "transformer", root / "vae", root / "text_encoder",
                                root / "tokenizer", scheduler, defaults, transformer_2, boundary)
    cfg = root / "config.json"
    experts = [root / "high_noise_model", root / "low_noise_model"]
    two = [(e / "config.json").is_file() for e in experts]
    if any(two) and not all(two):
        have, lack = experts if two[0] else experts[::-1]
        raise CheckpointError(f"original Wan 2.2 folder {root} has {have.name}/ but no {lack.name}/config.json; "
                              f"the A14B checkpoint needs both experts: copy {lack.name}/ from the release")
    meta = _read_json(cfg) if cfg.is_file() else {}
    if all(two) or "dim" in meta:
        ti2v = meta.get("model_type") == "ti2v"
        wanted = root / ("Wan2.2_VAE.pth" if ti2v else "Wan2.1_VAE.pth")   # the release's own file first
        vae = wanted if wanted.is_file() else next(iter(sorted(root.glob("*VAE*.pth"))), wanted)
        t5 = next(iter(sorted(root.glob("models_t5*.pth"))), root / "models_t5_umt5-xxl-enc-bf16.pth")
        tok = root / "google" / "umt5-xxl"
        for p in (vae, t5, tok):
            if not p.exists():
                raise CheckpointError(f"original Wan folder {root} lacks {p.name}; it needs config.json, the DiT "
                                      "safetensors, the VAE (Wan2.1_VAE.pth; Wan2.2_VAE.pth for TI2V-5B), "
                                      "models_t5_umt5-xxl-enc-bf16.pth and google/umt5-xxl/")
        if not all(two):
            if not ti2v:
                return CheckpointLayout("wan_original", root, root, vae, t5, tok, dict(DEFAULT_SCHEDULER), defaults)
            scheduler, settings = _release_settings(WAN22_TI2V, defaults)
            return CheckpointLayout("wan_original", root, root, vae, t5, tok, scheduler, settings)
        scheduler, settings = _release_settings(WAN22_A14B, defaults)
        boundary = _boundary_ratio(settings.pop("boundary_ratio"), root / "vidrt.json")
        return CheckpointLayout("wan_original", root, experts[0], vae, t5, tok, scheduler, settings, experts[1],
                                boundary)
    raise CheckpointError(f"{root} is neither a diffusers Wan folder (model_index.json) nor an original Wan folder "
                          "(config.json with dim/num_heads); point at the checkpoint's top folder")


def _release_settings(release: dict, defaults: dict) -> tuple[dict, dict]:
    """A release's code-side sampling settings, a vidrt.json beside it winning: (scheduler config, defaults)."""
    settings = {**release, **defaults}
    return {**DEFAULT_SCHEDULER, "flow_shift": settings.pop("flow_shift")}, settings


def _boundary_ratio(value, where: Path) -> float:
    """A Wan 2.2 boundary_ratio: a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise CheckpointError(f"boundary_ratio={value!r} in {where}; it must be a number in (0, 1), the share of "
                              "the timestep range (from the top) the high-noise expert denoises, e.g. 0.875")
    return float(value)


def _diffusers_experts(root: Path, index: dict) -> tuple[Optional[Path], Optional[float]]:
    """(low-noise expert folder, boundary_ratio) of a diffusers folder: both None for one-DiT checkpoints.

    Same reading as diffusers' WanPipeline: without boundary_ratio only ``transformer`` ever runs."""
    where = root / "model_index.json"
    # expand_timesteps (Wan 2.2 TI2V-5B): per-token timesteps, for the tokens of a conditioning image; in
    # text-to-video every token has the step's timestep, which is the ordinary scalar path
    entry = index.get("transformer_2")
    named = isinstance(entry, list) and bool(entry) and entry[0] is not None
    boundary = index.get("boundary_ratio")
    folder = root / "transformer_2"
    if boundary is None:   # the folder stays known: from_pretrained(boundary_ratio=...) can still use it
        if named:
            logger.warning("%s names transformer_2 but no boundary_ratio: like diffusers, only transformer/ runs. "
                           "Pass boundary_ratio= (e.g. 0.875) to from_pretrained, or set it in model_index.json, to "
                           "use both experts", where)
        return (folder if named and (folder / "config.json").is_file() else None), None
    boundary = _boundary_ratio(boundary, where)
    if not named:
        raise CheckpointError(f"{where} sets boundary_ratio={boundary} but names no transformer_2: the steps below "
                              "the boundary have no model. Add the low-noise expert (transformer_2/ and its "
                              "model_index.json entry) or remove boundary_ratio")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"diffusers folder {root} names transformer_2 (the low-noise expert) but "
                              f"{folder}/config.json is missing; copy transformer_2/ from the original checkpoint")
    return folder, boundary


# ----------------------------------------------------------------------------- transformer


def load_transformer(source: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                     base_config: Optional[DiTConfig] = None) -> WanDiT:
    """A DiT from a diffusers transformer folder, an original Wan folder, or a bare state-dict file.

    A bare file has no config: it takes ``base_config`` (the base model's) and must match its shapes.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise CheckpointError(f"transformer checkpoint {src} does not exist")
    if src.is_file():
        if base_config is None:
            raise CheckpointError(f"{src} is a bare state dict with no config; load it as transformer= of a base "
                                  "model whose architecture it shares")
        cfg, files = base_config, [src]
        extra = src.with_suffix(".json")
        if extra.is_file():  # a config beside the file (e.g. causal num_frame_per_block) wins
            cfg = DiTConfig.from_dict({**base_config.to_dict(), **_read_json(extra)}, where=str(extra))
    else:
        cfg = DiTConfig.from_dict(_read_json(src / "config.json"), where=str(src / "config.json"))
        files = weight_files(src, stem=None)
    state = LazyStateDict(files)
    rename = wan_original.dit_key_from_original if wan_original.is_original_dit_state(state.keys()) else None
    with torch.device("meta"):
        model = WanDiT(cfg)
    model = model.to_empty(device=device)
    load_into(model, state, what=f"transformer {src}", rename=rename, dtype=dtype,
              keep_fp32=WanDiT._keep_in_fp32_modules)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- VAE


def load_vae(layout: CheckpointLayout, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    from vidrt.checkpoints.wan_vae_keys import vae_config_from_original_state, vae_key_renamer
    from vidrt.models.vae import VAEConfig, WanVAE

    if layout.kind == "diffusers":
        cfg = VAEConfig.from_dict(_read_json(layout.vae / "config.json"), where=str(layout.vae / "config.json"))
        state, rename = LazyStateDict(weight_files(layout.vae)), None
    else:
        state = LazyStateDict([layout.vae])
        side = layout.root / "vae_config.json"  # optional: latents mean/std of a non-standard VAE
        cfg = (VAEConfig.from_dict(_read_json(side), where=str(side)) if side.is_file()
               else vae_config_from_original_state(state))
        rename = vae_key_renamer(cfg)
    with torch.device("meta"):
        vae = WanVAE(cfg)
    vae = vae.to_empty(device=device)
    load_into(vae, state, what=f"VAE {layout.vae}", rename=rename, dtype=dtype)
    return vae.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- text encoder


def load_tokenizer(folder: Path):
    """A transformers tokenizer from a checkpoint's (or an ONNX export's) tokenizer folder; a CheckpointError
    naming the broken file and the fix."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 -- whatever transformers raises, the folder is the user's
        for f in sorted(Path(folder).glob("*.json")):
            try:
                json.loads(f.read_text())
            except (ValueError, OSError) as bad:
                raise CheckpointError(f"cannot load the tokenizer from {folder}: {f.name} is not valid JSON "
                                      f"({bad}); the file is corrupt: copy it from the original checkpoint "
                                      "(or download / export the model again)") from None
        raise CheckpointError(f"cannot load the tokenizer from {folder} ({type(e).__name__}: {e}); the folder needs "
                              "tokenizer.json (or the sentencepiece model) and tokenizer_config.json: copy tokenizer/ "
                              "from the original checkpoint") from None


def load_text_encoder(layout: CheckpointLayout, *, dtype: torch.dtype = torch.float32,
                      device: str | torch.device = "cpu", max_length: int = 512):
    from transformers import UMT5Config, UMT5EncoderModel

    from vidrt.models.text import UMT5_CONFIG_TYPES, TextEncoder

    tokenizer = load_tokenizer(layout.tokenizer)
    if layout.kind == "diffusers":
        cfg_file = layout.text_encoder / "config.json"
        if cfg_file.is_file():
            check_config(_read_json(cfg_file), UMT5_CONFIG_TYPES, cfg_file)
        try:
            cfg = UMT5Config.from_pretrained(str(layout.text_encoder))
        except Exception as e:
            raise CheckpointError(f"cannot read the text encoder config in {layout.text_encoder}: {e}") from None
        state, rename = LazyStateDict(weight_files(layout.text_encoder)), None
    else:
        state = LazyStateDict([layout.text_encoder])
        cfg = UMT5Config(**wan_original.t5_config_from_original_state(state))
        rename = wan_original.t5_key_from_original
    with torch.device("meta"):
        model = UMT5EncoderModel(cfg)
    model = model.to_empty(device=device)
    has_shared = "shared.weight" in state.keys()

    def _rename(k: str) -> Optional[str]:
        k = rename(k) if rename else k
        if k == "encoder.embed_tokens.weight":  # tied to shared.weight: load whichever the file holds
            return None if has_shared else "shared.weight"
        return k

    load_into(model, state, what=f"text encoder {layout.text_encoder}", rename=_rename, dtype=dtype,
              optional=("encoder.embed_tokens.weight",), ignore_unexpected=("decoder.", "lm_head."))
    model.encoder.embed_tokens = model.shared  # re-tie after to_empty
    return TextEncoder(tokenizer, model.eval().requires_grad_(False), max_length=max_length)
