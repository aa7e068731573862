#!/usr/bin/env python
"""Is the VAE's 16-channel latent what caps its reconstruction? The shipped VAE widened to ``--z`` latent channels
*function-preservingly* (the new encoder channels small and random, the decoder's weights on them zero: the same
reconstructions at step 0), then trained on as the shipped recipe's long-window phase trains (frame-local, object-
weighted L1 + L2, the same buckets); run it again with ``--z 16`` for the control that continues unwidened.
Held-out reconstruction PSNR per size (the eval's renders) every ``--eval-every`` steps.

    python tools/probe_vae_zdim.py --z 32 --steps 2000 --io-lr 1e-3 --out runs/zdim/z32.json
    python tools/probe_vae_zdim.py --z 16 --steps 2000 --io-lr 1e-3 --out runs/zdim/z16.json

``--io-lr`` trains the four latent-facing convs (encoder.conv_out, quant_conv, post_quant_conv, decoder.conv_in) at
their own rate in both arms: at the body's rate the new channels' zero decoder weights barely move in 2 000 steps.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vidrt.checkpoints.load import load_vae, resolve_layout
from vidrt.models.vae import WanVAE
from vidrt.testing import load_script
from vidrt.world.grammar import held_out_prompts

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("probe_vae_zdim")


def widen_latent(vae: WanVAE, z_dim: int, init: float = 0.1, seed: int = 0) -> WanVAE:
    """A copy of ``vae`` with ``z_dim`` >= its own latent channels that encodes the old channels and decodes
    exactly as ``vae`` does: new encoder rows random (``init`` x the old mean rows' std), new logvar rows zero,
    quant / post-quant convs identity on the new channels, the decoder's input weights on them zero."""
    z = vae.config.z_dim
    if z_dim < z:
        raise ValueError(f"z_dim={z_dim} is below the VAE's {z}: widening only adds channels")
    cfg = dataclasses.replace(vae.config, z_dim=z_dim,
                              latents_mean=tuple(vae.config.latents_mean) + (0.0,) * (z_dim - z),
                              latents_std=tuple(vae.config.latents_std) + (1.0,) * (z_dim - z))
    new = WanVAE(cfg).to(vae.device, vae.dtype)
    old, gen = vae.state_dict(), torch.Generator().manual_seed(seed)
    moments = torch.tensor([i if i < z else z_dim + i - z for i in range(2 * z)])   # (mean, logvar) -> new rows
    fresh = list(range(z, z_dim)) + list(range(z_dim + z, 2 * z_dim))
    out = {}
    for k, v in new.state_dict().items():
        o = old[k]
        if o.shape == v.shape:
            out[k] = o.clone()
            continue
        w = torch.zeros_like(v)
        if k.startswith("encoder.conv_out."):
            w[moments] = o
            if k.endswith("weight"):
                w[z:z_dim] = torch.randn(w[z:z_dim].shape, generator=gen).to(w) * o[:z].std() * init
        elif k.startswith("quant_conv."):
            if k.endswith("weight"):
                w[moments[:, None], moments[None, :]] = o
                w[fresh, fresh] = 1.0
            else:
                w[moments] = o
        elif k.startswith("post_quant_conv."):
            if k.endswith("weight"):
                w[:z, :z] = o
                w[list(range(z, z_dim)), list(range(z, z_dim))] = 1.0
            else:
                w[:z] = o
        elif k.startswith("decoder.conv_in."):
            w[:, :z] = o
        else:
            raise KeyError(f"widen_latent: unexpected shape change in {k}")
        out[k] = w
    new.load_state_dict(out)
    return new


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "runtime/assets/default", help="model folder (its vae/)")
    ap.add_argument("--z", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--io-lr", type=float, default=None, help="the latent-facing convs' rate (default: --lr)")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--prompts", type=int, default=12, help="held-out prompts of the PSNR report")
    ap.add_argument("--minutes", type=float, default=None, help="stop (after an eval) past this many minutes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="JSON history; the weights go beside it (.pt)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    train = load_script(ROOT / "tools/train_default_model.py")
    evaluation = load_script(ROOT / "benchmarks/eval_default_model.py")
    p = train.PRESETS["gpu"]
    base = load_vae(resolve_layout(a.model), dtype=torch.float32, device=torch.device("cpu"))
    vae = widen_latent(base, a.z).train().requires_grad_(True)
    train.frame_local_(vae)
    io = [vae.encoder.conv_out, vae.quant_conv, vae.post_quant_conv, vae.decoder.conv_in]
    io_ids = {id(q) for m in io for q in m.parameters()}
    params = list(vae.parameters())
    opt = torch.optim.AdamW([{"params": [q for q in params if id(q) not in io_ids], "scale": 1.0},
                             {"params": [q for q in params if id(q) in io_ids], "scale": (a.io_lr or a.lr) / a.lr}],
                            lr=a.lr, betas=(0.9, 0.999), weight_decay=0.0)
    rng = np.random.default_rng(123)
    prompts = held_out_prompts()[:a.prompts]
    history: list[dict] = []
    a.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def evaluate(step: int) -> None:
        vae.eval()
        with torch.no_grad():
            r = evaluation.vae_psnr(vae, prompts, 16.0, sizes=((1, 64, 64), (17, 64, 64), (33, 64, 64)))
        vae.train()
        history.append({**r, "step": step, "minutes": (time.time() - t0) / 60})
        logger.info("z=%d step %d: %s", a.z, step, {k: round(v, 2) for k, v in r.items()})
        a.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(a).items()}, "history": history},
                                    indent=1))

    evaluate(0)
    run = 0.0
    for step in range(1, a.steps + 1):
        for g in opt.param_groups:
            g["lr"] = train.lr_at(step - 1, a.steps, a.lr, warmup=50) * g["scale"]
        x = train.vae_batch(p.vae_temporal_buckets, rng)
        dist = train.vae_moments(vae, x)
        y = train.vae_decode_train(vae, dist.mean)
        w = train.pixel_weights(x, p.vae_fg_weight)
        mse = train.weighted_mse(y, x, w)
        kl = 0.5 * (dist.mean.pow(2) + dist.std.pow(2) - 1 - dist.logvar).mean()
        loss = ((y - x).abs() * w).sum() / (w.sum() * 3) + mse + p.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        run += float(mse.detach())
        if step % 50 == 0:
            logger.info("z=%d step %d (%.1f min): %.2f dB object-weighted", a.z, step, (time.time() - t0) / 60,
                        20 * math.log10(2 / math.sqrt(run / 50)))
            run = 0.0
        late = a.minutes is not None and (time.time() - t0) / 60 > a.minutes
        if step % a.eval_every == 0 or step == a.steps or late:
            evaluate(step)
            if late:
                break
    torch.save(vae.state_dict(), a.out.with_suffix(".pt"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
