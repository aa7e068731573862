#!/usr/bin/env python
"""Quality of a pipeline on the synthetic world's held-out prompts: prompt adherence per criterion, per size.

Generates every held-out prompt (``vidrt.world.held_out_prompts()``: object combinations never seen in
training) with ``vidrt.Pipeline`` under the given settings, scores each clip with ``vidrt.world.score``,
and reports the mean of every criterion per configuration (frames x height x width), next to two
references scored the same way: the ground-truth renders of the same prompts (the scorer's ceiling) and
renders of *another* held-out prompt (chance level). Also the VAE's reconstruction PSNR on held-out
renders, and the generation time per clip, so a fast path prints "speed x, adherence y" side by side.

    python benchmarks/eval_default_model.py                       # embedded model, default settings
    python benchmarks/eval_default_model.py --model PATH --steps 10 --precision bf16 --name fast10
    python benchmarks/eval_default_model.py --quick               # 24 prompts, fewer configurations
    python benchmarks/eval_default_model.py --candidates 4 --name best_of_4   # best-of-N by the model's verifier
    python benchmarks/eval_default_model.py --compare A.json B.json   # paired B - A per size, with its error

Writes benchmarks/results/<name>.json, <name>.md and <name>.png (contact sheet: generated frames beside
the ground-truth render of the same prompt).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import vidrt
from vidrt.world.grammar import held_out_prompts, parse, train_prompts
from vidrt.world.layout import WorldLayout
from vidrt.video import from_frames, to_frames
from vidrt.world.render import render
from vidrt.world.score import mean_scores, score

logger = logging.getLogger("eval_default_model")
RESULTS = Path(__file__).resolve().parent / "results"
CRITERIA = ("adherence", "presence", "shape", "motion", "background", "temporal", "clean")
# (frames, height, width, share of the prompts): the main configuration first, then images, non-square
# sizes and a 17-frame clip on an evenly spaced subset of the prompts.
CONFIGS = ((33, 64, 64, 1.0), (1, 64, 64, 1.0), (33, 96, 64, 1 / 3), (33, 64, 96, 1 / 3), (17, 64, 128, 1 / 3),
           (33, 128, 128, 1 / 6))
QUICK_CONFIGS = ((33, 64, 64, 1.0), (1, 64, 64, 1.0), (33, 96, 64, 0.5), (33, 64, 96, 0.5))


def _mean_criteria(scores: Sequence[Any]) -> dict[str, Optional[float]]:
    return {k: v for k, v in mean_scores(scores).items() if k in CRITERIA}


def _subset(prompts: list[str], share: float) -> list[tuple[int, str]]:
    n = max(1, int(round(len(prompts) * share)))
    idx = np.linspace(0, len(prompts) - 1, n).round().astype(int)
    return [(int(i), prompts[int(i)]) for i in sorted(set(idx.tolist()))]


def initial_latents(pipe: "vidrt.Pipeline", index: int, frames: int, height: int, width: int,
                    candidate: int = 0) -> torch.Tensor:
    """Initial noise of held-out prompt `index`: fixed per prompt and size, whatever the batch grouping; best-of-N's
    candidate c > 0 has its own (candidate 0 is the plain run's)."""
    gen = torch.Generator("cpu").manual_seed(10_000 + index + 1_000_000 * candidate)
    return torch.randn(pipe.latent_shape(1, frames, height, width), generator=gen)


def sample(pipe, chunk: list[tuple[int, str]], frames: int, height: int, width: int, gen_kwargs: dict,
           latents_dir: Optional[Path]) -> tuple[list[np.ndarray], float]:
    """Frames of one batch of held-out prompts and the seconds spent. With ``latents_dir`` the final latents
    are kept there per (size, prompt) and a later run reuses them: only the VAE decodes, so two decoders are
    judged on the very same DiT samples in a fraction of the time (the seconds are then the decode's)."""
    n = gen_kwargs.get("candidates", 1)
    tag = f"_best{n}" if n > 1 else ""
    files = [latents_dir / f"{frames}x{height}x{width}_{i}{tag}.pt" for i, _ in chunk] if latents_dir else []
    t0 = time.perf_counter()
    kept = [torch.load(f, map_location="cpu") for f in files if f.is_file()]
    if files and len(kept) == len(files) and [k["prompt"] for k in kept] == [p for _, p in chunk]:
        z = torch.cat([k["latents"] for k in kept])
    else:   # none kept yet, or kept for other prompts (another --prompt list): sample and keep
        noise = torch.cat([initial_latents(pipe, i, frames, height, width, c) for c in range(n) for i, _ in chunk])
        z = pipe([p for _, p in chunk], num_frames=frames, height=height, width=width, latents=noise,
                 progress=False, output="latent", **gen_kwargs).cpu()
        for f, zi, (_, prompt) in zip(files, z, chunk):
            torch.save({"latents": zi[None].clone(), "prompt": prompt}, f)
    videos = pipe.decode(z)
    return [to_frames(v) for v in videos], time.perf_counter() - t0


def evaluate_config(pipe, prompts: list[tuple[int, str]], frames: int, height: int, width: int, *, batch: int,
                    gen_kwargs: dict, keep_frames: int = 0, latents_dir: Optional[Path] = None) -> dict:
    """Generate and score `prompts` at one size; ground-truth and mismatched-render references too."""
    fps = pipe.defaults.fps
    gen_scores, gt_scores, wrong_scores, vae_scores, rows, samples = [], [], [], [], [], []
    by_motion: dict[str, list[float]] = {}
    by_objects: dict[int, list[tuple[float, float]]] = {}
    seconds = 0.0
    bar = tqdm(total=len(prompts), desc=f"{frames}x{height}x{width}", unit="clip", leave=False)
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        videos, took = sample(pipe, chunk, frames, height, width, gen_kwargs, latents_dir)
        seconds += took
        for (i, prompt), video in zip(chunk, videos):
            s = score(video, prompt, fps=fps)
            truth = render(prompt, height, width, frames, fps, seed=i)
            other = render(prompts[(prompts.index((i, prompt)) + 1) % len(prompts)][1], height, width, frames, fps,
                           seed=i)
            gen_scores.append(s)
            gt_scores.append(score(truth, prompt, fps=fps))
            vae_scores.append(score(vae_roundtrip(pipe.vae, truth), prompt, fps=fps))
            wrong_scores.append(score(other, prompt, fps=fps))
            by_objects.setdefault(len(s.objects), []).append((s.adherence, vae_scores[-1].adherence))
            for spec, obj in zip(parse(prompt).objects, s.objects):
                if obj.motion is not None:
                    by_motion.setdefault(spec.motion, []).append(obj.motion)
            rows.append({"index": i, "prompt": prompt, **{k: getattr(s, k) for k in CRITERIA},
                         "seen": [[o.name, o.seen_shape, o.seen_motion] for o in s.objects]})
            if len(samples) < keep_frames:
                samples.append((prompt, video, truth, s.adherence))
        bar.update(len(chunk))
    bar.close()
    return {"size": f"{frames}x{height}x{width}", "frames": frames, "height": height, "width": width,
            "prompts": len(prompts), "seconds_per_clip": seconds / len(prompts),
            "generated": _mean_criteria(gen_scores), "ground_truth": _mean_criteria(gt_scores),
            "truth_through_vae": _mean_criteria(vae_scores), "mismatched_truth": _mean_criteria(wrong_scores),
            # per motion word, the generated objects' motion score and how many objects were asked it: does the
            # DiT tell "left" from "right" (session 10), "grows" from "shrinks"?
            "motion_by_word": {m: {"motion": float(np.mean(v)), "objects": len(v)}
                               for m, v in sorted(by_motion.items())},
            # per number of objects in the prompt (session 16: 1-object prompts score ~0.7 on clips, 3-object ones
            # ~0.35: binding colours, shapes and motions to several objects is where the DiT loses most)
            "by_objects": {str(n): {"adherence": float(np.mean([g for g, _ in v])),
                                    "truth_through_vae": float(np.mean([t for _, t in v])), "prompts": len(v)}
                           for n, v in sorted(by_objects.items())},
            "rows": rows, "_samples": samples}


@torch.no_grad()
def vae_roundtrip(vae, frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the same clip encoded and decoded by `vae` (a vidrt WanVAE; uint8)."""
    x = from_frames(frames)[None].to(vae.device, vae.dtype)
    y = vae.decode(vae.encode(x))
    return ((y.float().clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 3, 0).cpu().numpy()


def vae_reconstruction(vae, prompts: list[str], fps: float,
                       sizes=((1, 64, 64), (17, 64, 64), (33, 64, 64), (33, 96, 64))) -> dict:
    """Per size, held-out renders (seed = prompt index) through `vae`: reconstruction PSNR (dB, uint8 frames)
    and the scorer's mean criteria of the round trips ("truth through the VAE": any DiT's ceiling on it)."""
    from vidrt.metrics import psnr

    out = {}
    for frames, h, w in sizes:
        vals, scores = [], []
        for i, prompt in enumerate(prompts):
            truth = render(prompt, h, w, frames, fps, seed=i)
            rt = vae_roundtrip(vae, truth)
            vals.append(min(psnr(rt, truth), 99.0))
            scores.append(score(rt, prompt, fps=fps))
        out[f"{frames}x{h}x{w}"] = {"psnr": float(np.mean(vals)), "truth_through_vae": _mean_criteria(scores)}
    return out


def vae_psnr(vae, prompts: list[str], fps: float, **kwargs) -> dict:
    """Reconstruction PSNR per size of `vae_reconstruction`, and their mean."""
    out = {k: v["psnr"] for k, v in vae_reconstruction(vae, prompts, fps, **kwargs).items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def contact_sheet(samples: list, path: Path, columns: int = 5) -> None:
    """PNG: per sample two rows (generated, ground truth) of `columns` evenly spaced frames, with the prompt."""
    from PIL import Image, ImageDraw

    if not samples:
        return
    h, w = samples[0][1].shape[1:3]
    scale = max(1, 96 // h)
    label = 14
    cell_h, cell_w = h * scale, w * scale
    img = Image.new("RGB", (columns * (cell_w + 2) + 90, len(samples) * (2 * cell_h + label + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    y = 0
    for prompt, gen, truth, adh in samples:
        draw.text((2, y + 1), f"{prompt}  (adherence {adh:.2f})", fill=(0, 0, 0))
        y += label
        for r, (name, clip) in enumerate((("generated", gen), ("truth", truth))):
            draw.text((2, y + r * cell_h + cell_h // 2 - 5), name, fill=(0, 0, 0))
            idx = np.linspace(0, len(clip) - 1, columns).round().astype(int)
            for c, k in enumerate(idx):
                tile = Image.fromarray(clip[k]).resize((cell_w, cell_h), Image.NEAREST)
                img.paste(tile, (90 + c * (cell_w + 2), y + r * cell_h))
        y += 2 * cell_h + 6
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Default model quality: {result['name']}", "",
             f"Model: `{result['model']}`{' (' + result['model_note'] + ')' if result.get('model_note') else ''}  ",
             f"Settings: steps {s['steps']}, guidance {s['guidance']}, sampler {s['sampler']}, shift {s['shift']}, "
             f"precision {s['precision']}, attention {s['attention']}, seed per prompt 10000 + index"
             + (f", regional prompting {s['regions']}" if s.get("regions") else "") + "  ",
             (f"Given prompts: {result['given_prompts']} x {result['repeat']} seeds (from the command line)"
              if result.get("given_prompts") else
              f"Dev prompts: {result['dev_prompts']} training prompts (train_prompts(N, seed=31))"
              if result.get("dev_prompts") else
              f"Held-out prompts: {result['held_out_prompts']} (object triples never seen in training)"), "",
             "| size (frames x H x W) | prompts | s / clip | adherence | presence | shape | motion | background "
             "| temporal | clean | truth adherence | truth through the VAE | mismatched-truth adherence |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["configs"]:
        g = c["generated"]
        lines.append(f"| {c['size']} | {c['prompts']} | {c['seconds_per_clip']:.2f} | **{_fmt(g['adherence'])}** | "
                     + " | ".join(_fmt(g[k]) for k in CRITERIA[1:])
                     + f" | {_fmt(c['ground_truth']['adherence'])} | {_fmt(c['truth_through_vae']['adherence'])} | "
                     f"{_fmt(c['mismatched_truth']['adherence'])} |")
    for c in result["configs"]:
        if c.get("motion_by_word"):
            lines += ["", f"Motion score by the motion asked, {c['size']} (objects): " + ", ".join(
                f"{m} {v['motion']:.2f} ({v['objects']})" for m, v in c["motion_by_word"].items())]
    for c in result["configs"]:
        if c.get("by_objects"):
            lines += ["", f"Adherence by objects in the prompt, {c['size']}: " + ", ".join(
                f"{n} {'object' if n == '1' else 'objects'} {v['adherence']:.3f} (truth through the VAE "
                f"{v['truth_through_vae']:.3f}, {v['prompts']} prompts)" for n, v in c["by_objects"].items())]
    if result.get("vae_psnr"):
        lines += ["", "VAE reconstruction PSNR on held-out renders (dB): "
                  + ", ".join(f"{k}: {v:.2f}" for k, v in result["vae_psnr"].items())]
    lines += ["", "Ground truth = the renderer's clip of the same prompt scored the same way (the scorer's ceiling); "
              "truth through the VAE = that clip encoded and decoded by the model's VAE (the ceiling of any DiT on "
              "this VAE); mismatched truth = the render of another held-out prompt (chance level).", ""]
    return "\n".join(lines)


def paired_difference(base: dict, other: dict, criteria: Sequence[str] = ("adherence",)) -> list[dict]:
    """``other`` minus ``base`` per size they share, paired prompt by prompt (same held-out prompts and seeds), with
    the standard error of the mean difference: on 24 prompts a 0.02 gap is usually noise, and a paired error is
    several times tighter than comparing two means. Rows whose prompt lists differ are refused."""
    rows = []
    other_cfgs = {c["size"]: c for c in other["configs"]}
    for cb in base["configs"]:
        co = other_cfgs.get(cb["size"])
        if co is None:
            continue
        pb, po = [r["prompt"] for r in cb["rows"]], [r["prompt"] for r in co["rows"]]
        if pb != po:
            raise SystemExit(f"{cb['size']}: the two results scored different prompts ({len(pb)} vs {len(po)}); "
                             "compare runs made with the same --quick / --prompts / --sizes")
        row: dict[str, Any] = {"size": cb["size"], "prompts": len(pb)}
        for k in criteria:
            pairs = [(rb.get(k), ro.get(k)) for rb, ro in zip(cb["rows"], co["rows"])]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]  # e.g. motion of a 1-frame image
            if not pairs:
                continue
            a, b = np.array(pairs, dtype=float).T
            d = b - a
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            row[k] = {"base": float(a.mean()), "other": float(b.mean()), "diff": float(d.mean()), "se": se,
                      "z": float(d.mean() / se) if se > 0 else float("nan")}
        rows.append(row)
    return rows


def paired_markdown(rows: list[dict], base_name: str, other_name: str,
                    criteria: Optional[Sequence[str]] = None) -> str:
    """``paired_difference``'s rows as a table, columns in ``criteria``'s order (default: as first met)."""
    found = {k for r in rows for k in r if k not in ("size", "prompts")}
    crit = [k for k in criteria if k in found] if criteria else []
    crit += [k for k in dict.fromkeys(k for r in rows for k in r if k not in ("size", "prompts")) if k not in crit]
    lines = [f"Paired difference, {other_name} minus {base_name} (same prompts and seeds; +- one standard error)", "",
             "| size | prompts | " + " | ".join(crit) + " |", "|---|---|" + "---|" * len(crit)]
    for r in rows:
        cells = [f"{r[k]['base']:.3f} -> {r[k]['other']:.3f} ({r[k]['diff']:+.3f} +- {r[k]['se']:.3f})" if k in r
                 else "-" for k in crit]
        lines.append(f"| {r['size']} | {r['prompts']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", nargs=2, type=Path, default=None, metavar=("BASE", "OTHER"),
                    help="no generation: paired difference of two results JSONs (e.g. two GPU arms' quick evals)")
    ap.add_argument("--criteria", default="adherence", help="--compare: comma list of criteria")
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--transformer-2", default=None,
                    help="a second DiT as the low-noise expert (Wan 2.2 style), with --boundary-ratio")
    ap.add_argument("--boundary-ratio", type=float, default=None,
                    help="share of the timesteps, from the top, the model's own DiT denoises")
    ap.add_argument("--guidance-2", type=float, default=None, help="the low-noise expert's guidance")
    ap.add_argument("--name", default="default_model", help="results file stem in benchmarks/results/")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--prompts", type=int, default=None, help="use the first N held-out prompts (default all)")
    ap.add_argument("--quick", action="store_true", help="24 prompts and fewer sizes")
    ap.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                    help="score these prompts instead of the held-out set (repeatable; e.g. training prompts to "
                         "tell a generalisation gap from a failure to learn)")
    ap.add_argument("--repeat", type=int, default=1, help="with --prompt: seeds per prompt")
    ap.add_argument("--sizes", default=None, help="comma list FxHxW[:share], e.g. 33x64x64,1x64x64:0.5")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                    help="apply guidance only at sigmas in [LO, HI] (e.g. 0,0.8)")
    ap.add_argument("--sampler", default=None)
    ap.add_argument("--shift", type=float, default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--attention", default="sdpa")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--candidates", type=int, default=1,
                    help="best-of-N: N samples per prompt, the model's verifier keeps one (N x the work)")
    ap.add_argument("--regions", action="store_true",
                    help="regional prompting from the sample's own layout (vidrt.regions; the model's layout)")
    ap.add_argument("--region-start", type=int, default=None, help="--regions: plain steps before the first "
                    "layout read (default 40 %% of the steps)")
    ap.add_argument("--region-no-refresh", action="store_true", help="--regions: read the layout once")
    ap.add_argument("--region-isolate", choices=("auto", "on", "off"), default="auto",
                    help="--regions: each object's prompt sees its region alone (auto: on when the layout has a backdrop)")
    ap.add_argument("--region-clear", choices=("auto", "on", "off"), default="auto",
                    help="--regions: outside the regions, where every object was found, the objects' prompts' mean "
                         "(auto: on when the layout has a backdrop)")
    ap.add_argument("--dev", type=int, default=0, metavar="N",
                    help="score N training prompts (vidrt.world.grammar.train_prompts(N, seed=31), the dev set on "
                         "which sampling settings are chosen) instead of the held-out set")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-vae", action="store_true", help="skip the VAE PSNR")
    ap.add_argument("--latents", type=Path, default=None, metavar="DIR",
                    help="keep each sample's final latents in DIR, and decode those found there instead of sampling "
                         "again: a second model folder with another VAE (decoder) is scored on the same DiT samples")
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. 'partial training run')")
    args = ap.parse_args(argv)
    if args.compare:
        base, other = (json.loads(f.read_text()) for f in args.compare)
        # a results file keeps its stem; the default stem names nothing, so its folder does
        base_name, other_name = (str(f.parent) if f.stem == "default_model" else f.stem for f in args.compare)
        crit = args.criteria.split(",")
        print(paired_markdown(paired_difference(base, other, crit), base_name, other_name, crit), end="")
        return 0
    for p in args.prompt:
        parse(p)  # a prompt outside the grammar fails here (PromptError listing the grammar), before any model loads
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)

    pipe = vidrt.Pipeline.from_pretrained(args.model, device=args.device, precision=args.precision,
                                          attention=args.attention, transformer_2=args.transformer_2,
                                          boundary_ratio=args.boundary_ratio)
    prompts = held_out_prompts()
    repeat = max(1, args.repeat)
    if args.prompt:
        prompts = [p for p in args.prompt for _ in range(repeat)]
    elif args.dev:
        prompts = train_prompts(args.dev, seed=31)
    elif args.quick:
        prompts = [prompts[i] for i in np.linspace(0, len(prompts) - 1, 24).round().astype(int)]
    if args.prompts:
        prompts = prompts[: args.prompts]
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    if args.sizes:
        configs = []
        for item in args.sizes.split(","):
            dims, _, share = item.partition(":")
            f, h, w = (int(v) for v in dims.split("x"))
            configs.append((f, h, w, float(share or 1.0)))
    d = pipe.defaults
    gen_kwargs = {"steps": args.steps, "guidance": args.guidance, "sampler": args.sampler, "shift": args.shift}
    settings = {"steps": args.steps or d.steps, "guidance": args.guidance if args.guidance is not None else d.guidance,
                "sampler": args.sampler or d.sampler, "shift": args.shift if args.shift is not None else d.shift,
                "precision": args.precision, "attention": args.attention, "device": str(pipe.device)}
    if pipe.transformer_2 is not None:
        gen_kwargs["guidance_2"] = args.guidance_2
        settings["experts"] = {"transformer_2": str(args.transformer_2 or "the model's"),
                               "boundary_ratio": pipe.boundary_ratio, "guidance_2": args.guidance_2}
    if args.candidates != 1:
        gen_kwargs["candidates"] = settings["candidates"] = args.candidates
    if args.regions:
        auto = {"auto": None, "on": True, "off": False}
        gen_kwargs["regions"] = vidrt.Regions(WorldLayout(), start=args.region_start,
                                              refresh=not args.region_no_refresh,
                                              isolate=auto[args.region_isolate], clear=auto[args.region_clear])
        settings["regions"] = {"start": args.region_start, "refresh": not args.region_no_refresh,
                               "isolate": args.region_isolate, "clear": args.region_clear}
    if args.guidance_interval:
        gen_kwargs["guidance_interval"] = tuple(float(v) for v in args.guidance_interval.split(","))
        settings["guidance_interval"] = list(gen_kwargs["guidance_interval"])
    result: dict[str, Any] = {"name": args.name, "model": args.model or "embedded default",
                              "model_note": args.note, "settings": settings,
                              "held_out_prompts": 0 if args.prompt or args.dev else len(prompts),
                              "configs": []}
    if args.prompt:
        result.update(given_prompts=len(args.prompt), repeat=repeat)
    elif args.dev:
        result["dev_prompts"] = len(prompts)
    if args.latents:
        args.latents.mkdir(parents=True, exist_ok=True)
        meta_file, meta = args.latents / "meta.json", {"model": args.model or "embedded default", **settings}
        if meta_file.is_file() and json.loads(meta_file.read_text()) != meta:
            old = json.loads(meta_file.read_text())
            logger.info("--latents %s: samples of %s (%s) decoded by this model's VAE", args.latents, old["model"],
                        {k: v for k, v in old.items() if k != "model"})
            result["latents_from"] = old
        elif not meta_file.is_file():
            meta_file.write_text(json.dumps(meta, indent=1) + "\n")
    training = json.loads((Path(pipe.source) / "vidrt.json").read_text()).get("_training") \
        if (Path(pipe.source) / "vidrt.json").is_file() else None
    if training:
        result["training"] = training
    sheet = []
    for frames, h, w, share in configs:
        sub = _subset(prompts, share)
        c = evaluate_config(pipe, sub, frames, h, w, batch=args.batch, gen_kwargs=gen_kwargs,
                            keep_frames=6 if not sheet else 0, latents_dir=args.latents)
        sheet = sheet or c.pop("_samples")
        c.pop("_samples", None)
        result["configs"].append(c)
        logger.info("%s: adherence %.3f (truth %.3f, mismatched %.3f), %.2f s/clip", c["size"],
                    c["generated"]["adherence"], c["ground_truth"]["adherence"],
                    c["mismatched_truth"]["adherence"], c["seconds_per_clip"])
    if not args.no_vae:
        result["vae_psnr"] = vae_psnr(pipe.vae, prompts[:12], pipe.defaults.fps)
        logger.info("VAE PSNR %s", result["vae_psnr"])
    main_cfg = result["configs"][0]
    result["summary"] = {"adherence": main_cfg["generated"]["adherence"], "size": main_cfg["size"],
                         "seconds_per_clip": main_cfg["seconds_per_clip"],
                         "adherence_all_sizes": float(np.mean([c["generated"]["adherence"] for c in result["configs"]])),
                         "vae_psnr": result.get("vae_psnr", {}).get("mean")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    contact_sheet(sheet, args.out / f"{args.name}.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
