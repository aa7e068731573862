#!/usr/bin/env bash
# DiT stage of the default model on one GPU: several recipes ("arms") trained side by side on the same card
# (each arm is launch-bound -- a step of this small DiT is a few hundred tiny kernels -- so they share it well),
# each from scratch on a finished VAE, each ending after FIT_MIN minutes of training (--fit-dit-minutes sets the
# step count, so the learning-rate schedule completes). Writes per arm its log and its finished DiT stage
# stripped to the EMA weights (ARM_dit.pt, what --export-only and the causal stage need; ARM_causal.pt with
# CAUSAL_STEPS) under OUT.
#
#   tools/train_on_gpu.sh VAE_DIR OUT [FIT_MIN]
#
# EXTRA (environment): more arguments for every arm (e.g. a quick check on the CPU: DEVICE=cpu EXTRA="--set
# dit_tokens_per_batch=144 --set cache_warm=2").
# VAE_DIR holds the finished VAE checkpoints (vae.pt, vae_temporal.pt; model + latent statistics suffice) or is an
# exported model folder whose VAE is used (runtime/assets/default: the package alone is enough).
# Session 11 (H100, benchmarks/results/gpu_training_h100.md): at patch 1x1x1 a 256-dim / 8-layer DiT trained from
# scratch for 7.2 min (5 887 steps) starts to read "left" vs "right" across the whole grammar; session 12 shipped it
# (runtime/assets/default, fp16) with a causal DiT fine-tuned on the CPU. Session 13 continued it for 8 min in two
# arms: 4x the tokens per step (36 864) cost only 22 % of the step rate (7.9 vs 10.1 steps/s), 3.1x the clips seen.
# Session 13 shipped the alt arm (quick eval 0.36 -> 0.46 on clips, 0.43 -> 0.58 on images). Session 14 continued it
# at 4x and 8x the tokens per step (both fitted on the card): 4x won (quick eval 0.48 / 0.65 vs 0.47 / 0.58 for 8x) and
# shipped; batch size is no longer the lever (benchmarks/results/gpu_training_h100.md). The 4x arm encoded 7 085 clips
# and drew 179 k from its cache (each clip ~25 times). Session 16 (no GPU) split the eval by objects per prompt:
# 1 / 2 / 3-object held-out clips score 0.71 / 0.47 / 0.34 (images 0.87 / 0.58 / 0.47). Session 19 continued the
# shipped DiT for 8 min in two arms, the grammar's object mix (wide) and 1 / 2 / 3-object prompts at 17 / 33 / 50 %
# (alt, dit_object_probs=[1,2,3]): both gained about one standard error (full eval, clips +0.018 / +0.027, images
# +0.030 / +0.002), nearly all in "clean"; shape (colour-shape binding) moved in neither. The wide arm shipped.
# Session 21 ran the control beside lower training noise levels (dit_t_mean=-0.5): nothing moved (clips -0.008 /
# +0.008 +- 0.019, images -0.006 / -0.003, shape +-0.01; the loss is flat over the 8 minutes), so 8-minute
# continuations of this 8-layer DiT are spent (lease gains +0.13, +0.05, +0.02, 0). Single-object images score 0.87
# against the VAE's 0.89; two- and three-object scenes 0.61 / 0.51 against 0.92 / 0.96 (duplicated objects, colours
# on the wrong shape). Session 21's probe (tools/probe_text_binding.py, benchmarks/results/text_binding.md) points to
# a cause: the jointly trained text encoder does not bind (a linear probe reads a 3-object prompt's colours from its
# shape words 17 % of the time, chance 12.5 %, an untrained encoder 33-49 %), and the DiT's cross-attention sees the
# word states without their order. Session 23 tested the two levers, each alone against the shipped model, 8 minutes
# each: the binding loss on the text encoder (text_bind_weight=1.0) binds it completely (probe 1.00) and buys shape
# (+0.07 on clips and images) but loses clean (-0.02 / -0.07); the DiT grown to 12 blocks (grow_depth: the added
# blocks start as the identity) buys clean (+0.07 / +0.04) and loses a little shape; adherence moved in neither
# (+0.002 / +0.005 on clips, benchmarks/results/gpu_training_h100.md). The next call combines them without paying
# for the binding again: both arms continue session 23's bound arm, carried in tools/carry/s23_bound -- wide grown
# to 12 blocks, alt a plain 8-block continuation (does clean come back with time alone?); the binding loss stays on
# in both (keeps the encoder bound; free at inference). Judge each against the shipped model AND against the
# carried one (benchmarks/results/gpu_s23_bind.json) with --compare, by the shape and clean columns and the
# by-objects split as well as the mean, and probe each arm's encoder (tools/probe_text_binding.py) and its DiT
# (tools/probe_dit_binding.py, a minute on images: session 25 found the carried arm's DiT binds shapes 0.85 and
# motions 0.75 where the shipped one is at chance, but samples no better; does more depth or time turn it into
# adherence?). Session 26 (benchmarks/results/expert_mix.md): the carried arm denoising s in [0.3, 0.85] with the
# shipped DiT on the other steps scores 0.547 / 0.700 (clips / images; +0.021 +- 0.010 / +0.032 on the shipped model),
# so its binding is usable at mid noise and its ends are what lag: an arm continued from it should beat that mix alone.
# Session 27 (same file): the carried arm's own low-noise steps, fine-tuned 49 CPU minutes at s < 0.3, did not move
# (images 0.655 vs 0.654 alone); run a continued arm with its low-noise expert as a Wan 2.2 pair too (eval_default_model.py
# --transformer-2 DIR --boundary-ratio 0.3) when the plain one's clean criterion still lags.
# (Shipping 12 blocks: the base model alone is 30.6 MB (DiT 23.4 in fp16), a 12-block causal DiT 23.4 more in fp16
# but 12.55 MB with --set export_causal_dtype=int8 (vidrt.quant.storage, session 23; long clips: docs/precision.md):
# 43.2 MB, over tests/test_errors.py's 40 MB budget unless the VAE and the text encoder are exported in fp16 too:
# --set export_vae_dtype=fp16 --set export_text_dtype=fp16, -2.94 and -0.67 MB, 39.6 MB in all; the VAE's fp16
# rounding moves its decodes by <= 1 pixel level, benchmarks/results/storage.md; diffusers loads such a folder.)
#   P1="--set dit_patch=1 --set dit_dim=256 --set dit_heads=4 --set dit_ffn=768 --set export_dit_dtype=fp16 \
#     --set dit_lr=3e-4 --set dit_tokens_per_batch=36864 --set new_clips_per_step=2 --set text_bind_weight=1.0"
#   export EXTRA="$P1" INIT=tools/carry/s23_bound ALT_INIT=tools/carry/s23_bound \
#     WIDE="--set dit_layers=12" ALT="--set dit_layers=8"
#   tools/train_on_gpu.sh runtime/assets/default $OUT 8
# (checked on the CPU in session 23: DEVICE=cpu with dit_tokens_per_batch=1024 and cache_warm=2 in P1, FIT_MIN 0.5:
# wide grows the carried DiT from 8 to 12 blocks, both start from its step 2 630 and come back as 2 + 2 parts,
# 41 MB; clear /tmp/work_wide and /tmp/work_alt first on a machine that ran an earlier check, or the arms resume it;
# the carried folder takes the working tree the call sends to 58.9 MB of the device tool's 64 MiB)
# (session 23's call: INIT and ALT_INIT runtime/assets/default, P1 without the last two flags, WIDE="--set
# new_clips_per_step=2 --set dit_layers=8 --set text_bind_weight=1.0", ALT="--set new_clips_per_step=2 --set
# dit_layers=12"; session 21's: ALT with dit_t_mean=-0.5 instead; session 19's had ALT's dit_object_probs=[1,2,3];
# session 16's replaced a data-diversity arm, 8 new clips per step instead of 2)
# (session 17, CPU: the same object mix with 63 % image batches, 85 min from the shipped DiT, scored -0.038 +- 0.016 on
# clips and +-0 on images: more multi-object images alone do not teach binding; the GPU arm keeps the clip-heavy mix)
# (535 s of wall time at FIT_MIN 8: ~25 s start-up, 8 min of training, ~10 s to save; 573 s of device time with the
# machine's start. One call is all a 15-minute lease holds: the 64 MB the call brings back take longer to arrive than
# the 30 s the machine stays warm, so a second call finds it bare and every arm starts over -- session 13 lost its
# causal call that way. Train the causal stage on the CPU (docs/default_model.md, ~70 min at 1 thread), or give a
# single call both stages with CAUSAL_STEPS=1000000 CAUSAL_MIN=1.3 and FIT_MIN 6.5, and bring back one arm: the
# device tool returns at most 8 files of 16 MiB, 64 MiB in all, and one arm's two fp32 stages are 6 parts)
# (EXTRA comes last on each arm's command line, so it must not set what WIDE or ALT set)
# (a patch-1 clip is 4x the tokens: 9 216 tokens per batch are 16 clips of 33x64x64 instead of 64)
# (export a 256-dim pair with --set export_dit_dtype=fp16 to stay under the 40 MB package budget: 8.0 M parameters,
# 16 MB per DiT in fp16, ~39 MB with the causal one, the VAE and the text encoder)
# Then, on any machine (cat ARM_dit.pt.part* > ARM_dit.pt; tar xzf logs.tgz): copy ARM_dit.pt as dit.pt (and
# ARM_causal.pt as causal.pt) into a workdir and export with the recipe the checkpoint recorded:
#   python tools/train_default_model.py --preset-from OUT/ARM_dit.pt --workdir W --vae-from runtime/assets/default \
#     --causal-steps N --export-only        # N: the causal log's fitted count; default --out: the package's folders
# Pick an arm by the paired difference of the quick evals (same prompts and seeds), not by their means:
#   python benchmarks/eval_default_model.py --compare SHIPPED/default_model.json ARM/default_model.json
# (session 14's arms: 8x vs 4x the batch -0.008 +- 0.032 on clips, -0.071 +- 0.051 on images: one SE is 0.03-0.05)
# then benchmarks/run_default_model.sh and the long-clip benchmarks. Needs torch with CUDA; vidrt need not be
# installed.
# A workdir an earlier call left on the same (warm) machine is resumed: call again with a larger FIT_MIN to
# continue (session 7: 7.5 then 10.8); on a fresh machine every arm starts over.
set -u
VAE_DIR=$1; OUT=$2; FIT_MIN=${3:-8}; DEVICE=${DEVICE:-cuda}; PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PKG=/tmp/vidrt_pkg
rm -rf "$PKG" && mkdir -p "$PKG"
cp -r "$REPO/runtime" "$PKG/vidrt" && cp -r "$REPO/kernels" "$PKG/vidrt/kernels" && cp -r "$REPO/export" "$PKG/vidrt/export"
export PYTHONPATH="$PKG" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"

