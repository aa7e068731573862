"""`--model` values: a checkpoint folder, `default` (the embedded model) or `random:NAME`.

`random:NAME` builds a random-weight diffusers Wan folder of a preset size once (cached under
$VIDRT_BENCH_CACHE or ~/.cache/vidrt/bench) so speed can be measured at real model sizes without
downloading weights; its frames are noise, so only speed and numerical drift mean anything.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from vidrt.errors import CheckpointError, ConfigError

# make_tiny_wan arguments. wan1.3b: the Wan 2.1 T2V 1.3B DiT (12 heads x 128, 30 layers, ffn 8960,
# UMT5-width 4096 text features); its VAE and text encoder are small stand-ins (make_tiny_wan's fixed
# VAE layout, 2-layer text encoder), so DiT numbers are the real model's and VAE/text ones are not.
RANDOM_PRESETS: dict[str, dict] = {
    "tiny": dict(heads=2, head_dim=12, layers=2, ffn_dim=32, text_dim=16, vae_base_dim=3),
    "small": dict(heads=4, head_dim=64, layers=4, ffn_dim=1024, text_dim=64, vae_base_dim=16),
    "wan1.3b": dict(heads=12, head_dim=128, layers=30, ffn_dim=8960, text_dim=4096, vae_base_dim=96),
}


@dataclass(frozen=True)
class ModelSpec:
    spec: str        # as given on the command line
    path: Path       # the diffusers/Wan folder both runtimes load
    embedded: bool   # the embedded default model (quality columns apply)
    random: bool     # random weights (speed only)


def cache_dir() -> Path:
    return Path(os.environ.get("VIDRT_BENCH_CACHE") or Path.home() / ".cache" / "vidrt" / "bench")


def resolve_model(spec: Optional[str], workdir: Optional[Path] = None) -> ModelSpec:
    """Turn a --model value into a folder; builds random presets on first use."""
    from vidrt.pipeline import embedded_model_path

    spec = spec or "default"
    if spec == "default":
        path = embedded_model_path()
        if not (path / "model_index.json").is_file():
            raise CheckpointError(f"--model default: the embedded default model is not in this build ({path} has no "
                                  "model_index.json); pass --model PATH (a diffusers Wan folder) or "
                                  f"--model random:{'|'.join(RANDOM_PRESETS)} for a random-weight model")
        return ModelSpec(spec, path, embedded=True, random=False)
    if spec.startswith("random:"):
        name = spec.split(":", 1)[1]
        if name not in RANDOM_PRESETS:
            raise ConfigError(f"--model {spec}: unknown random preset {name!r}; choose one of "
                              f"{', '.join('random:' + n for n in RANDOM_PRESETS)}")
        path = Path(workdir or cache_dir()) / f"random-{name}"
        if not (path / "model_index.json").is_file():
            from vidrt.testing import make_tiny_wan

            make_tiny_wan(path, **RANDOM_PRESETS[name])
        return ModelSpec(spec, path, embedded=False, random=True)
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(f"--model {spec}: no such folder; pass a diffusers Wan folder, 'default' or "
                              f"random:{'|'.join(RANDOM_PRESETS)}")
    return ModelSpec(spec, path, embedded=False, random=False)


def dit_config(path: Path) -> dict:
    """The DiT config.json of a diffusers folder (empty for other layouts)."""
    f = Path(path) / "transformer" / "config.json"
    if not f.is_file():
        return {}
    cfg = json.loads(f.read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}
