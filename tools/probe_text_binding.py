"""Does a world model's text encoder bind? Linear probes on its hidden states.

A DiT's cross-attention sees the text encoder's states without their order (Wan adds no position to them), so
"a red circle and a blue square" reaches it as a set of word states: unless the word states of one object carry
that object's other attributes, which colour goes with which shape is lost before the DiT looks. This fits, per
task, a linear probe (softmax regression) on the states of one word of each object in ``--train`` grammar prompts
and reports its accuracy on the held-out prompts by the number of objects in the prompt:

- colour from the shape word, shape from the colour word, motion from the shape word (binding: chance 1/8, 1/3,
  1/8; a fully binding encoder scores ~1 on every task);
- the same tasks on the input embeddings (no context: chance level, the probe's own floor).

Session 21 (docs/default_model.md): the shipped encoder reads the colour from the shape word 0.67 / 0.48 / 0.17 on
1 / 2 / 3-object held-out prompts, while the model's images score 0.87 / 0.61 / 0.51.

    python tools/probe_text_binding.py --model default [--train 3000] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from vidrt.models.text import TextEncoder, clean_prompt
from vidrt.world.grammar import COLORS, MOTIONS, SHAPES, held_out_prompts, parse, sample_train_prompt

logger = logging.getLogger("probe_text_binding")

# (task name, the word whose state is read, the attribute predicted)
TASKS = (("colour from shape word", "shape", "color"), ("shape from colour word", "color", "shape"),
         ("motion from shape word", "shape", "motion"))
CLASSES = {"color": sorted(COLORS), "shape": sorted(SHAPES), "motion": sorted(MOTIONS)}


def word_states(encoder: TextEncoder, prompts: Sequence[str], layer: str = "last") -> list[list[dict]]:
    """Per prompt, per object: its colour word's and shape word's state (``layer``: 'last' hidden states or the
    'embedding' input) and its attributes."""
    prompts = [clean_prompt(p) for p in prompts]
    tok = encoder.tokenizer(list(prompts), padding="longest", return_tensors="pt")
    with torch.no_grad():
        ids, mask = tok.input_ids.to(encoder.device), tok.attention_mask.to(encoder.device)
        if layer == "embedding":
            h = encoder.model.get_input_embeddings()(ids)
        else:
            h = encoder.model(ids, mask).last_hidden_state
    out = []
    for b, p in enumerate(prompts):
        words = p.split()
        objects = parse(p).objects
        shapes = [i for i, w in enumerate(words) if w in SHAPES and i > 0 and words[i - 1] in COLORS]
        if len(shapes) != len(objects):
            raise ValueError(f"cannot place the objects' words in {p!r}")
        out.append([{"shape": h[b, i].float().cpu(), "color": h[b, i - 1].float().cpu(),
                     "attrs": {"color": o.color, "shape": o.shape, "motion": o.motion}}
                    for o, i in zip(objects, shapes)])
    return out


def _fit(x: torch.Tensor, y: torch.Tensor, k: int, steps: int = 600) -> tuple:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy((x - mu) / sd @ w + b, y) + 1e-4 * w.square().sum()
        loss.backward()
        opt.step()
    return mu, sd, w.detach(), b.detach()


def probe(encoder: TextEncoder, train: Sequence[str], test: Sequence[str], layer: str = "last") -> dict:
    """{task: {objects in the prompt: held-out accuracy}} for each of TASKS."""
    torch.manual_seed(0)
    tr, te = word_states(encoder, train, layer), word_states(encoder, test, layer)
    result = {}
    for name, word, attr in TASKS:
        classes = CLASSES[attr]
        x = torch.stack([o[word] for objs in tr for o in objs])
        y = torch.tensor([classes.index(o["attrs"][attr]) for objs in tr for o in objs])
        mu, sd, w, b = _fit(x, y, len(classes))
        by_n: dict[int, list[float]] = {}
        for objs in te:
            for o in objs:
                pred = int(((o[word] - mu) / sd @ w + b).argmax())
                by_n.setdefault(len(objs), []).append(float(pred == classes.index(o["attrs"][attr])))
        result[name] = {n: round(float(np.mean(v)), 3) for n, v in sorted(by_n.items())}
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="a model folder or 'default'")
    ap.add_argument("--train", type=int, default=3000, help="grammar prompts (1-3 objects) the probes fit on")
    ap.add_argument("--json", default=None, help="write the accuracies here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import vidrt

    pipe = vidrt.Pipeline.from_pretrained(args.model)
    rng = np.random.default_rng(0)
    train = [sample_train_prompt(rng, num_objects=int(rng.integers(1, 4))) for _ in range(args.train)]
    test = held_out_prompts()
    out = {layer: probe(pipe.text_encoder, train, test, layer) for layer in ("embedding", "last")}
    for layer, tasks in out.items():
        for name, acc in tasks.items():
            logger.info("%-9s %-24s %s", layer, name, "  ".join(f"{n} obj {a:.3f}" for n, a in acc.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": str(args.model), "held_out_prompts": len(test), "train_prompts": len(train),
                       "accuracy": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
