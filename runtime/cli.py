"""Command line: ``vidrt generate | info`` (more commands register as they land)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from vidrt.errors import VidrtError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {}


def command(name: str, help: str):
    """Register ``vidrt NAME``: the decorated function adds arguments; it returns the runner."""
    def wrap(add_args):
        def deco(run):
            COMMANDS[name] = (add_args, run, help)
            return run
        return deco
    return wrap


def frames_for_seconds(seconds: float, fps: float, temporal: int = 4) -> int:
    """The 4k+1 frame count closest to ``seconds`` of video at ``fps``."""
    return temporal * max(0, round(seconds * fps / temporal)) + 1


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint folder (diffusers or original Wan); default: the embedded "
                   "model; default-causal: its causal variant (for `vidrt stream`)")
    p.add_argument("--transformer", default=None, help="swap in another DiT (folder or state-dict file)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16")
    p.add_argument("--attention", default="sdpa", help="sdpa | triton | flash_attn")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's); 1 avoids oversubscription on a shared machine")


def _load(args):
    from vidrt.pipeline import Pipeline

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)

    return Pipeline.from_pretrained(args.model, device=args.device, precision=args.precision,
                                    attention=args.attention, transformer=args.transformer)


def _add_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", default=None, help="the prompt (or --shots FILE)")
    p.add_argument("--shots", default=None, help="a YAML/JSON shot list: streamed like `vidrt stream --shots`")
    _add_model_args(p)
    p.add_argument("-o", "--output", default="clip.mp4", help=".mp4, .gif or .png (1 frame)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frames", type=int, default=None, help="4k+1 frames (1 = an image)")
    g.add_argument("--seconds", type=float, default=None, help="clip length; rounded to 4k+1 frames")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None, help="unipc | euler (default: the checkpoint's)")
    p.add_argument("--shift", type=float, default=None, help="flow shift (default: the checkpoint's)")
    p.add_argument("--json", default=None, help="write run statistics as JSON here")


@command("generate", "generate a clip (or an image with --frames 1) from a prompt")(_add_generate)
def _generate(args: argparse.Namespace) -> int:
    from vidrt.errors import ConfigError

    if args.shots is not None:  # multi-shot clips go through the streaming (chunked, KV-cached) path
        from vidrt.longclip import cli as longclip_cli

        parser = argparse.ArgumentParser()
        longclip_cli._add_stream(parser)
        ns = parser.parse_args(["--shots", args.shots])
        for k in ("model", "transformer", "device", "precision", "attention", "negative_prompt", "height", "width",
                  "steps", "guidance", "seed", "sampler", "shift", "json", "seconds", "output"):
            setattr(ns, k, getattr(args, k))
        if args.prompt is not None:
            raise ConfigError("give a prompt or --shots FILE, not both")
        return longclip_cli._stream(ns)
    if args.prompt is None:
        raise ConfigError("give a prompt, e.g. vidrt generate 'a red circle moves right' -o clip.mp4")
    pipe = _load(args)
    frames = args.frames
    if args.seconds is not None:
        frames = frames_for_seconds(args.seconds, pipe.defaults.fps, pipe.vae_scale_temporal)
    video = pipe(args.prompt, args.negative_prompt, num_frames=frames, height=args.height, width=args.width,
                 steps=args.steps, guidance=args.guidance, seed=args.seed, sampler=args.sampler, shift=args.shift)
    path = video.save(args.output)
    s = video.stats
    print(f"wrote {path} ({video.num_frames} frames, {video.frames.shape[2]}x{video.frames.shape[1]}, "
          f"{video.fps:g} fps) in {s['total_s']:.2f}s: text {s['text_s']:.2f}s, DiT {s['dit_s']:.2f}s "
          f"({s['dit_per_step_s'] * 1000:.0f} ms/step), VAE {s['vae_s']:.2f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"output": str(path), "prompt": args.prompt, **s}, indent=2))
    return 0


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, help="write the report as JSON here")


@command("info", "versions, devices and available backends")(_add_info)
def _info(args: argparse.Namespace) -> int:
    import platform

    import torch

    import vidrt
    from vidrt.attention import available_backends
    from vidrt.pipeline import embedded_model_path

    report = {
        "vidrt": vidrt.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "devices": ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
        "attention_backends": available_backends(),
        "embedded_model": str(embedded_model_path()) if (embedded_model_path() / "model_index.json").is_file()
        else "not bundled",
    }
    for mod in ("diffusers", "transformers", "triton", "onnxruntime", "tensorrt"):
        try:
            report[mod] = __import__(mod).__version__
        except Exception:
            report[mod] = None
    for k, v in report.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for kk, vv in v.items():
                print(f"  {kk}: {vv}")
        else:
            print(f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


# Commands that live in their own modules register themselves on import (one module per command).
COMMAND_MODULES = ("vidrt.bench.cli", "vidrt.export.cli", "vidrt.quant.cli", "vidrt.caching.cli", "vidrt.longclip.cli")


def _register_optional_commands() -> None:
    import importlib
    import importlib.util

    for mod in COMMAND_MODULES:
        try:
            if importlib.util.find_spec(mod) is not None:
                importlib.import_module(mod)
        except ModuleNotFoundError:
            continue


def build_parser() -> argparse.ArgumentParser:
    _register_optional_commands()
    parser = argparse.ArgumentParser(prog="vidrt", description="vidrt: text-to-video diffusion transformer runtime")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command][1](args)
    except VidrtError as e:
        print(f"vidrt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vidrt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
