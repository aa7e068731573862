"""The VAE's frame-local fast path vs the full causal convs, same weights, side by side.

    python benchmarks/bench_vae_frame_local.py [--threads 1] [--repeats 7] [--json out.json --markdown out.md]

A causal conv whose past taps are all zero (a frame-local VAE, docs/default_model.md) runs on each frame with
its last tap (``CausalConv3d.skip_zero_past``). The shipped VAE has no zero taps, so this takes the embedded
VAE's architecture and weights with every past tap but the time resamplers' zeroed (what
``tools/train_default_model.py --set vae_frame_local=true`` trains), and times encode and decode of the default
clip size with the switch on and off, interleaved; the max abs difference between the two paths is reported
beside the times (the path is exact: it skips multiplications by zero).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Optional

import torch

from vidrt.models.vae import CausalConv3d, WanVAE, frame_local_convs


def frame_local_copy(vae: WanVAE) -> WanVAE:
    """``vae`` with the past taps of every causal conv but the time resamplers' set to zero."""
    local = WanVAE(vae.config).eval()
    local.load_state_dict(vae.state_dict())
    with torch.no_grad():
        for m in frame_local_convs(local):
            m.weight[:, :, :-1] = 0
    return local


def measure(vae: WanVAE, frames: int, height: int, width: int, repeats: int) -> dict:
    """Median encode / decode seconds with the fast path on and off (interleaved), and their max difference."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1
    z = torch.randn(1, vae.z_dim, 1 + (frames - 1) // vae.temporal_factor, height // vae.spatial_factor,
                    width // vae.spatial_factor, generator=g)
    times = {(op, on): [] for op in ("encode", "decode") for on in (True, False)}
    out = {}
    try:
        with torch.no_grad():
            for r in range(repeats + 1):  # the first round warms up
                for on in (True, False):
                    CausalConv3d.skip_zero_past = on
                    for op, fn, arg in (("encode", vae.encode, x), ("decode", vae.decode, z)):
                        t = time.perf_counter()
                        out[(op, on)] = fn(arg)
                        if r:
                            times[(op, on)].append(time.perf_counter() - t)
    finally:
        CausalConv3d.skip_zero_past = True
    res = {"size": f"{frames}x{height}x{width}", "repeats": repeats}
    for op in ("encode", "decode"):
        fast, full = statistics.median(times[(op, True)]), statistics.median(times[(op, False)])
        res[op] = {"fast_ms": 1000 * fast, "full_ms": 1000 * full, "speedup": full / fast,
                   "max_abs_diff": float((out[(op, True)] - out[(op, False)]).abs().max())}
    return res


def markdown(doc: dict) -> str:
    lines = ["# VAE frame-local fast path vs full causal convs", "",
             f"{doc['machine']}, torch {doc['torch']}, {doc['threads']} thread(s); the embedded VAE's architecture and "
             "weights with the past taps zeroed (frame-local), so both paths compute the same function.", "",
             "| clip | op | frame-local path | full convs | speedup | max abs diff |", "|---|---|---|---|---|---|"]
    for r in doc["results"]:
        for op in ("encode", "decode"):
            m = r[op]
            lines.append(f"| {r['size']} | {op} | {m['fast_ms']:.1f} ms | {m['full_ms']:.1f} ms | "
                         f"**{m['speedup']:.2f}x** | {m['max_abs_diff']:.1e} |")
    lines += ["", f"Medians of {doc['results'][0]['repeats']} interleaved runs after a warm-up.", ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", default="33x64x64,17x128x128", help="comma list FxHxW")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vidrt.pipeline import Pipeline

    vae = frame_local_copy(Pipeline.from_pretrained().vae)
    results = []
    for size in args.sizes.split(","):
        f, h, w = (int(v) for v in size.split("x"))
        results.append(measure(vae, f, h, w, args.repeats))
    doc = {"machine": f"CPU ({platform.processor() or platform.machine()}), {platform.system()}",
           "torch": torch.__version__, "threads": args.threads, "results": results}
    text = markdown(doc)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
