"""Command line: ``vidrt generate | info`` (more commands register as they land)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from vidrt.errors import BackendUnavailableError, ConfigError, VidrtError

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


# --- argument checks shared by every command: they run before any model is loaded -----------------------------

# what matplotlib's savefig writes (--plot)
PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".eps", ".ps", ".svgz", ".pgf")


def check_output(path: Optional[str], flag: str, suffixes: Optional[Iterable[str]] = None, *,
                 folder: bool = False) -> None:
    """ConfigError unless ``path`` can be written once the work is done: a file path (not an existing folder) with
    one of ``suffixes`` (a folder path, not an existing file, with ``folder=True``) under a writable folder.
    Missing parent folders are fine: every writer creates them."""
    if path is None:
        return
    p = Path(path)
    if folder:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{flag} {path} is an existing file, not a folder; give a new or existing folder path")
    else:
        if p.is_dir():
            raise ConfigError(f"{flag} {path} is a folder; give a file path inside it, e.g. "
                              f"{p / ('out' + (next(iter(suffixes)) if suffixes else '.json'))}")
        if suffixes is not None and p.suffix.lower() not in tuple(suffixes):
            raise ConfigError(f"{flag} {path}: cannot write {p.suffix or 'a file without extension'} files; "
                              f"use {', '.join(suffixes)}")
    ancestor = p.absolute() if folder else p.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} {path}: {ancestor} is a file, so no folder can be created there; "
                          "choose another path")
    try:  # the only reliable test (os.access says yes to root on read-only or virtual file systems)
        fd, probe = tempfile.mkstemp(prefix=".vidrt-write-test-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot create files in {ancestor} ({e.strerror}); "
                          "choose a folder you can write to") from None
    if p.is_file() and not os.access(p, os.W_OK):
        raise ConfigError(f"{flag} {path} exists and is read-only; choose another path or make it writable")


def write_text(path: str | Path, text: str) -> Path:
    """Write an output file checked by ``check_output``, creating missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """ConfigError for an option given as 0 or less (None, the option left out, means its default)."""
    for name in names:
        v = getattr(args, name, None)
        if v is not None and not v >= 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {v}: must be at least 1; give a positive number, or leave {flag} out for "
                              "the default")


def check_seconds(seconds: Optional[float]) -> None:
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"--seconds {seconds:g}: give a clip length above 0, e.g. --seconds 2 (or --frames 1 for "
                          "an image)")


def read_prompts(path: str, flag: str = "--prompts") -> list[str]:
    """Non-empty lines of a prompts file; ConfigError when it cannot be read or holds none."""
    try:
        prompts = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {flag} {path}: {e}; give a text file, one prompt per line") from None
    if not prompts:
        raise ConfigError(f"{flag} {path} holds no prompts; write one prompt per line")
    return prompts


def _missing(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is None
    try:
        import importlib.util

        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def require_module(module: str, needed_by: str, extra: str, alternative: str = "") -> None:
    """BackendUnavailableError naming the pip extra when an optional dependency is not installed."""
    if _missing(module):
        raise BackendUnavailableError(f"{needed_by} needs {module}, which is not installed; pip install "
                                      f"'vidrt[{extra}]' (or {module})"
                                      + (f", or {alternative}" if alternative else ""))


def check_report_outputs(args: argparse.Namespace) -> None:
    """--json, --markdown and --plot of a measuring command (bench, compare), checked before it measures; --plot
    needs matplotlib."""
    check_output(args.json, "--json")
    check_output(args.markdown, "--markdown")
    check_output(args.plot, "--plot", PLOT_SUFFIXES)
    if args.plot:
        require_module("matplotlib", "--plot", "bench", "drop --plot")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint folder (diffusers or original Wan); default: the embedded "
                   "model; default-causal: its causal variant (for `vidrt stream`)")
    p.add_argument("--transformer", default=None, help="swap in another DiT (folder or state-dict file)")
    p.add_argument("--transformer-2", default=None,
                   help="the low-noise expert of a two-expert (Wan 2.2 A14B) model: swap it, or add one with "
                        "--boundary-ratio")
    p.add_argument("--boundary-ratio", type=float, default=None,
                   help="two-expert models: share of the timesteps, from the top, the first DiT denoises (e.g. 0.875)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16")
    p.add_argument("--attention", default="sdpa", help="sdpa | triton | flash_attn")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's); 1 avoids oversubscription on a shared machine")


def _load(args):
    from vidrt.pipeline import Pipeline

    check_positive(args, "threads")
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)

    return Pipeline.from_pretrained(args.model, device=args.device, precision=args.precision,
                                    attention=args.attention, transformer=args.transformer,
                                    transformer_2=getattr(args, "transformer_2", None),
                                    boundary_ratio=getattr(args, "boundary_ratio", None))


