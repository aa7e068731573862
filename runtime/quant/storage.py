"""int8 storage of a DiT's weights: the block linears as int8 rows with one fp32 scale per row, the rest in fp16
(as an fp16 export stores them; loaders upcast, and the fp32-kept modules compute in fp32 again).

Half the bytes of fp16 for the part that is >95 % of a Wan DiT (the same linears and the same codes as the
``int8`` precision mode, ``vidrt.quant.policy``): a second DiT shipped beside a model (the causal one) fits a
package budget. Loaders read it back as fp32 ``q * scale`` (``vidrt.checkpoints.state.LazyStateDict``), so any
precision mode runs on it; quantizing that again under ``int8`` gives the stored codes exactly.
``vidrt.world.verifier.save_verifier`` stores a best-of-N verifier's conv and linear weights this way
(``stored_int8``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch

from vidrt.checkpoints.state import SCALE_SUFFIX
from vidrt.quant.formats import quantize_int8
from vidrt.quant.policy import QUANTIZED


def is_stored_int8(key: str, tensor: torch.Tensor) -> bool:
    """Whether ``key`` (a DiT state-dict name) is stored as int8 rows: the weight of a policy-quantized linear."""
    return key.endswith(".weight") and tensor.dim() == 2 and QUANTIZED.match(key[:-len(".weight")]) is not None


def int8_state(state: Mapping[str, torch.Tensor],
               stored_int8: Callable[[str, torch.Tensor], bool] = is_stored_int8) -> dict[str, torch.Tensor]:
    """A state dict in int8 storage: the tensors ``stored_int8`` picks (default: a DiT's policy-quantized linears)
    as ``name`` (int8) + ``name_scale`` (fp32, one per output channel: (N, 1) for a linear, (N, 1, 1, 1) for a
    conv), every other float tensor in fp16."""
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        if key.endswith(SCALE_SUFFIX) and key[:-len(SCALE_SUFFIX)] in state:
            raise ValueError(f"{key}: the state already holds int8 storage; pass the float weights")
        if t.is_floating_point() and t.dim() >= 2 and stored_int8(key, t):
            q, scale = quantize_int8(t.flatten(1))
            out[key], out[key + SCALE_SUFFIX] = q.view(t.shape), scale.view(-1, *[1] * (t.dim() - 1))
        elif t.is_floating_point():
            out[key] = t.half()
        else:
            out[key] = t
        out[key] = out[key].contiguous()
    return out


def save_int8(state: Mapping[str, torch.Tensor], path: str | Path,
              stored_int8: Callable[[str, torch.Tensor], bool] = is_stored_int8) -> Path:
    """Write ``int8_state(state, stored_int8)`` as one safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file(int8_state(state, stored_int8), str(path))
    return path
