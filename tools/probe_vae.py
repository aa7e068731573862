"""How good is a VAE *for a DiT*? A ~6-minute probe of a trained VAE checkpoint, before spending hours on a DiT.

Reconstruction PSNR alone did not predict it (run 3, docs/default_model.md): the shipped VAE reconstructs
images at 32 dB, yet a DiT on its latents draws random-colour splatter, because the decoder is far from
linear around real latents. The probe reports, for one VAE checkpoint of ``tools/train_default_model.py``:

- ``blend``: PSNR of decode((z_a + z_b) / 2) against (x_a + x_b) / 2 next to the round-trip PSNR
  (``blend_psnr`` of the training script);
- ``dit``: the training script's own DiT stage, shortened to ``--steps`` on 1-frame images only, exported and
  scored by ``benchmarks/eval_default_model.py`` on held-out images (adherence, presence, shape).

The shipped VAE (runs/run3a/vae.pt, before its decoder fine-tunes) probes at adherence 0.31 (presence 0.57, shape
0.15, clean 0.22; blend 19.3 dB vs round trip 29.0 dB) with the defaults; compare VAEs at equal settings only.

    python tools/probe_vae.py runs/run4a/vae.pt --threads 1            # -> runs/probe/run4a/probe.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("probe_vae")


def _script():
    from vidrt.testing import load_script

    return load_script(REPO / "tools" / "train_default_model.py")


def probe(vae_ckpt: Path, workdir: Path, *, preset: str = "full", steps: int = 2000, prompts: int = 24,
          threads: int = 1, pairs: int = 16, overrides: tuple[str, ...] = ()) -> dict:
    """Blend test + a short image-only DiT run on ``vae_ckpt``; writes and returns ``workdir/probe.json``."""
    T = _script()
    state = torch.load(vae_ckpt, map_location="cpu", weights_only=False)
    if not state.get("done") or "latent_stats" not in state:
        raise SystemExit(f"{vae_ckpt}: not a finished VAE stage (needs done=True and latent_stats); let the "
                         "VAE stage of tools/train_default_model.py finish first")
    p = T.apply_overrides(T.PRESETS[preset], list(overrides))
    images = [b for b in p.dit_buckets if b[0] == 1][:1]
    if not images:
        raise SystemExit(f"preset {preset!r} has no 1-frame DiT bucket to probe with")
    frames, height, width, _ = images[0]
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "vae.pt").exists():  # a new probe (the DiT stage resumes in an existing workdir)
        shutil.copyfile(vae_ckpt, workdir / "vae.pt")

    torch.set_num_threads(threads)
    vae = T.make_vae(p)
    vae.load_state_dict(state["model"])
    vae.config = dataclasses.replace(vae.config, **state["latent_stats"])
    blend = T.blend_psnr(vae.eval(), pairs, torch.device("cpu"))
    logger.info("blend test: %s", blend)

    model = workdir / "model"
    args = ["--preset", preset, "--workdir", str(workdir), "--out", str(model), "--threads", str(threads),
            "--dit-steps", str(steps), "--causal-steps", "0", "--vae-decoder-steps", "0",
            "--set", "vae_temporal_steps=0",  # the probed checkpoint is the encoder: no further VAE phase
            "--set", f"dit_buckets={json.dumps([list(images[0][:3]) + [1]])}",
            "--set", f"cache_warm={min(200, max(2, steps // 10))}", "--set", "new_clips_per_step=1.0"]
    for item in overrides:
        args += ["--set", item]
    if T.main(args) != 0:
        raise SystemExit(f"the probe's DiT stage failed (workdir {workdir}); see the log above")

    sys.path.insert(0, str(REPO / "benchmarks"))
    import eval_default_model  # noqa: PLC0415

    eval_default_model.main(["--model", str(model), "--out", str(workdir), "--name", "eval", "--quick",
                             "--prompts", str(prompts), "--sizes", f"{frames}x{height}x{width}", "--no-vae",
                             "--threads", str(threads)])
    ev = json.loads((workdir / "eval.json").read_text())["configs"][0]
    trained = state.get("preset", {})
    vae_changes = {k: v for k, v in trained.items() if k.startswith("vae_") and hasattr(T.PRESETS[preset], k)
                   and json.dumps(v) != json.dumps(getattr(T.PRESETS[preset], k))}
    result = {"vae": str(vae_ckpt), "vae_step": state["step"], "vae_changed_from_preset": vae_changes,
              "blend": blend, "dit_steps": steps, "size": ev["size"], "prompts": ev["prompts"],
              "generated": ev["generated"], "truth_through_vae": ev["truth_through_vae"]}
    (workdir / "probe.json").write_text(json.dumps(result, indent=1) + "\n")
    logger.info("probe: %s", json.dumps(result))
    return result


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vae", type=Path, help="a finished VAE checkpoint of tools/train_default_model.py (vae.pt)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: runs/probe/<the checkpoint's folder>")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--steps", type=int, default=2000, help="DiT steps on images (2 000: ~5 min at 1 thread)")
    ap.add_argument("--prompts", type=int, default=24, help="held-out prompts scored")
    ap.add_argument("--pairs", type=int, default=16, help="image pairs of the blend test")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="DiT preset overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.vae.is_file():
        ap.error(f"{args.vae}: no such file (a vae.pt written by tools/train_default_model.py)")
    workdir = args.workdir or REPO / "runs" / "probe" / args.vae.resolve().parent.name
    probe(args.vae, workdir, preset=args.preset, steps=args.steps, prompts=args.prompts, threads=args.threads,
          pairs=args.pairs, overrides=tuple(args.set))
    return 0


if __name__ == "__main__":
    sys.exit(main())
