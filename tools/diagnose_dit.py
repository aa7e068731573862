"""Where does a world model's DiT fail? One-step x0 predictions from noised ground truth, scored.

Renders ``--n`` clips of one prompt, encodes them with the model's VAE, noises the latents to each level s,
predicts x0 = x_s - s v in one DiT call (conditional, no guidance), decodes and scores them with the world
scorer; also reports the latent MSE per latent frame and the object signal (spatial std per latent frame) that
the noise must not bury. Near the data (small s) it says whether the DiT knows the clip; at large s whether it can
place objects; a full sample (``eval_default_model.py --prompt``) adds what the sampler's trajectory makes of it.
Used in docs/default_model.md (sessions 5 and 6) to tell a weak DiT from a weak VAE or sampler.

``--against`` asks whether the DiT reads a word: the same noised latents predicted with other prompts (the motion
swapped, the colour swapped, the empty prompt), reported as the error on object voxels; a word the DiT ignores
leaves it unchanged (session 9: the direction of a motion -- left vs right -- on every grammar-trained model so far,
its axis and the colour read; session 10: a DiT trained on four direction prompts for ~8 000 steps reads it).
Each prompt's prediction is also reduced to an object *track*: the mean over clips of the object's centroid in the
decoded x0, at five frames from first to last, beside the truth's -- where the DiT puts the object, in frame units,
for each wording. ``--context K`` gives the first K latent frames clean (timestep 0, excluded
from the errors): the diffusion-forcing question, does the word say where the object goes once its start is seen?

    python tools/diagnose_dit.py --model runs/x/model --prompt "a red circle moves right on a gray background" \
        --against "a red circle moves left on a gray background" --against ""
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Optional, Sequence

import numpy as np
import torch

import vidrt
from vidrt.errors import ConfigError
from vidrt.video import from_frames, to_frames
from vidrt.world.score import mean_scores, score
from vidrt.world.grammar import parse
from vidrt.world.render import render

CRITERIA = ("adherence", "presence", "shape", "motion", "temporal", "clean")
OBJECT_SHARE = 0.5   # a latent voxel is "object" where it is this share of the clip's largest distance from the background
TRACK_POINTS = 5     # frames (first to last, evenly spaced) at which tracks are reported
NO_OBJECT = 24.0     # a frame whose largest distance from its background (sum over RGB, 0-255) is below this is empty


def object_track(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) frames -> per-frame centroid (x / width, y / height) of the pixels further from the frame's
    median colour (its background) than half the frame's largest such distance, weighted by that distance. Robust
    to the blurred objects of high-noise x0 predictions, where the world scorer finds no shape. NaN where a frame
    holds nothing but its background."""
    f = np.asarray(frames, dtype=np.float32)
    bg = np.median(f.reshape(f.shape[0], -1, 3), axis=1)[:, None, None, :]
    d = np.abs(f - bg).sum(-1)
    peak = d.max(axis=(1, 2))
    wgt = d * (d > OBJECT_SHARE * peak[:, None, None])
    mass = np.where(peak < NO_OBJECT, np.nan, wgt.sum(axis=(1, 2)))
    x = (wgt * np.arange(f.shape[2])[None, None, :]).sum(axis=(1, 2)) / mass / f.shape[2]
    y = (wgt * np.arange(f.shape[1])[None, :, None]).sum(axis=(1, 2)) / mass / f.shape[1]
    return x, y