# the gpu preset (the shipped model's recipe: frame-local VAE, GPU data throughput, the 192-dim DiT) and a second
# arm beside it; session 7 ran these as --set flags on the full preset (commit 06f3be3), which the preset now holds.
# INIT (environment): a dit.pt or an exported model folder (e.g. runtime/assets/default) the wide arm starts from
# (--dit-init: GPU training carried across sessions); WIDE: its own flags. ALT_INIT, ALT: the same for the second
# arm (ALT's default: run 3's small DiT).
# CAUSAL_STEPS (> 0): also fine-tune the causal DiT on the card (default 0: the CPU does it, ~13 min at 1
# thread), its length fitted to CAUSAL_MIN minutes.
COMMON=(--preset gpu --set checkpoint_minutes=0)
declare -A ARMS
ARMS[wide]="${INIT:+--dit-init $REPO/$INIT} ${WIDE:-}"
SMALL="--set dit_lr=6e-4 --set dit_dim=128 --set dit_heads=2 --set dit_layers=4 --set dit_ffn=384"
ARMS[alt]="${ALT_INIT:+--dit-init $REPO/$ALT_INIT} ${ALT:-$SMALL}"

for arm in "${!ARMS[@]}"; do
  work=/tmp/work_$arm
  mkdir -p "$work"
  if [ -f "$VAE_DIR/model_index.json" ]; then VAE_ARGS=(--vae-from "$VAE_DIR")   # an exported model's VAE
  else VAE_ARGS=(); cp "$VAE_DIR"/vae.pt "$VAE_DIR"/vae_temporal.pt "$work"/; fi
  # shellcheck disable=SC2086
  "$PY" "$REPO/tools/train_default_model.py" --workdir "$work" --device "$DEVICE" --threads 2 --render-workers 4 \
    --causal-steps "${CAUSAL_STEPS:-0}" --fit-causal-minutes "${CAUSAL_MIN:-1.5}" \
    --causal-max-minutes "$($PY -c "print(${CAUSAL_MIN:-1.5} + 0.3)")" --vae-decoder-steps 0 --no-export --dit-steps 1000000 \
    --fit-dit-minutes "$FIT_MIN" --dit-max-minutes "$($PY -c "print($FIT_MIN + 0.5)")" \
    "${COMMON[@]}" "${VAE_ARGS[@]}" ${ARMS[$arm]} ${EXTRA:-} > "$OUT/${arm}.log" 2>&1 &
