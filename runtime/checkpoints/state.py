"""Lazy tensor reading and strict, explained loading of state dicts into vidrt modules.

Safetensors are memory-mapped and read tensor by tensor (single files or sharded with an
index json); .pth files only through ``torch.load(weights_only=True, mmap=True)`` so no
arbitrary object is ever unpickled. Weights stored as int8 rows with a ``<name>_scale`` companion
(``vidrt.quant.storage``: half an fp16 file) read back as fp32 ``q * scale``.
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

import torch
import torch.nn as nn

from vidrt.errors import CheckpointError

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


SCALE_SUFFIX = "_scale"   # <name>_scale: the fp32 row scales of an int8-stored <name> (vidrt.quant.storage)


class LazyStateDict(Mapping[str, torch.Tensor]):
    """Read-only mapping name -> tensor over one or more weight files, each tensor read on access.

    An int8 tensor with a ``<name>_scale`` companion is int8 storage of a float weight: it reads as
    the fp32 dequantized weight, and the scale is not a key of its own."""

    def __init__(self, files: list[Path]):
        if not files:
            raise CheckpointError("no weight files given")
        self.files = [Path(f) for f in files]
        self._where: dict[str, int] = {}
        self._handles: list = []
        for i, f in enumerate(self.files):
            handle = _open(f)
            self._handles.append(handle)
            for k in (handle.keys() if hasattr(handle, "keys") else []):
                self._where[k] = i
        self._scaled = {k for k in self._where if k + SCALE_SUFFIX in self._where and self._is_int8(k)}
        self._keys = [k for k in self._where if not self._is_scale(k)]

    def _raw(self, key: str) -> torch.Tensor:
        h = self._handles[self._where[key]]
        return h.get_tensor(key) if hasattr(h, "get_tensor") else h[key]

    def _is_int8(self, key: str) -> bool:
        h = self._handles[self._where[key]]
        if hasattr(h, "get_slice"):   # safetensors: the header says, no read
            return h.get_slice(key).get_dtype() == "I8"
        return h[key].dtype == torch.int8

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self._scaled:
            from vidrt.quant.formats import dequantize

            q, scale = self._raw(key), self._raw(key + SCALE_SUFFIX)
            if scale.dim() != q.dim() or scale.shape[0] != q.shape[0] or scale.numel() != q.shape[0]:
                raise CheckpointError(f"{key}: int8 weight {tuple(q.shape)} with scales {tuple(scale.shape)}; int8 "
                                      "storage has one scale per row (N, 1). The file is corrupt or not vidrt's int8 "
                                      "storage; re-export it")
            return dequantize(q, scale.float())
        if key not in self._where or self._is_scale(key):
            raise KeyError(key)
        return self._raw(key)

    def _is_scale(self, key: str) -> bool:
        """Whether ``key`` is the row scales of an int8-stored weight (read with it, not a key of its own)."""
        return key.endswith(SCALE_SUFFIX) and key[:-len(SCALE_SUFFIX)] in self._scaled

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _open(path: Path):
    if not path.is_file():
        raise CheckpointError(f"weight file {path} does not exist; check the checkpoint path")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            return safe_open(str(path), framework="pt", device="cpu")
        if not zipfile.is_zipfile(path):  # not torch.save's zip format: a legacy torch.save file (no mmap) or junk
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 -- torch's own advice about this would mislead
                raise CheckpointError(f"{path} is not a readable PyTorch/safetensors checkpoint; pass a .safetensors "
                                      "file or a torch.save(model.state_dict()) file (re-download it if it should "
                                      "be one)") from None
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt or truncated file, or a pickle with arbitrary objects
        raise CheckpointError(f"cannot read weights from {path}: {type(e).__name__}: {e}. The file is corrupt, "
                              "truncated or not a tensor state dict; re-download or re-export it") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a flat tensor state dict; save it with torch.save(module.state_dict())")
    return obj


def weight_files(folder: Path, stem: Optional[str] = None) -> list[Path]:
    """The weight files of a folder: a sharded index's files, else the single (or all) safetensors/pth."""
    folder = Path(folder)
    for idx in sorted(folder.glob("*.safetensors.index.json")):
        if stem is None or idx.name.startswith(stem):
            files = sorted(set(json.loads(idx.read_text())["weight_map"].values()))
            return [folder / f for f in files]
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors",)
                   and (stem is None or p.name.startswith(stem)))
    if not files:
        files = sorted(p for p in folder.iterdir() if p.suffix in (".pth", ".pt", ".bin"))
    if not files:
        raise CheckpointError(f"no weight files (*.safetensors / *.pth) in {folder}; the checkpoint is incomplete")
    return files


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    what: str,
    rename: Optional[Callable[[str], Optional[str]]] = None,
    dtype: Optional[torch.dtype] = None,
    keep_fp32: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> None:
    """Copy ``state`` into ``module``'s parameters, converting dtype per tensor; strict with a clear report.

    ``rename`` maps checkpoint names to module names (None drops a key); parameters whose name
    contains one of ``keep_fp32`` stay fp32 (precision policy).
    """
    params = dict(module.state_dict())
    seen: set[str] = set()
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key in state.keys():
        name = rename(key) if rename else key
        if name is None:
            continue
        if name not in params:
            if not any(p in key for p in ignore_unexpected):
                unexpected.append(key)
            continue
        tensor = state[key]
        target = params[name]
        if tuple(tensor.shape) != tuple(target.shape):
            mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(target.shape)}")
            continue
        seen.add(name)
        params[name] = tensor
    missing = sorted(set(params) - seen - _non_persistent(module) - set(optional))
    if missing or unexpected or mismatched:
        lines = [f"{what}: the checkpoint does not match the model config."]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:12])}"
                         f"{' ...' if len(unexpected) > 12 else ''}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:8])}")
        lines.append("  Fix: check that config.json belongs to these weights (same model size and layout).")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        own = dict(module.named_parameters())
        own.update(dict(module.named_buffers()))
        for name, tensor in params.items():
            if name not in seen:
                continue
            dst = own[name]
            want = dst.dtype if dtype is None or not dst.is_floating_point() else (
                torch.float32 if any(p in name for p in keep_fp32) else dtype)
            if dst.dtype != want:
                _set(module, name, torch.empty(dst.shape, dtype=want, device=dst.device))
                dst = _get(module, name)
            dst.copy_(tensor)


def _non_persistent(module: nn.Module) -> set[str]:
    out = set()
    for mname, m in module.named_modules():
        for b in getattr(m, "_non_persistent_buffers_set", ()):
            out.add(f"{mname}.{b}" if mname else b)
    return out


def _get(module: nn.Module, name: str) -> torch.Tensor:
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    return getattr(module, leaf)


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    old = getattr(module, leaf)
    if isinstance(old, nn.Parameter):
        setattr(module, leaf, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        module._buffers[leaf] = value
