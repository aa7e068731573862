#!/usr/bin/env python
"""Move a DiT onto another model's text encoder by refitting only its text embedder (an experiment tool).

A Wan-2.2-style pair in one diffusers folder shares one text encoder. Session 26 found the best noise-level pair of
the embedded model needs two (session 23's bound arm at high noise on its bound encoder, the shipped DiT at low noise
on its own). This tool refits the second DiT's ``condition_embedder.text_embedder`` (Linear -> GELU -> Linear, the
only module that reads the text states) so that, fed the *other* encoder's states, it reproduces what it made of its
own: per token, on training prompts only (held-out prompts measure the fit), padding positions kept exact. The rest
of the DiT is untouched, so the result is a plain diffusers transformer folder, usable as ``transformer_2=``.

    python tools/text_adapter.py --dit-model runtime/assets/default --text-model tools/carry/s23_bound -o OUT
    python benchmarks/eval_default_model.py --model tools/carry/s23_bound --transformer-2 OUT --boundary-ratio 0.3 \
        --sizes 1x64x64 --no-vae

Session 27 (benchmarks/results/expert_mix.md): R^2 0.89 on held-out prompts, images 0.608 -- below the bound arm
alone (0.654) and the two-encoder pair (0.700): a per-token map of one encoder's states onto another's loses too much.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

logger = logging.getLogger("text_adapter")

EMBEDDER = "condition_embedder.text_embedder."


def token_states(pipe, prompts: Sequence[str], batch: int = 256) -> torch.Tensor:
    """(prompts, text positions, text dim) encoder states, zero past each prompt's end (as the DiT sees them)."""
    n = pipe.defaults.max_sequence_length
    with torch.no_grad():
        return torch.cat([pipe.text_encoder.encode(list(prompts[i:i + batch]), n).float()
                          for i in range(0, len(prompts), batch)])


def r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination over every element (1 = exact)."""
    return float(1 - (pred - target).pow(2).sum() / (target - target.mean(0)).pow(2).sum())


def fit_embedder(embedder: torch.nn.Module, source: torch.Tensor, target: torch.Tensor, *, steps: int = 6000,
                 lr: float = 1e-3, batch: int = 2048, seed: int = 0) -> torch.nn.Module:
    """A copy of ``embedder`` trained so that new(source token) ~ embedder(target token), and new(0) = embedder(0).

    ``source`` / ``target``: (prompts, positions, dim) states of the two encoders on the same prompts."""
    valid = target.abs().sum(-1) > 0
    with torch.no_grad():
        x, y = source[valid], embedder(target[valid])
        zero = torch.zeros(1, source.shape[-1])
        y_zero = embedder(zero)
    new = copy.deepcopy(embedder).float().requires_grad_(True)
    opt = torch.optim.Adam(new.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / steps))
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = (new(x[idx]) - y[idx]).pow(2).mean() + (new(zero) - y_zero).pow(2).mean()  # padding stays padding
        opt.zero_grad()
        loss.backward()
        opt.step()
    new.requires_grad_(False)
    with torch.no_grad():   # padding exact by construction: shift the output bias by what is left
        new.linear_2.bias += (y_zero - new(zero))[0]
    return new


def adapt(dit_model: str, text_model: str, out: Path, *, prompts: int = 12000, steps: int = 6000,
          seed: int = 0) -> dict:
    """Write ``out``: dit_model's transformer folder with its text embedder refitted to text_model's encoder."""
    import vidrt
    from safetensors.torch import load_file, save_file

    from vidrt.world.grammar import held_out_prompts, train_prompts

    dit_pipe = vidrt.Pipeline.from_pretrained(dit_model)
    text_pipe = vidrt.Pipeline.from_pretrained(text_model)
    if dit_pipe.defaults.max_sequence_length != text_pipe.defaults.max_sequence_length:
        raise SystemExit("the two models use different text lengths (max_sequence_length); pick models of one family")
    train = train_prompts(prompts, seed=seed + 1) + [""] * 8   # the empty prompt: the CFG negative
    held = held_out_prompts()
    old = dit_pipe.transformer.condition_embedder.text_embedder.float()
    torch.manual_seed(seed)
    new = fit_embedder(old, token_states(text_pipe, train), token_states(dit_pipe, train), steps=steps, seed=seed)
    hs, ht = token_states(text_pipe, held), token_states(dit_pipe, held)
    valid = ht.abs().sum(-1) > 0
    with torch.no_grad():
        report = {"r2_held_out": r2(new(hs[valid]), old(ht[valid])),
                  "r2_held_out_unfitted": r2(old(hs[valid]), old(ht[valid])),
                  "padding_error": float((new(torch.zeros(1, hs.shape[-1])) - old(torch.zeros(1, hs.shape[-1])))
                                         .abs().max()),
                  "train_prompts": len(train), "held_out_prompts": len(held), "steps": steps}
    src = Path(dit_pipe.source) / "transformer"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", out / "config.json")
    files = sorted(src.glob("*.safetensors"))
    if len(files) != 1:
        raise SystemExit(f"{src}: expected one safetensors file, found {len(files)}")
    state = load_file(files[0])
    dtype = state[EMBEDDER + "linear_1.weight"].dtype
    for name, p in new.state_dict().items():
        state[EMBEDDER + name] = p.to(dtype).contiguous()
    save_file(state, out / files[0].name)
    (out / "text_adapter.json").write_text(json.dumps({"dit_model": str(dit_model), "text_model": str(text_model),
                                                       **report}, indent=2))
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dit-model", required=True, help="model folder whose DiT is moved")
    ap.add_argument("--text-model", required=True, help="model folder whose text encoder the DiT will read")
    ap.add_argument("-o", "--out", type=Path, required=True, help="transformer folder to write")
    ap.add_argument("--prompts", type=int, default=12000, help="training prompts whose token states are fitted")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    report = adapt(args.dit_model, args.text_model, args.out, prompts=args.prompts, steps=args.steps)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