def _add_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", default=None, help="the prompt (or --shots FILE)")
    p.add_argument("--shots", default=None, help="a YAML/JSON shot list: streamed like `vidrt stream --shots`")
    _add_model_args(p)
    p.add_argument("-o", "--output", default="clip.mp4",
                   help=".mp4, .gif, .png (animated when several frames) or .jpg (--frames 1)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frames", type=int, default=None, help="4k+1 frames (1 = an image)")
    g.add_argument("--seconds", type=float, default=None, help="clip length; rounded to 4k+1 frames")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--guidance-2", type=float, default=None,
                   help="two-expert (Wan 2.2 A14B) models: the low-noise expert's guidance (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None, help="unipc | euler (default: the checkpoint's)")
    p.add_argument("--shift", type=float, default=None, help="flow shift (default: the checkpoint's)")
    p.add_argument("--candidates", type=int, default=1,
                   help="best-of-N: sample N clips (seeds seed..seed+N-1) and keep the one the model's verifier "
                        "scores highest (N times the work; the embedded model ships a verifier)")
    p.add_argument("--regions", action="store_true",
                   help="regional prompting: each object of a multi-object prompt denoised under its own prompt in "
                        "its region of the frame, found in the sample itself (the checkpoint's layout; the embedded "
                        "model has one). About 1 + objects/2 times the DiT work after the first 40 %% of the steps")
    p.add_argument("--json", default=None, help="write run statistics as JSON here")


@command("generate", "generate a clip (or an image with --frames 1) from a prompt")(_add_generate)
def _generate(args: argparse.Namespace) -> int:
    from vidrt.video import SINGLE_IMAGE_SUFFIXES, VIDEO_SUFFIXES

    check_positive(args, "threads", "steps", "frames", "height", "width", "candidates")
    check_seconds(args.seconds)
    check_output(args.json, "--json")
    if args.shots is not None:  # multi-shot clips go through the streaming (chunked, KV-cached) path
        from vidrt.longclip import cli as longclip_cli

        parser = argparse.ArgumentParser()
        longclip_cli._add_stream(parser)
        ns = parser.parse_args(["--shots", args.shots])
        for k in ("model", "transformer", "transformer_2", "boundary_ratio", "device", "precision", "attention", "negative_prompt", "height", "width",
                  "steps", "guidance", "guidance_2", "seed", "sampler", "shift", "json", "seconds", "output", "threads"):
            setattr(ns, k, getattr(args, k))
        if args.prompt is not None:
            raise ConfigError("give a prompt or --shots FILE, not both")
        if args.candidates != 1:
            raise ConfigError("--candidates picks among whole clips; a --shots stream is generated chunk by chunk: "
                              "drop --candidates")
        if args.regions:
            raise ConfigError("--regions works on one prompt's clip; a --shots stream is generated chunk by chunk: "
                              "drop --regions")
        return longclip_cli._stream(ns)
    if args.prompt is None:
        raise ConfigError("give a prompt, e.g. vidrt generate 'a red circle moves right' -o clip.mp4")
    check_output(args.output, "-o", VIDEO_SUFFIXES)
    single = Path(args.output).suffix.lower() in SINGLE_IMAGE_SUFFIXES

    def check_single(n: int) -> None:
        if single and n != 1:
            raise ConfigError(f"-o {args.output}: a JPEG holds one image, not {n} frames; use --frames 1, or write "
                              "the clip as .mp4, .gif or .png (animated)")

    if args.frames is not None:
        check_single(args.frames)
    pipe = _load(args)
    frames = args.frames
    if args.seconds is not None:
        frames = frames_for_seconds(args.seconds, pipe.defaults.fps, pipe.vae_scale_temporal)
    check_single(pipe.defaults.num_frames if frames is None else frames)
    video = pipe(args.prompt, args.negative_prompt, num_frames=frames, height=args.height, width=args.width,
                 steps=args.steps, guidance=args.guidance, guidance_2=args.guidance_2, seed=args.seed,
                 sampler=args.sampler, shift=args.shift, candidates=args.candidates, regions=args.regions or None)
    path = video.save(args.output)
    s = video.stats
    if "regions" in s:
        r = s["regions"]
        across = f" (all {args.candidates} candidates)" if args.candidates > 1 else ""
        print(f"regions: {r['found_last']} of {r['regions']} objects found{across} at the last of {r['reads']} "
              "layout reads" if r["regions"] else "regions: a one-object prompt, nothing to bind (the plain path ran)")
    if "candidates" in s:
        c = s["candidates"]
        print(f"best of {c['n']}: candidate {c['picked']} (seed {args.seed + c['picked']}), verifier scores "
              + ", ".join(f"{v:.3f}" for v in c["scores"]))
    print(f"wrote {path} ({video.num_frames} frames, {video.frames.shape[2]}x{video.frames.shape[1]}, "
          f"{video.fps:g} fps) in {s['total_s']:.2f}s: text {s['text_s']:.2f}s, DiT {s['dit_s']:.2f}s "
          f"({s['dit_per_step_s'] * 1000:.0f} ms/step), VAE {s['vae_s']:.2f}s")
    if args.json:
        write_text(args.json, json.dumps({"output": str(path), "prompt": args.prompt, **s}, indent=2))
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

    check_output(args.json, "--json")
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
        write_text(args.json, json.dumps(report, indent=2))
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