def _track(clips: list[np.ndarray]) -> dict[str, list[Optional[float]]]:
    """Mean object track of decoded ``clips`` at TRACK_POINTS frames, over the clips with an object there (None:
    none has)."""
    xy = [object_track(c) for c in clips]
    t = len(xy[0][0])
    at = np.unique(np.linspace(0, t - 1, TRACK_POINTS).round().astype(int))
    out = {}
    for i, k in enumerate("xy"):
        vals = np.array([c[i][at] for c in xy])
        present = ~np.isnan(vals)
        mean = np.where(present, vals, 0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
        out[k] = [round(float(m), 3) if present[:, j].any() else None for j, m in enumerate(mean)]
    return out


def _decoded(pipe: vidrt.Pipeline, latents: torch.Tensor) -> list[np.ndarray]:
    """Latents -> (T, H, W, 3) uint8 clips, decoded once for both the scores and the tracks."""
    return [to_frames(v) for v in pipe.decode(latents)]


def _scores(clips: list[np.ndarray], prompt: str, fps: float) -> dict[str, Optional[float]]:
    means = mean_scores([score(c, prompt, fps) for c in clips])
    return {k: None if means[k] is None else round(means[k], 3) for k in CRITERIA}


@torch.no_grad()
def diagnose(pipe: vidrt.Pipeline, prompt: str, *, n: int = 8, frames: int = 33, height: int = 64, width: int = 64,
             levels: Sequence[float] = (0.3, 0.6, 0.9), seed: int = 0, against: Sequence[str] = (),
             context: int = 0) -> dict[str, Any]:
    """The one-step table for ``prompt``: truth through the VAE (and its object track), then per noise level the
    latent MSE (overall and per latent frame), the decoded prediction's scores, and with ``prompt`` and with each
    prompt of ``against`` on the same noised latents the object-voxel MSE (``object_mse``: prompt -> MSE) and the
    predicted object track (``tracks``: prompt -> {x, y}). The first ``context`` latent frames are given clean."""
    parse(prompt)
    if len(pipe.experts) > 1:
        raise SystemExit("diagnose_dit reads one DiT at every noise level; this is a two-expert (Wan 2.2) model")
    fps = pipe.defaults.fps
    x = torch.stack([from_frames(render(prompt, height, width, frames, fps, seed + i)) for i in range(n)]).to(pipe.device)
    z = pipe.vae.normalize(pipe.vae.encode(x.to(pipe.vae.dtype))).float()
    for p in against:
        if p:
            parse(p)
    kvs = {p: pipe.transformer.prepare_context(pipe.encode_prompts([p] * n, pipe.defaults.max_sequence_length))
           for p in (prompt, *against)}
    b, _, t, h, w = z.shape
    if not 0 <= context < t:
        raise ConfigError(f"context={context}: give 0 to {t - 1} clean latent frames "
                          f"({frames} frames have {t})")
    patch = pipe.transformer.config.patch_size
    frame_tokens = (h // patch[1]) * (w // patch[2])
    background = z.mean(dim=(3, 4), keepdim=True)
    # object voxels: some channel further from the frame's mean (the background) than half the clip's largest
    # such distance
    dev = (z - background).abs().amax(dim=1, keepdim=True)
    objects = (dev > OBJECT_SHARE * dev.amax(dim=(2, 3, 4), keepdim=True)).float()
    result: dict[str, Any] = {
        "prompt": prompt, "clips": n, "size": f"{frames}x{height}x{width}",
        "object_signal_per_latent_frame": [round(float(v), 3) for v in (z - background).pow(2).mean(dim=(0, 1, 3, 4)).sqrt()],
        "context_latent_frames": context}
    truth = _decoded(pipe, z)
    result.update({"truth_through_vae": _scores(truth, prompt, fps), "truth_track": _track(truth), "levels": []})
    objects[:, :, :context] = 0     # clean context frames are given, not predicted
    gen = torch.Generator("cpu").manual_seed(seed)
    for s in levels:
        noise = torch.randn(z.shape, generator=gen).to(z.device)
        level = torch.full((b, t), s, device=z.device)
        level[:, :context] = 0.0
        sv = level.view(b, 1, t, 1, 1)
        xt = (1 - sv) * z + sv * noise
        timestep = (level * 1000.0).repeat_interleave(frame_tokens, dim=1) if context else level[:, 0] * 1000.0
        x0s = {p: xt - sv * pipe.transformer(xt.to(pipe.dtype), timestep, context_kv=kv_p).float()
               for p, kv_p in kvs.items()}
        err = (x0s[prompt] - z).pow(2)
        clips = {p: _decoded(pipe, x0_p) for p, x0_p in x0s.items()}
        object_mse = {}
        for p, x0_p in x0s.items():
            e = (x0_p - z).pow(2).mean(dim=1, keepdim=True)
            object_mse[p] = float(f"{float((e * objects).sum() / objects.sum().clamp_min(1)):.6g}")
        result["levels"].append({"s": s, "latent_mse": round(float(err[:, :, context:].mean()), 5),
                                 "latent_mse_per_frame": [round(float(e), 5) for e in err.mean(dim=(0, 1, 3, 4))],
                                 "object_mse": object_mse, "tracks": {p: _track(c) for p, c in clips.items()},
                                 **_scores(clips[prompt], prompt, fps)})
    return result


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--prompt", required=True, help="a world prompt (training prompts tell learning from generalising)")
    ap.add_argument("--n", type=int, default=8, help="clips (render seeds seed .. seed + n - 1)")
    ap.add_argument("--size", default="33x64x64", help="FRAMESxHxW")
    ap.add_argument("--levels", default="0.3,0.6,0.9", help="comma list of noise levels s in (0, 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--against", action="append", default=[], metavar="PROMPT",
                    help="also predict the same noised latents with this prompt (repeatable; \"\" is the empty "
                         "prompt): does the DiT read the words that differ?")
    ap.add_argument("--context", type=int, default=0, metavar="K",
                    help="the first K latent frames clean (timestep 0): does the word place the object once its "
                         "start is seen? (diffusion forcing; default 0: one noise level for the whole clip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    for p in (args.prompt, *[a for a in args.against if a]):
        parse(p)   # a prompt outside the grammar fails before any model loads
    levels = [float(v) for v in args.levels.split(",")]
    if not all(0 < s < 1 for s in levels):
        ap.error(f"--levels {args.levels}: each level must be in (0, 1)")
    f, h, w = (int(v) for v in args.size.split("x"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    pipe = vidrt.Pipeline.from_pretrained(args.model)
    res = diagnose(pipe, args.prompt, n=args.n, frames=f, height=h, width=w, levels=levels, seed=args.seed,
                   against=args.against, context=args.context)
    text = json.dumps(res, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
