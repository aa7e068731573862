"""How good is a VAE *for a DiT*? A ~6-minute probe of a trained VAE checkpoint, before spending hours on a DiT.

Reconstruction PSNR alone did not predict it (run 3, docs/default_model.md): the shipped VAE reconstructs
images at 32 dB, yet a DiT on its latents draws random-colour splatter, because the decoder is far from
linear around real latents. The probe reports, for one VAE checkpoint of ``tools/train_default_model.py``:

- ``blend``: PSNR of decode((z_a + z_b) / 2) against (x_a + x_b) / 2 next to the round-trip PSNR
  (``blend_psnr`` of the training script);
- ``dit``: the training script's own DiT stage, shortened to ``--steps`` on 1-frame images only, exported and
  scored by ``benchmarks/eval_default_model.py`` on held-out images (adherence, presence, shape);
- ``recon``: per size (1 / 17 / 33 frames at 64x64, 33x96x64), the reconstruction PSNR of held-out renders and the
  scorer's criteria of the round trips (truth through the VAE, the ceiling of any DiT on it), the eval's numbers.
  ``--recon-only`` reports just this (minutes), and then also takes an exported model folder (the shipped VAE).

The shipped VAE (runs/run3a/vae.pt, before its decoder fine-tunes) probes at adherence 0.31 (presence 0.57, shape
0.15, clean 0.22; blend 19.3 dB vs round trip 29.0 dB) with the defaults; compare VAEs at equal settings only.

    python tools/probe_vae.py runs/run4a/vae.pt --threads 1            # -> runs/probe/run4a/probe.json
    python tools/probe_vae.py runtime/assets/default --recon-only --workdir runs/probe/shipped
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
RECON_SIZES = "1x64x64,17x64x64,33x64x64,33x96x64"


def _script():
    from vidrt.testing import load_script

    return load_script(REPO / "tools" / "train_default_model.py")


def _eval_script():
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    import eval_default_model  # noqa: PLC0415

    return eval_default_model


def reconstruction(vae, prompts: int, sizes: str = RECON_SIZES) -> dict:
    """The eval's VAE numbers on the first ``prompts`` held-out prompts: PSNR and truth through the VAE per size."""
    from vidrt.world.grammar import held_out_prompts

    shapes = [tuple(int(v) for v in s.split("x")) for s in sizes.split(",")]
    return _eval_script().vae_reconstruction(vae.eval(), held_out_prompts()[:prompts], _script().FPS, sizes=shapes)


VAE_ARCH = ("vae_base_dim", "vae_z_dim", "vae_dim_mult", "vae_decoder_base_dim")  # preset fields of the layout


