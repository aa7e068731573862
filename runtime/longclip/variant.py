"""Causal variants of a checkpoint folder: the same weights with ``num_frame_per_block`` set.

A causal (chunk-autoregressive) Wan DiT differs from its bidirectional base only in how it is
trained and in its config's ``num_frame_per_block``. This writes that folder -- the starting point
of a causal fine-tune, and (with random or base weights) what tests and benchmarks run on.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Union

from vidrt.errors import CheckpointError, ConfigError
from vidrt.models.dit import COMMIT_CONTEXTS

__all__ = ["make_causal_variant"]


def make_causal_variant(src: Union[str, Path], dst: Union[str, Path], num_frame_per_block: int = 3,
                        link: bool = True, commit_context: str = "window") -> Path:
    """Copy the diffusers folder ``src`` to ``dst`` with ``transformer/config.json`` made causal.

    ``link`` symlinks every file except the transformer config (no weight copies). ``commit_context``:
    what the causal DiT's training showed a finished chunk ("window" or "sinks", see ``DiTConfig``).
    """
    src, dst = Path(src), Path(dst)
    if num_frame_per_block < 1:
        raise ConfigError(f"num_frame_per_block={num_frame_per_block}; a causal variant needs >= 1 latent frame "
                          "per chunk (CausVid / Self-Forcing use 3)")
    if commit_context not in COMMIT_CONTEXTS:
        raise ConfigError(f"commit_context={commit_context!r}; use 'window' (CausVid / Self-Forcing) or 'sinks'")
    cfg_path = src / "transformer" / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{src} has no transformer/config.json; pass a diffusers checkpoint folder")
    for f in src.rglob("*"):
        if f.is_dir():
            continue
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() or out.is_symlink():
            out.unlink()
        if f.relative_to(src) == Path("transformer/config.json"):
            continue
        if link:
            out.symlink_to(f.resolve())
        else:
            shutil.copy2(f, out)
    cfg = json.loads(cfg_path.read_text())
    cfg["num_frame_per_block"] = int(num_frame_per_block)
    if commit_context != "window":
        cfg["commit_context"] = commit_context
    (dst / "transformer" / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst
