#!/usr/bin/env python
"""Two DiTs as noise-level experts: a second model's DiT (with its own text encoder) denoises the steps whose
sigma lies in a window, the first model's DiT the rest -- Wan 2.2's high-/low-noise experts, generalised to a
window, as an experiment on the held-out eval. Not a runtime feature: it wraps a loaded Pipeline's DiT and text
encoder for the eval's sampler and scorer, so the exact path's sampler, guidance and noise are used unchanged.

    python tools/expert_mix.py --expert tools/carry/s23_bound --window 0.3,0.85 --sizes 1x64x64 --name mix
    python benchmarks/eval_default_model.py --compare benchmarks/results/default_model.json OUT/mix.json

Session 26 (benchmarks/results/expert_mix.md): the shipped DiT outside s in [0.3, 0.85] and session 23's bound arm
inside it beat each alone on the 72 held-out prompts (clips +0.021 +- 0.010, images +0.032 +- 0.026, paired); the
experts need their own text encoders (the shipped DiT fed the bound encoder's states: images -0.22).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

import vidrt
from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("expert_mix")


class _PairedText:
    """Both text encoders' states side by side on the feature axis (the pipeline passes one context tensor)."""

    def __init__(self, first, second):
        self.first, self.second = first, second
        self.split: Optional[int] = None

    def __getattr__(self, name: str) -> Any:  # tokenizer, max_length, device ... of the first
        return getattr(self.first, name)

    def encode(self, prompts: Sequence[str], max_length: Optional[int] = None) -> torch.Tensor:
        a, b = self.first.encode(prompts, max_length), self.second.encode(prompts, max_length)
        self.split = a.shape[-1]
        return torch.cat([a, b.to(a.dtype)], -1)


class ExpertMix(torch.nn.Module):
    """The DiT the pipeline calls: ``second`` at sigmas in [lo, hi], ``first`` elsewhere, each on its own text
    states. ``calls`` counts the DiT calls each expert got."""

    def __init__(self, first, second, text: _PairedText, window: tuple[float, float]):
        super().__init__()
        self.first, self.second, self.text, self.window = first, second, text, window
        self.config, self.patch_embedding = first.config, first.patch_embedding
        self.calls = [0, 0]
        self._n_first = 0

    def prepare_context(self, ctx: torch.Tensor) -> list:
        split = self.text.split
        kv_a, kv_b = self.first.prepare_context(ctx[..., :split]), self.second.prepare_context(ctx[..., split:])
        self._n_first = len(kv_a)
        return kv_a + kv_b

    def forward(self, x: torch.Tensor, t: torch.Tensor, context_kv=None, step_cache=None) -> torch.Tensor:
        lo, hi = self.window
        if lo <= float(t.flatten()[0]) / 1000 <= hi:
            self.calls[1] += 1
            return self.second(x, t, context_kv=context_kv[self._n_first:], step_cache=step_cache)
        self.calls[0] += 1
        return self.first(x, t, context_kv=context_kv[:self._n_first], step_cache=step_cache)


def mix(pipe: "vidrt.Pipeline", expert: "vidrt.Pipeline", window: tuple[float, float]) -> ExpertMix:
    """Make ``pipe`` sample with ``expert``'s DiT and text encoder at sigmas in ``window`` (same VAE latents
    assumed: the experts must share a VAE). Returns the mixing module (its ``calls``)."""
    if len(pipe.experts) > 1 or len(expert.experts) > 1:
        raise SystemExit("expert_mix pairs two one-DiT models; a two-expert (Wan 2.2) model already has its pair: "
                         "evaluate it with benchmarks/eval_default_model.py")
    if expert.transformer.config.in_channels != pipe.transformer.config.in_channels:
        raise SystemExit("the two models' DiTs take different latents; the experts must share a VAE")
    text = _PairedText(pipe.text_encoder, expert.text_encoder)
    m = ExpertMix(pipe.transformer, expert.transformer, text, window)
    pipe.text_encoder, pipe.transformer = text, m
    return m


def main(argv: Optional[Sequence[str]] = None) -> int:
    ev = load_script(ROOT / "benchmarks/eval_default_model.py")
    from vidrt.world.grammar import held_out_prompts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="the first expert's model folder (default: the embedded model)")
    ap.add_argument("--expert", required=True, help="the second expert's model folder (same VAE)")
    ap.add_argument("--window", default="0.3,0.85", metavar="LO,HI", help="sigmas the second expert denoises")
    ap.add_argument("--sizes", default="1x64x64", help="comma list FxHxW (all held-out prompts at each)")
    ap.add_argument("--prompts", type=int, default=None, help="the first N held-out prompts (default all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--name", default="expert_mix")
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    lo, hi = (float(v) for v in args.window.split(","))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    pipe = vidrt.Pipeline.from_pretrained(args.model)
    m = mix(pipe, vidrt.Pipeline.from_pretrained(args.expert), (lo, hi))
    prompts = list(enumerate(held_out_prompts()))[: args.prompts]
    result: dict[str, Any] = {"name": args.name, "model": args.model or "embedded default", "expert": args.expert,
                              "window": [lo, hi], "configs": []}
    for item in args.sizes.split(","):
        f, h, w = (int(v) for v in item.split("x"))
        c = ev.evaluate_config(pipe, prompts, f, h, w, batch=args.batch, gen_kwargs={})
        c.pop("_samples", None)
        result["configs"].append(c)
        logger.info("%s: adherence %.3f", c["size"], c["generated"]["adherence"])
    result["calls"] = m.calls
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({c["size"]: c["generated"] for c in result["configs"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