def _stage_checkpoint(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or not state.get("done") or "latent_stats" not in state:
        raise SystemExit(f"{path}: not a finished VAE stage (needs done=True and latent_stats); let the "
                         "VAE stage of tools/train_default_model.py finish first")
    return state


def _arch(state: dict) -> dict:
    return {k: v for k, v in state.get("preset", {}).items() if k in VAE_ARCH}


def _vae_from_state(state: dict):
    T = _script()
    vae = T.make_vae(dataclasses.replace(T.PRESETS["full"], **_arch(state)))
    vae.load_state_dict(state["model"])
    vae.config = dataclasses.replace(vae.config, **state["latent_stats"])
    return vae.eval().requires_grad_(False)


def _folder_vae(folder: Path):
    """The VAE of an exported model folder, as vidrt loads it."""
    from vidrt.checkpoints.load import load_vae, resolve_layout

    return load_vae(resolve_layout(folder))


def probe(vae_ckpt: Path, workdir: Path, *, preset: str = "full", steps: int = 2000, prompts: int = 24,
          threads: int = 1, pairs: int = 16, overrides: tuple[str, ...] = (), recon_prompts: int = 24,
          recon_sizes: str = RECON_SIZES, recon_only: bool = False) -> dict:
    """Reconstruction, then (unless ``recon_only``) the blend test and a short image-only DiT run on
    ``vae_ckpt``; writes and returns ``workdir/probe.json``."""
    torch.set_num_threads(threads)
    workdir.mkdir(parents=True, exist_ok=True)
    state = None if vae_ckpt.is_dir() else _stage_checkpoint(vae_ckpt)
    vae = _folder_vae(vae_ckpt) if state is None else _vae_from_state(state)
    result: dict = {"vae": str(vae_ckpt), "vae_config": {k: getattr(vae.config, k) for k in
                                                        ("base_dim", "z_dim", "dim_mult", "decoder_base_dim")},
                    "vae_parameters": sum(x.numel() for x in vae.parameters())}
    result["recon"] = reconstruction(vae, recon_prompts, recon_sizes)
    result["recon_prompts"] = recon_prompts
    logger.info("reconstruction: %s", json.dumps(result["recon"]))
    if recon_only:
        (workdir / "probe.json").write_text(json.dumps(result, indent=1) + "\n")
        return result
    if state is None:
        raise SystemExit(f"{vae_ckpt}: the DiT probe needs a VAE-stage checkpoint (vae.pt); a model folder "
                         "takes --recon-only")
    T = _script()
    arch = [f"{k}={json.dumps(v)}" for k, v in _arch(state).items()]
    p = T.apply_overrides(T.PRESETS[preset], arch + list(overrides))
    images = [b for b in p.dit_buckets if b[0] == 1][:1]
    if not images:
        raise SystemExit(f"preset {preset!r} has no 1-frame DiT bucket to probe with")
    frames, height, width, _ = images[0]
    if not (workdir / "vae.pt").exists():  # a new probe (the DiT stage resumes in an existing workdir)
        shutil.copyfile(vae_ckpt, workdir / "vae.pt")
    blend = T.blend_psnr(vae, pairs, torch.device("cpu"))
    logger.info("blend test: %s", blend)

    model = workdir / "model"
    args = ["--preset", preset, "--workdir", str(workdir), "--out", str(model), "--threads", str(threads),
            "--dit-steps", str(steps), "--causal-steps", "0", "--vae-decoder-steps", "0",
            "--set", "vae_temporal_steps=0",  # the probed checkpoint is the encoder: no further VAE phase
            "--set", f"dit_buckets={json.dumps([list(images[0][:3]) + [1]])}",
            "--set", f"cache_warm={min(200, max(2, steps // 10))}", "--set", "new_clips_per_step=1.0"]
    for item in arch + list(overrides):
        args += ["--set", item]
    if T.main(args) != 0:
        raise SystemExit(f"the probe's DiT stage failed (workdir {workdir}); see the log above")

    _eval_script().main(["--model", str(model), "--out", str(workdir), "--name", "eval", "--quick",
                         "--prompts", str(prompts), "--sizes", f"{frames}x{height}x{width}", "--no-vae",
                         "--threads", str(threads)])
    ev = json.loads((workdir / "eval.json").read_text())["configs"][0]
    vae_changes = {k: v for k, v in state.get("preset", {}).items() if k.startswith("vae_")
                   and hasattr(T.PRESETS[preset], k) and json.dumps(v) != json.dumps(getattr(T.PRESETS[preset], k))}
    result.update({"vae_step": state["step"], "vae_changed_from_preset": vae_changes, "blend": blend,
                   "dit_steps": steps, "size": ev["size"], "prompts": ev["prompts"], "generated": ev["generated"],
                   "truth_through_vae": ev["truth_through_vae"]})
    (workdir / "probe.json").write_text(json.dumps(result, indent=1) + "\n")
    logger.info("probe: %s", json.dumps(result))
    return result


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vae", type=Path, help="a finished VAE checkpoint of tools/train_default_model.py (vae.pt), or "
                    "with --recon-only an exported model folder")
    ap.add_argument("--workdir", type=Path, default=None, help="default: runs/probe/<the checkpoint's folder>")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--steps", type=int, default=2000, help="DiT steps on images (2 000: ~5 min at 1 thread)")
    ap.add_argument("--prompts", type=int, default=24, help="held-out prompts scored")
    ap.add_argument("--pairs", type=int, default=16, help="image pairs of the blend test")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recon-prompts", type=int, default=24, help="held-out prompts of the reconstruction report")
    ap.add_argument("--recon-only", action="store_true", help="the reconstruction report alone (no DiT run)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="DiT preset overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not (args.vae.is_file() or (args.recon_only and args.vae.is_dir())):
        ap.error(f"{args.vae}: no such file (a vae.pt written by tools/train_default_model.py"
                 + (", or an exported model folder)" if args.recon_only else ")"))
    workdir = args.workdir or REPO / "runs" / "probe" / (args.vae.name if args.vae.is_dir()
                                                         else args.vae.resolve().parent.name)
    probe(args.vae, workdir, preset=args.preset, steps=args.steps, prompts=args.prompts, threads=args.threads,
          pairs=args.pairs, overrides=tuple(args.set), recon_prompts=args.recon_prompts, recon_only=args.recon_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
