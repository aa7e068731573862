"""`vidrt compare`: precision modes (and backends) side by side on speed and quality.

    vidrt compare --precision fp32,bf16,fp16,fp8,int8 --backend torch,onnxruntime --json out.json \
        --markdown out.md --plot out.png
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vidrt.cli import check_positive, check_report_outputs, command, read_prompts, write_text

logger = logging.getLogger(__name__)


def _add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="checkpoint folder or 'default' (the embedded model)")
    p.add_argument("--precision", default="fp32,bf16,fp16,fp8,int8",
                   help="comma list of fp32, bf16, fp16, fp8, int8, int8_dynamic")
    p.add_argument("--backend", default="torch", help="comma list of torch, onnxruntime, tensorrt")
    p.add_argument("--prompts", default=None, help="text file, one prompt per line (default: two world prompts)")
    p.add_argument("--frames", type=int, default=None, help="4k+1 frames (default: the model's)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the first prompt's initial latents (+1 per prompt)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-warmup", action="store_true", help="skip the 1-step warm-up run of each case")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--markdown", default=None, help="write a markdown table here")
    p.add_argument("--plot", default=None, help="write a PNG chart here")


@command("compare", "precision modes and backends on the same prompts and latents: speed, memory, PSNR/SSIM, "
                    "adherence")(_add_compare)
def _compare(args: argparse.Namespace) -> int:
    from vidrt.errors import ConfigError
    from vidrt.quant.compare import CompareConfig, plot, run_compare, to_markdown, write_json

    check_positive(args, "frames", "height", "width", "steps")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if not precisions:
        raise ConfigError(f"--precision {args.precision!r} names no precision; give a comma list, e.g. fp32,bf16,int8")
    if not backends:
        raise ConfigError(f"--backend {args.backend!r} names no backend; give a comma list, e.g. torch,onnxruntime")
    check_report_outputs(args)
    prompts = read_prompts(args.prompts) if args.prompts else None
    cfg = CompareConfig(model=None if args.model == "default" else args.model, precisions=precisions,
                        backends=backends, num_frames=args.frames, height=args.height, width=args.width,
                        steps=args.steps, guidance=args.guidance, seed=args.seed, device=args.device,
                        warmup=not args.no_warmup)
    if prompts is not None:
        cfg.prompts = prompts
    report = run_compare(cfg)
    md = to_markdown(report)
    print(md)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(report, args.json)
    if args.markdown:
        write_text(args.markdown, md)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
    return 0