done
wait
for arm in "${!ARMS[@]}"; do
  "$PY" - "$arm" "$OUT" <<'EOF'
import os, sys, torch
arm, out = sys.argv[1:]
for stage in ("dit", "causal"):
    path = f"/tmp/work_{arm}/{stage}.pt"
    if not os.path.exists(path):
        continue
    s = torch.load(path, map_location="cpu", weights_only=False)
    keep = {k: s[k] for k in ("ema_dit", "ema_text", "step", "steps", "done", "elapsed", "preset", "init") if k in s}
    # the DiT travels in fp16 (what the package stores anyway): two 16-layer arms' fp32 EMAs would pass the
    # device tool's 64 MiB; loading upcasts
    keep["ema_dit"] = {k: v.half() if v.is_floating_point() else v for k, v in keep["ema_dit"].items()}
    torch.save(keep, f"{out}/{arm}_{stage}.pt")
    print(arm, stage, "step", s["step"], "of", s.get("steps"), "done", s["done"], "clips encoded",
          s["cache"]["added"], "minutes", round(s["elapsed"] / 60, 2))
EOF
  grep -E "steps/s|step [0-9]+ \(" "$OUT/${arm}.log" | tail -3
done
# the device tool brings back files of at most 16 MiB: larger ones (a 256-dim DiT's fp32 EMA is 32 MB) travel in
# 15 MiB parts; rejoin with: cat ARM_dit.pt.part* > ARM_dit.pt
# (at most 8 files come back: the logs travel as one archive)
logs=(gpu.txt); for arm in "${!ARMS[@]}"; do logs+=("$arm.log"); done
tar czf "$OUT/logs.tgz" -C "$OUT" "${logs[@]}" && (cd "$OUT" && rm "${logs[@]}")
for f in "$OUT"/*.pt; do
  if [ "$(stat -c %s "$f")" -gt $((15 * 1024 * 1024)) ]; then split -b 15M "$f" "$f.part" && rm "$f"; fi
done
ls -l "$OUT"
