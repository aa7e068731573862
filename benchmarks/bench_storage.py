#!/usr/bin/env python
"""What smaller storage of the embedded model's weights costs: the VAE in fp16, the DiTs in int8 rows.

    python benchmarks/bench_storage.py [--prompts 8] [--threads 1]

- VAE: held-out world clips (1, 17 and 33 frames at 64x64) encoded and decoded with the shipped weights and with
  the same weights rounded to fp16 (what fp16 safetensors hold; vidrt computes in fp32 either way): PSNR of each
  against the render, PSNR between the two decodes and their largest pixel difference.
- DiTs: bytes of each transformer's safetensors as shipped and in int8 storage (``vidrt.quant.storage``), and the
  largest relative weight error per tensor (the int8 rows' rounding).
The sampling cost of an int8-stored causal DiT is measured on long clips by ``bench_longclip.py --model``.
Writes benchmarks/results/storage.json and storage.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def vae_rows(pipe, prompts: list[str]) -> list[dict]:
    from vidrt.metrics import psnr
    from vidrt.world.render import render

    vae = pipe.vae
    shipped = {k: v.clone() for k, v in vae.state_dict().items()}
    rounded = {k: v.half().float() if v.is_floating_point() else v for k, v in shipped.items()}

    def recon(frames: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        with torch.no_grad():
            out = vae.decode(vae.encode(v))
        return ((out[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()

    rows = []
    for t in (1, 17, 33):
        truths = [render(p, 64, 64, t, seed=i) for i, p in enumerate(prompts)]
        vae.load_state_dict(shipped)
        a = [recon(x) for x in truths]
        vae.load_state_dict(rounded)
        b = [recon(x) for x in truths]
        rows.append({"size": f"{t}x64x64", "psnr_fp32": float(np.mean([psnr(x, y) for x, y in zip(truths, a)])),
                     "psnr_fp16": float(np.mean([psnr(x, y) for x, y in zip(truths, b)])),
                     "psnr_between": float(np.mean([psnr(x, y) for x, y in zip(a, b)])),
                     "max_pixel_diff": max(int(np.abs(x.astype(int) - y).max()) for x, y in zip(a, b))})
    vae.load_state_dict(shipped)
    return rows


def dit_rows() -> list[dict]:
    import vidrt.pipeline as P
    from vidrt.checkpoints.state import LazyStateDict, weight_files
    from vidrt.quant.storage import save_int8

    rows = []
    for name, folder in (("default", P.embedded_model_path()), ("default-causal", P.embedded_model_path(True))):
        files = weight_files(folder / "transformer")
        state = LazyStateDict(files)
        full = {k: state[k].float() for k in state}
        with tempfile.TemporaryDirectory() as tmp:
            path = save_int8(full, Path(tmp) / "int8.safetensors")
            back = LazyStateDict([path])
            err = max(float((back[k] - full[k]).abs().max() / full[k].abs().max().clamp_min(1e-12)) for k in full)
            rows.append({"model": name, "shipped_mb": sum(f.stat().st_size for f in files) / 1e6,
                         "int8_mb": path.stat().st_size / 1e6, "max_rel_weight_error": err})
    return rows


def to_markdown(r: dict) -> str:
    lines = ["# Storage dtypes of the embedded model", "",
             f"VAE reconstruction, {r['prompts']} held-out prompts, shipped (fp32) weights vs the same weights "
             "rounded to fp16:", "",
             "| size | PSNR vs render, fp32 weights (dB) | fp16 weights (dB) | fp16 vs fp32 decode (dB) "
             "| max pixel diff |", "|---|---|---|---|---|"]
    lines += [f"| {x['size']} | {x['psnr_fp32']:.2f} | {x['psnr_fp16']:.2f} | {x['psnr_between']:.1f} | "
              f"{x['max_pixel_diff']} |" for x in r["vae"]]
    lines += ["", "DiT safetensors as shipped and in int8 storage (block linears as int8 rows + fp32 row scales, "
              "the rest fp16):", "",
              "| transformer | shipped (MB) | int8 storage (MB) | max relative weight error |", "|---|---|---|---|"]
    lines += [f"| {x['model']} | {x['shipped_mb']:.2f} | {x['int8_mb']:.2f} | {x['max_rel_weight_error']:.4f} |"
              for x in r["dit"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8, help="held-out prompts (every k-th of the 72)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS), help="folder for storage.json and storage.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import vidrt
    from vidrt.world.grammar import held_out_prompts

    held = held_out_prompts()
    prompts = held[:: max(1, len(held) // args.prompts)][: args.prompts]
    report = {"prompts": len(prompts), "vae": vae_rows(vidrt.Pipeline.from_pretrained(), prompts), "dit": dit_rows()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "storage.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "storage.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
