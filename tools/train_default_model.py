#!/usr/bin/env python
"""Train vidrt's embedded default model from scratch on the synthetic world and export it.

Stages (each resumable from the last checkpoint under --workdir):

1. ``vae``: a small Wan-layout causal 3D VAE (4x time, 8x space) trained on world renders rendered on
   the fly from *training* prompts only (the held-out split of ``vidrt.world`` never enters training):
   1-frame images and 5/9/17-frame windows of 33-frame clips at several sizes. Loss: L1 + L2 on pixels in
   [-1, 1] (decoding the latent mean) + a small KL. Afterwards the per-channel latent mean/std are measured and stored in the VAE
   config (``latents_mean`` / ``latents_std``), so the DiT sees unit-scale latents.
2. ``dit``: the VAE is frozen. A streaming latent cache (per bucket, ring buffer) is filled with encoded
   training clips, and every step encodes a few new ones, so data grows as training goes on while each
   clip is reused. A Wan DiT plus a small UMT5 text encoder (trained jointly with the DiT: it must bind
   colour/shape/motion words of several objects, which a frozen random encoder does poorly) learn the
   rectified-flow velocity: x_s = (1 - s) x0 + s noise, target = noise - x0, timestep = 1000 s, with
   s ~ logit-normal(0, 1). The text is replaced by the empty prompt (the negative prompt) 10 % of the
   time for classifier-free guidance. Buckets: 1, 17 and 33 frames at 16 fps, 64x64 ... 128x128
   including non-square sizes. EMA weights are exported.
3. ``export``: diffusers modules (AutoencoderKLWan, WanTransformer3DModel, UMT5EncoderModel) get the
   trained state dicts with strict=True and ``WanPipeline.save_pretrained`` writes the folder (fp32
   safetensors), plus ``vidrt.json`` with the generation defaults.
4. ``eval``: VAE held-out PSNR; prompt adherence of generated held-out clips (benchmarks/eval_default_model.py).

Usage::

    python tools/train_default_model.py --preset full            # ~2 h on a 2-core CPU, resumes if restarted
    python tools/train_default_model.py --preset smoke --workdir /tmp/w --out /tmp/model
    python tools/train_default_model.py --export-only            # export from the latest checkpoint now
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import pickle
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vidrt.models.dit import DiTConfig, WanDiT
from vidrt.models.text import build_word_tokenizer, clean_prompt
from vidrt.models.vae import LatentDistribution, TemporalCache, VAEConfig, WanVAE
from vidrt.errors import PromptError
from vidrt.world.grammar import ARTICLES, held_out_prompts, is_held_out, parse, sample_train_prompt, vocabulary
from vidrt.video import from_frames
from vidrt.world.render import render

logger = logging.getLogger("train_default_model")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "runtime" / "assets" / "default"
FPS = 16


# ----------------------------------------------------------------------------------------- presets

@dataclass
class Preset:
    """Everything that defines a training run (the seed and this make it reproducible)."""

    name: str
    # VAE
    vae_base_dim: int = 12
    vae_z_dim: int = 16
    vae_dim_mult: tuple = (1, 2, 4, 4)
    vae_steps: int = 12000
    # with the identity-block init and object-weighted loss; 1e-4 was 5 dB behind at 12 min (run 2). Session 24: the
    # frame-local `gpu` VAE at 4e-4 sits on a ~9 dB plateau for ~2 500 steps, and at base_dim 20 it never left it
    # in 2 250; at 4e-5 both leave it within ~1 000 but end far lower at equal time (images 27.4 dB after 85 min against
    # the shipped 32.0; benchmarks/results/vae_width_lr.md). Kept
    vae_lr: float = 4e-4
    vae_kl: float = 1e-4
    # run 4, after run 3 found the latent space far from linear (docs/default_model.md): two regularisers that
    # make a latent easier for a diffusion model ("diffusability"), both off in runs <= 3.
    # Gaussian noise on the decoded latent, std vae_latent_noise x the batch's per-channel latent std: nearby
    # latents must decode to nearby frames (a VAE with a fixed relative posterior width; relative so that
    # scaling the latent up cannot escape it), ramped in over the first vae_noise_ramp of the steps. Measured
    # (run 4, with vae_scale_eq 0.3): 0.1 from step 0 and 0.1 ramped both stalled at ~7.5-8 dB for 2 000+ steps
    # (the same run without noise: 12-13 dB; the plain VAE 12 dB), so it stays off
    vae_latent_noise: float = 0.0
    vae_noise_ramp: float = 0.3
    # scale equivariance (EQ-VAE, Kouzelis et al. 2025): on this share of steps the decoder gets the latent
    # average-pooled 2x in space and must decode the frames average-pooled 2x: the latent's low frequencies
    # alone must describe the picture, so it carries less high-frequency detail a DiT has to model. Both
    # regularisers act in the VAE stage only: the decoder phases (encoder frozen) cannot change the latent
    vae_scale_eq: float = 0.0
    # objects cover ~5-10% of a frame: with a plain mean loss the VAE learns the background and leaves objects
    # as blurs for thousands of steps; pixels of (and next to) objects weigh 1 + vae_fg_weight
    vae_fg_weight: float = 10.0
    vae_decoder_steps: int = 12000    # decoder-only fine-tune (encoder frozen), may run beside the DiT stage
    # then the decoder on long windows: trained on <= 17 frames, the decoder drifted after ~20 frames (a gray
    # background decoded black by frame 32): its temporal receptive field is longer than the training windows
    vae_long_steps: int = 3000
    vae_long_buckets: tuple = ((65, 64, 64, 32, 1, 2), (33, 64, 64, 32, 2, 2), (17, 64, 64, 32, 2, 1),
                               (1, 64, 64, 32, 8, 1))
    # last, the decoder learns to decode *blends* of latents as blends of frames. The encoder keeps colour in the
    # direction of its features (see init_vae_), so the decoder had learnt a map that is far from linear:
    # (z_red_circle_a + z_red_circle_b) / 2 decoded to two *yellow* circles, 0.75 z of a white frame to an
    # orange one. A DiT's prediction at high noise is a conditional mean, i.e. a blend, and every sampler step
    # moves along blends: its small errors decoded to vivid blobs of random colours all over the frame.
    # Encoder frozen, so every latent the DiTs saw keeps its meaning. Off in the shipped run 3: it turned the
    # splatter into gray mush (the DiT's outputs *are* blends) and scored lower with the same DiT (24 prompts,
    # guidance 3: clips 0.229 vs 0.243, images 0.34 vs 0.49, after 1 672 steps); `--set vae_smooth_steps=4000`.
    vae_smooth_steps: int = 0
    vae_smooth_blend: float = 0.6        # share of samples blended with another clip of the batch
    vae_smooth_noise: float = 0.3        # share of samples with Gaussian latent noise (std up to 0.2 x latent std)
    vae_smooth_buckets: tuple = ((1, 64, 64, 32, 8, 3), (5, 64, 64, 32, 4, 2), (17, 64, 64, 32, 2, 1.5),
                                 (33, 64, 64, 32, 2, 1.5), (65, 64, 64, 32, 2, 0.5))
    # buckets: (frames, height, width, crop, batch, weight): frames > 1 are windows of a 33-frame render,
    # crop > 0 trains on a random crop x crop window (the VAE is convolutional; crops cut the cost 4x)
    vae_buckets: tuple = ((1, 64, 64, 32, 8, 3), (1, 128, 128, 32, 4, 0.5), (1, 64, 64, 0, 2, 0.5),
                          (5, 64, 64, 32, 2, 2), (9, 64, 64, 32, 1, 1.5), (17, 64, 64, 32, 1, 1))
    # then the whole VAE (encoder too) on windows as long as the clips it serves, frame-local (below; session 5,
    # run 5: a far better VAE -- 33-frame clips 24.7 -> 28.8 dB, truth through it 0.70 -> 0.86 -- but the run-3 DiT
    # recipe on it scored lower, 0.20 vs 0.27 on clips, so both stay off in the preset that made the shipped model).
    # Trained on <= 17 frames with full 3-tap convs, the causal VAE never settled: a *still* red square's latent
    # kept changing for ~8 latent frames into a steady state no training window reached, the square vanished
    # after frame ~32 and colours flipped (blue -> purple); per-frame PSNR fell from 31.9 dB (frame 0) to 21.4
    # (frame 32). The decoder-only long phase could not repair latents the encoder had spoilt, and 1 200 steps of
    # this phase with full taps barely moved it. The phase starts from vae_temporal_base (a finished VAE-phase
    # checkpoint of this workdir) and recomputes the latent statistics; the DiT stages and the decoder phases
    # then use it instead of vae.pt
    vae_temporal_steps: int = 0
    # frame-local VAE: every causal conv except the 2x time resamplers sees only its own frame (the weights of
    # its past taps are zero and stay zero; the layout, the checkpoint format and diffusers are unchanged). Time
    # is mixed only where it is compressed, so the receptive field is ~2 latent frames and short training
    # windows cover every state the encoder and decoder reach; with full 3-tap convs the receptive field was
    # 6-8 latent frames and the VAE broke where no training window reached (objects vanished, colours flipped
    # after frame ~24). Applied when a phase starts, so a phase can convert a VAE trained without it
    vae_frame_local: bool = False
    # the decoder phases may give the decoder its time taps back (past taps start at zero and learn; the encoder,
    # frozen, stays frame-local so the latents keep their meaning): a decoder that looks back can smooth a
    # DiT's frame-to-frame inconsistencies, which the frame-local one shows as flicker. Measured (run 5, 2 000
    # long-window steps, same DiT): clips 0.209 vs 0.203, images 0.321 vs 0.340 (24 prompts): no gain
    vae_decoder_frame_local: bool = True
    # decoder phases: share of clip samples rendered at their own length instead of cut from a >= 33-frame
    # render (vae_batch). Session 16: 17-frame clips (a whole motion in 1 s) reconstructed at 26.8 dB against
    # 29.1 for 33 frames; no phase of the shipped VAE saw their speed. 0 keeps earlier runs' data unchanged
    vae_own_render_share: float = 0.0
    # decoder phases: > 0 trains the encoder too, anchored to the base encoder's latents with this weight on
    # the mean square drift in units of the latent std (the latent statistics stay the base's), so every latent
    # a DiT learnt keeps its meaning. Session 18 asked whether the frozen encoder bounds clip reconstruction
    # (17-frame clips 26.8 dB, frames 1-4 worst). 0 = encoder frozen (as shipped).
    # Measured (benchmarks/results/vae_encoder_anchor.md): at 1.0, lr 2e-5, 3 000 steps, +0.1 dB over the decoder
    # alone (clips +0.2-0.5 dB in all), adherence unchanged: the 1.47 M VAE has no headroom left, so it stays off
    vae_encoder_anchor: float = 0.0
    # the decoder's width (None: vae_base_dim). A decoder phase whose base has another decoder width keeps the base's
    # encoder (so its latents) and starts a fresh decoder of this width: does a wider decoder find more in the same
    # latents? Session 18: fresh decoders of width 12 and 16 learnt step for step alike (6 000 steps, mean held-out
    # PSNR 27.85 / 27.84 dB; benchmarks/results/vae_encoder_anchor.md): no
    vae_decoder_base_dim: Optional[int] = None
    vae_temporal_lr: float = 2e-4
    vae_temporal_base: str = "vae.pt"
    vae_temporal_buckets: tuple = ((65, 64, 64, 32, 1, 2), (33, 64, 64, 32, 2, 2), (17, 64, 64, 32, 2, 1),
                                   (5, 64, 64, 32, 2, 0.5), (1, 64, 64, 32, 8, 1), (1, 128, 128, 32, 4, 0.3))
    # DiT
    dit_dim: int = 128
    dit_heads: int = 2
    dit_layers: int = 4
    dit_ffn: int = 384
    dit_freq_dim: int = 128
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 2
    text_ff: int = 256
    max_text_len: int = 32
    dit_steps: int = 14000               # run 3 (run 2: 10 000)
    dit_lr: float = 3e-4
    # spatial patch of the DiT in latent pixels (Wan: 2, i.e. 16x16-pixel tokens through the 8x VAE: a 64x64 frame
    # is 4x4 tokens and an object of ~12 pixels sits inside one; 1 gives 8x8 tokens per frame, 4x the sequence)
    dit_patch: int = 2
    dit_tokens_per_batch: int = 1152     # batch = tokens_per_batch // tokens of the bucket (at most dit_max_batch)
    # shares of 1 / 2 / 3-object prompts among the DiT's training clips; () keeps the grammar's sampler (40 / 35 /
    # 25 % drawn, ~45 / 34 / 21 % after held-out triples are redrawn, which hits 3-object scenes most). Session 16:
    # the shipped DiT scores 0.71 / 0.47 / 0.34 on 1 / 2 / 3-object held-out clips (a third of the eval each)
    dit_object_probs: tuple = ()
    # False keeps the text encoder as --dit-init gave it while the DiT trains: a continued DiT then still matches
    # the shipped causal DiT, which runs on the default model's text encoder (the causal stage need not be redone)
    dit_train_text: bool = True
    # Weight of the text encoder's binding loss (0: off): every word of an object phrase ("a red circle moves
    # left") must name, through the tied input embeddings, its object's colour, shape and motion words. Session 21
    # found the jointly trained encoder barely binds (a linear probe reads the colour of a held-out object from its
    # shape word 67 / 48 / 17 % of the time in 1 / 2 / 3-object prompts, chance 12.5 %) while the DiT's
    # cross-attention sees the words' states without their order: which colour goes with which shape is lost
    # before the DiT sees it. No parameters are added; the exported text encoder is unchanged in form.
    text_bind_weight: float = 0.0
    dit_max_batch: int = 32
    cfg_dropout: float = 0.1
    ema_decay: float = 0.998
    # the same lesson as the VAE's: objects are ~25 % of the latent grid; with a plain mean loss the DiT (run 2)
    # drew the background and left objects as stray blobs of random colours (single-object images: presence
    # 0.08). Latent voxels under (or next to) an object weigh 1 + dit_fg_weight in the flow-matching loss.
    # Image ablation (2000 steps): weight 0 / 4 / 12 -> presence 0.28 / 0.70 / 0.88 on training prompts.
    dit_fg_weight: float = 12.0
    # The object weight depends on x0, so it moves the loss's optimum from E[x0 | x_s] to a mean tilted
    # toward "object here": where the layout is still uncertain (high noise) the DiT predicts object colour
    # in many places at once, and samples grow several objects and stray blobs (session 6: a DiT trained on
    # ONE prompt drew 3-6 red circles per frame). Scaling the extra weight by (1 - s) ** power fades it out at
    # high noise, where the posterior is broad and the tilt is large, and keeps it near the data, where
    # x_s pins x0 down and the tilt vanishes. 0: the same weight at every noise level (runs <= 6). Measured on one
    # prompt with power 2: far fewer stray blobs at 3 000 steps (clean 0.74 -> 0.95, adherence 0.36 -> 0.38) but
    # worse once trained (7 800 steps: 0.55 vs 0.77; motion 0.60 vs 0.95), so it stays off
    dit_fg_noise_power: float = 0.0
    # training noise levels s ~ sigmoid(N(dit_t_mean, 1)) (logit-normal; 0 as in runs <= 6). Objects are a small
    # signal in the normalised latent (std ~0.16 against noise of std 1 on a one-prompt set, session 6), so they
    # emerge only below s ~ 0.2, where logit-normal(0, 1) puts 8 % of the training samples; a negative mean
    # trains more where objects are placed (run 3 measured a shift toward *high* noise as harmful: 0.27 vs 0.47).
    # One prompt, 3 000 steps: -1 / -1.5 -> adherence 0.42 / 0.35 vs 0.36 at 0 (16 clips); unchecked on the grammar
    dit_t_mean: float = 0.0
    # noise-level bands the DiT trains in, [lo, hi] pairs of s (e.g. [[0, 0.3], [0.85, 1]]: an expert for the ends of
    # the schedule, session 26's expert mix, tools/expert_mix.py); a draw outside every band is drawn again from the
    # same logit-normal. (): every level
    dit_s_bands: tuple = ()
    # weight of a loss term on the x0 error's frame-to-frame change (0: off, as in runs <= 5)
    dit_temporal_weight: float = 0.0
    # share of clip samples trained with an independent noise level per latent frame (diffusion forcing on the
    # bidirectional DiT; each frame clean -- timestep 0, no loss -- with probability dit_frame_clean_prob), so the
    # motion word says where the object goes from the frames that are clearer. Session 9 found the DiT ignoring the
    # direction word (left vs right) and proposed this; session 10 measured that it is not needed and costs at equal
    # steps: on four direction prompts (17x64x64, patch 1, 7 400-8 200 steps) one level per clip learnt the direction
    # (samples: motion 0.81, adherence 0.58), all clips per-frame learnt it too but drew objects worse (motion 0.51,
    # presence 0.55, adherence 0.32). The direction word is learnt late (not at 2 400 steps), not never. 0: off
    dit_frame_noise_prob: float = 0.0
    dit_frame_clean_prob: float = 0.3
    # per-frame samples get ONE clean frame (the anchor, anywhere in the clip) and the clip's level s on the rest,
    # instead of the independent levels above. Two clean frames show the track's velocity, which makes the motion
    # word redundant; from one anchor only the word says which way the object went before it and goes after it.
    # Unmeasured (an image-to-video style conditioning; off)
    dit_frame_anchor: bool = False
    # a diagnostic: train the DiT stage on these training prompts only (empty: the whole training split), to ask
    # whether the DiT can learn a few prompts' clips at all or fails only when spread over the grammar
    dit_prompts: tuple = ()
    # (frames, height, width, weight): weight of the bucket in training and in new data
    dit_buckets: tuple = ((1, 64, 64, 2), (1, 96, 64, 0.5), (1, 64, 96, 0.5), (1, 64, 128, 0.3),
                          (1, 128, 64, 0.3), (1, 128, 128, 0.3), (17, 64, 64, 2), (17, 96, 64, 0.5),
                          (17, 64, 96, 0.5), (33, 64, 64, 4), (33, 96, 64, 0.7), (33, 64, 96, 0.7),
                          (33, 64, 128, 0.3), (33, 128, 64, 0.3), (33, 128, 128, 0.3))
    cache_per_bucket: int = 600          # ring buffer size per bucket
    cache_warm: int = 12                 # clips encoded per bucket before DiT training starts (x weight)
    new_clips_per_step: float = 0.5      # newly rendered + encoded clips per DiT step (fractional: on average)
    # 0: each new clip is rendered and VAE-encoded alone, inside the training step (the CPU recipe, runs <= 6).
    # N > 0: new clips come N at a time (one bucket), rendered by worker processes (--render-workers) while the
    # loop trains and VAE-encoded in one call: on a GPU, where a step of this small DiT takes milliseconds, the
    # one-at-a-time path spends most of the step rendering and launching VAE kernels. The stream of clips
    # depends on N, not on the number of workers (a batch joins the cache a fixed number of steps after it
    # was drawn)
    data_batch: int = 0
    # causal variant (long clips, vidrt.longclip): fine-tuned from the DiT's EMA with diffusion forcing
    causal_steps: int = 1500
    causal_lr: float = 1e-4
    causal_chunk: int = 3                # latent frames per chunk (num_frame_per_block)
    causal_seconds: tuple = (2, 5, 10, 20)   # lengths of the renders that training windows are cut from
    causal_max_gap: int = 240            # most latent frames between the sink chunk and the rest (60 s)
    causal_clean_prob: float = 0.5       # chance a chunk is clean context (timestep 0, no loss)
    causal_batch: int = 8
    causal_cache: int = 240              # long clips kept (latents); each gives many windows
    causal_warm: int = 48                # long clips encoded before training starts
    causal_new_per_step: float = 0.1     # newly rendered long clips per step (on average)
    # previous chunks between the sink and the current chunk in a training window, one drawn per batch: (1,) is
    # [sink | previous | current] (sessions <= 15); (1, 2, 3) also trains the wider KV windows a stream may use.
    # Context chunks attend to the sink and themselves (the "sinks" commit context the export declares)
    causal_context_chunks: tuple = (1,)
    # the causal DiT ships without a text encoder of its own (it runs on the default model's: the 40 MB budget has
    # no room for a second), yet this stage fine-tunes the text encoder beside it (the shipped recipe). False keeps
    # it frozen, so the DiT trains against the encoder it runs with. Session 16's one run with it (and
    # causal_context_chunks [1, 2, 3], 564 steps instead of 840) streamed -0.037 +- 0.031 below the shipped causal DiT
    # (8 prompts x 30 s): not better, so the default stays the shipped recipe
    causal_train_text: bool = True
    # error recycling (exposure bias; cf. Stable Video Infinity's error-recycling fine-tune): the share of samples
    # whose clean context chunks (sink and previous, timestep 0 as the stream commits them) are replaced by the
    # DiT's own one-step estimate of them from noise level s ~ U(causal_recycle_sigma), computed without gradient
    # by the model in training. A stream's past is the model's own imperfect output; trained only on true
    # context, the DiT learns to continue errors, not to correct them. The current chunk's target stays the truth.
    # Session 20 (0.5, 750 steps, benchmarks/results/causal_recycle.md): no clear gain over the same recipe without
    # it (8 prompts x 60 s mean -0.010 +- 0.035; 16 x 30 s +0.045 +- 0.026), so it stays off
    causal_recycle: float = 0.0
    causal_recycle_sigma: tuple = (0.2, 0.8)
    # generation defaults written to vidrt.json
    gen_height: int = 64
    gen_width: int = 64
    gen_frames: int = 33
    gen_steps: int = 20
    gen_guidance: float = 3.0            # guidance 1 / 3 gave the same adherence, 5 less (docs/default_model.md)
    gen_shift: float = 2.0
    # dtype of the exported DiTs' safetensors (the default and the causal one): "fp16" halves them (a 7.3 M DiT
    # pair is 58 MB in fp32, over the 40 MB package budget); loaders upcast to the precision they run in
    export_dit_dtype: str = "fp32"
    # the causal DiT's: "" = export_dit_dtype; "int8" stores its block linears as int8 rows with one scale each
    # (vidrt.quant.storage, vidrt-only, read back as fp32): 8.77 MB for the 8-layer 256-dim DiT against 16.0 in fp16,
    # room for a deeper pair in the 40 MB budget
    export_causal_dtype: str = ""
    # the VAE's and the text encoder's safetensors: "fp16" saves 2.9 and 0.7 MB on the shipped sizes (the VAE's
    # decodes move by <= 1 pixel level, benchmarks/results/storage.md); loaders upcast
    export_vae_dtype: str = "fp32"
    export_text_dtype: str = "fp32"
    # eval
    eval_vae_prompts: int = 8
    stats_clips: int = 48                # clips measured for the latent mean / std
    eval_prompts: int = 72
    checkpoint_minutes: float = 5.0
    log_every: int = 50


PRESETS = {
    # run 3's recipe, for a CPU (the model shipped until session 7)
    "full": Preset("full"),
    # the shipped model (session 7): the frame-local VAE recipe of runs 5-6 (on the CPU), then a 3x wider DiT
    # trained with 8x run 3's tokens per batch on one GPU (~11 min on an H200 beside a second run; the new clips
    # rendered by worker processes): tools/train_on_gpu.sh, benchmarks/results/gpu_training_h200.md. Its VAE
    # export uses the VAE's own decoder (no blend phase)
    "gpu": Preset(
        "gpu", vae_frame_local=True, vae_temporal_steps=3000, vae_long_steps=0,
        dit_dim=192, dit_heads=3, dit_layers=6, dit_ffn=576, dit_lr=5e-4, dit_steps=11916,
        dit_tokens_per_batch=9216, dit_max_batch=256, data_batch=16, new_clips_per_step=2.0, cache_per_bucket=2000,
        cache_warm=100, vae_decoder_steps=0),
    "smoke": Preset(
        "smoke", vae_base_dim=4, vae_z_dim=4, vae_dim_mult=(1, 1, 2, 2), vae_steps=6, vae_lr=1e-3,
        vae_buckets=((1, 32, 32, 0, 2, 1), (5, 64, 64, 32, 1, 1)),
        dit_dim=32, dit_heads=2, dit_layers=1, dit_ffn=64, dit_freq_dim=32, text_dim=32, text_layers=1,
        text_heads=2, text_ff=32, dit_steps=6, dit_tokens_per_batch=64, dit_temporal_weight=0.5,
        dit_fg_noise_power=2.0, dit_t_mean=-0.5, dit_buckets=((1, 32, 32, 1), (5, 32, 32, 1), (1, 32, 48, 1)),
        cache_per_bucket=8, cache_warm=2,
        gen_height=32, gen_width=32, gen_frames=5, gen_steps=2, eval_vae_prompts=2, stats_clips=2, eval_prompts=2,
        checkpoint_minutes=0.0, log_every=2, causal_steps=4, causal_chunk=1, causal_seconds=(0.5, 1),
        causal_max_gap=8, causal_batch=2, causal_cache=4, causal_warm=2, vae_decoder_steps=3,
        vae_long_steps=2, vae_long_buckets=((9, 32, 32, 0, 1, 1),), vae_smooth_steps=2, vae_temporal_steps=2,
        vae_frame_local=True, vae_temporal_buckets=((9, 32, 32, 0, 1, 1), (1, 32, 32, 0, 2, 1)),
        vae_smooth_buckets=((1, 32, 32, 0, 2, 1), (5, 32, 32, 0, 2, 1))),
}


# ------------------------------------------------------------------------------------------- data

def render_clip(prompt: str, frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """A world render as (3, T, H, W) float in [-1, 1]."""
    return from_frames(render(prompt, height, width, frames, FPS, seed))


class Renderer:
    """Renders batches of world clips: inline, or in ``workers`` processes that run ahead of the caller
    (``submit`` returns at once, ``result`` waits). Either way the frames are the same."""

    def __init__(self, workers: int = 0):
        self.pool = None
        if workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: the workers must not inherit the parent's CUDA context (fork after CUDA init breaks)
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, jobs: list[tuple[str, int, int, int, int]]) -> list:
        """Jobs of (prompt, frames, height, width, seed) -> handles for ``result``."""
        if self.pool is None:
            return [render(pr, h, w, n, FPS, sd) for pr, n, h, w, sd in jobs]
        return [self.pool.submit(render, pr, h, w, n, FPS, sd) for pr, n, h, w, sd in jobs]

    @staticmethod
    def result(handles: list) -> torch.Tensor:
        """(N, 3, T, H, W) float videos in [-1, 1], in submission order."""
        return torch.stack([from_frames(h if isinstance(h, np.ndarray) else h.result()) for h in handles])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


_TEXT_VARIANTS = ((" moves left", " moves to the left"), (" moves right", " moves to the right"),
                  (" moves up", " moves to the up"), (" moves down", " moves to the down"), (" gray ", " grey "))


def vary_text(prompt: str, rng: np.random.Generator) -> str:
    """Same scene, other accepted wording ('moves to the left', 'grey'), so the tokenizer's words are all seen."""
    for a, b in _TEXT_VARIANTS:
        if a in prompt and rng.random() < 0.15:
            prompt = prompt.replace(a, b)
    return prompt


def vae_batch(buckets: tuple, rng: np.random.Generator, own_render_share: float = 0.0) -> torch.Tensor:
    """One training batch of a randomly drawn bucket. A clip bucket's samples are windows of a
    max(33, frames)-frame render, or (share ``own_render_share``) a render of exactly ``frames`` frames: a
    motion spans its whole shot of >= 1 s, so a 17-frame clip moves twice as fast per frame as a window of a
    33-frame render, and only its own renders show that speed."""
    w = np.array([b[5] for b in buckets], float)
    frames, h, wd, crop, bs, _ = buckets[int(rng.choice(len(buckets), p=w / w.sum()))]
    clips = []
    for _ in range(bs):
        prompt = sample_train_prompt(rng)
        seed = int(rng.integers(2**31))
        if frames == 1:
            # a frame from anywhere in a clip, so objects in mid-motion (grown, moved) are seen too
            full = render_clip(prompt, 33, h, wd, seed)
            k = int(rng.integers(33))
            clips.append(full[:, k:k + 1])
        else:
            n = max(33, frames)
            if own_render_share > 0 and rng.random() < own_render_share:
                n = frames
            full = render_clip(prompt, n, h, wd, seed)
            start = int(rng.integers(0, n - frames + 1))
            clips.append(full[:, start:start + frames])
        if crop:
            y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, wd - crop + 1))
            clips[-1] = clips[-1][:, :, y0:y0 + crop, x0:x0 + crop]
    return torch.stack(clips)


def pixel_weights(x: torch.Tensor, fg_weight: float) -> torch.Tensor:
    """(B, 1, T, H, W) loss weights: 1 on the background, 1 + fg_weight on objects and a 2-pixel rim around
    them (edges are where reconstructions blur). The background of a frame is its per-channel median colour."""
    if fg_weight <= 0:
        return torch.ones_like(x[:, :1])
    bg = x.flatten(3).median(dim=3).values[..., None, None]
    fg = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.05).float()
    b, _, t, h, w = fg.shape
    fg = F.max_pool2d(fg.transpose(1, 2).reshape(b * t, 1, h, w), 5, stride=1, padding=2)
    return 1.0 + fg_weight * fg.reshape(b, t, 1, h, w).transpose(1, 2)


def latent_object_mask(x: torch.Tensor, latent_shape: tuple) -> torch.Tensor:
    """(B, 1, t, h, w) 0/1 mask on the latent grid of video ``x`` (B, 3, T, H, W): 1 where any pixel of the
    latent voxel's footprint (frame 0 alone, then groups of 4 frames; 8x8 pixels) is an object or its rim
    (``pixel_weights``)."""
    fg = pixel_weights(x, 1.0) - 1.0
    t, h, w = latent_shape[-3:]
    b, _, n, hh, ww = fg.shape
    if n != 1 + 4 * (t - 1):
        raise ValueError(f"{n} frames do not make {t} latent frames (1 + 4k frames)")
    fg = torch.cat([fg[:, :, :1], fg[:, :, 1:].reshape(b, 1, t - 1, 4, hh, ww).amax(dim=3)], dim=2)
    return F.max_pool3d(fg, (1, hh // h, ww // w))


def latent_weights(x: torch.Tensor, latent_shape: tuple, fg_weight: float) -> torch.Tensor:
    """Flow-matching loss weights on the latent grid: 1 + fg_weight under objects, 1 elsewhere."""
    return 1.0 + fg_weight * latent_object_mask(x, latent_shape)


def fade_weights(weight: torch.Tensor, s: torch.Tensor, power: float) -> torch.Tensor:
    """Object loss weights faded with the noise level: 1 + (weight - 1) (1 - s) ** power (``s`` broadcasts
    against ``weight``; power 0: unchanged)."""
    return weight if power == 0 else 1.0 + (weight - 1.0) * (1.0 - s).pow(power)


def frame_noise_levels(s: torch.Tensor, frames: int, frame_tokens: int, p: "Preset",
                       gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-latent-frame noise levels for ``dit_frame_noise_prob`` of the samples (the others keep their one level
    ``s``): independent logit-normal levels, each frame clean (0) with ``dit_frame_clean_prob``, at least one frame
    noisy; with ``dit_frame_anchor`` one random frame clean and the clip's level ``s`` on all the others. Returns
    the levels shaped (B, 1, T, 1, 1) and the DiT's per-token timesteps (B, T x frame_tokens)."""
    b = s.shape[0]
    if p.dit_frame_anchor:
        per = s.detach().cpu()[:, None].repeat(1, frames)
        per[torch.arange(b), torch.randint(frames, (b,), generator=gen)] = 0.0
        per = per.to(s.device)
    else:
        per = torch.sigmoid(p.dit_t_mean + torch.randn(b, frames, generator=gen))
        clean = torch.rand(b, frames, generator=gen) < p.dit_frame_clean_prob
        clean[torch.arange(b), torch.randint(frames, (b,), generator=gen)] = False
        per = torch.where(clean, torch.zeros_like(per), per).to(s.device)
    use = (torch.rand(b, generator=gen) < p.dit_frame_noise_prob).to(s.device)
    levels = torch.where(use[:, None], per, s[:, None].expand(b, frames))
    return levels.view(b, 1, frames, 1, 1), (levels * 1000).repeat_interleave(frame_tokens, dim=1)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error weighted per voxel, normalised by the mean weight (so the scale matches plain MSE)."""
    weight = weight.expand_as(target)
    return ((pred.float() - target.float()).pow(2) * weight).sum() / weight.sum().clamp_min(1e-8)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) between videos in [-1, 1], measured on their uint8 frames."""
    qa = ((a.clamp(-1, 1) + 1) * 127.5).round()
    qb = ((b.clamp(-1, 1) + 1) * 127.5).round()
    mse = float((qa - qb).double().pow(2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ------------------------------------------------------------------------------------------- models

def make_vae(p: Preset) -> WanVAE:
    cfg = VAEConfig(base_dim=p.vae_base_dim, z_dim=p.vae_z_dim, dim_mult=p.vae_dim_mult, num_res_blocks=1,
                    temperal_downsample=(False, True, True)[: len(p.vae_dim_mult) - 1],
                    latents_mean=(0.0,) * p.vae_z_dim, latents_std=(1.0,) * p.vae_z_dim,
                    decoder_base_dim=p.vae_decoder_base_dim)
    vae = WanVAE(cfg)
    init_vae_(vae)
    return vae


def load_vae_weights(vae: WanVAE, state: dict) -> bool:
    """Load a VAE state dict; when only the decoder's shapes differ (``vae_decoder_base_dim``), load everything
    but the decoder, which keeps its fresh initialisation. Returns whether the decoder was loaded."""
    own = vae.state_dict()
    if all(k in state and state[k].shape == v.shape for k, v in own.items() if k.startswith("decoder.")):
        vae.load_state_dict(state)
        return True
    missing, unexpected = vae.load_state_dict({k: v for k, v in state.items() if not k.startswith("decoder.")},
                                              strict=False)
    if unexpected or any(not k.startswith("decoder.") for k in missing):
        raise RuntimeError(f"VAE weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    logger.info("VAE: no stored decoder of this width; encoder loaded, decoder of width %s starts fresh",
                vae.config.decoder_base_dim or vae.config.base_dim)
    return False


def frame_local_(vae: torch.nn.Module) -> int:
    """Zero the past taps of every causal conv but the time resamplers' and keep them zero in training
    (``Preset.vae_frame_local``); returns how many convs were restricted."""
    from vidrt.models.vae import frame_local_convs

    convs = frame_local_convs(vae)
    for m in convs:
        mask = torch.zeros_like(m.weight[:1, :1])
        mask[:, :, -1] = 1.0
        with torch.no_grad():
            m.weight.mul_(mask)
        if m.weight.requires_grad:
            m.weight.register_hook(lambda g, mask=mask: g * mask)
    return len(convs)


def init_vae_(vae: WanVAE) -> None:
    """Start every residual branch at zero (each block = its shortcut) and the encoder's input conv with a
    large bias. The Wan VAE normalises features with RMSNorm, which keeps only their direction: in the flat
    regions that make up most of a world frame, a colour survives the encoder only as the direction of
    conv_in(colour) = W colour + b. With random residual branches on top, gray and white backgrounds end up
    on one latent and training stalls at ~12 dB; with identity blocks and a bias as large as the colour
    term and no other biases, every palette colour keeps its own direction from the first step."""
    from vidrt.models.vae import AttentionBlock, ResidualBlock

    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, ResidualBlock):
                m.conv2.weight.zero_()
            if isinstance(m, AttentionBlock):  # a random mid-block attention adds one global vector everywhere
                m.proj.weight.zero_()           # and drowns the spatial detail: objects never got learned
            if isinstance(m, torch.nn.modules.conv._ConvNd) and m.bias is not None:
                m.bias.zero_()  # shared offsets would pile up and pull every flat colour to one direction
        conv_in = vae.encoder.conv_in
        flat = conv_in.weight.sum(dim=(2, 3, 4))          # response to a flat colour: (C, 3)
        conv_in.bias.copy_(torch.randn_like(conv_in.bias) * flat.norm(dim=1) * 1.0)


def make_dit(p: Preset) -> WanDiT:
    cfg = DiTConfig(num_attention_heads=p.dit_heads, attention_head_dim=p.dit_dim // p.dit_heads,
                    in_channels=p.vae_z_dim, out_channels=p.vae_z_dim, text_dim=p.text_dim, freq_dim=p.dit_freq_dim,
                    ffn_dim=p.dit_ffn, num_layers=p.dit_layers, cross_attn_norm=True,
                    qk_norm="rms_norm_across_heads", rope_max_seq_len=1024, patch_size=(1, p.dit_patch, p.dit_patch))
    return WanDiT(cfg)


def resize_patch(state: dict, dit: WanDiT) -> dict:
    """A DiT state trained at one spatial patch size, made to start a DiT of another (--dit-init across
    ``dit_patch``): the patch embedding of a ph x pw patch becomes the sum of its kernel over the patch (a
    uniform patch embeds as before) and the output projection the mean over its sub-positions. The blocks
    carry over unchanged; RoPE's unit of distance becomes the new token pitch, which fine-tuning relearns."""
    w_in = state.get("patch_embedding.weight")
    want = dit.patch_embedding.weight.shape
    if w_in is None or w_in.shape == want:
        return state
    (d, c, pt, ph, pw), (_, _, qt, qh, qw) = w_in.shape, want
    if pt != qt or ph % qh or pw % qw:
        return state   # load_state_dict names the mismatch
    fh, fw = ph // qh, pw // qw
    state = dict(state)
    state["patch_embedding.weight"] = w_in.reshape(d, c, pt, qh, fh, qw, fw).sum((4, 6))
    w_out, b_out = state["proj_out.weight"], state["proj_out.bias"]       # rows ordered (pt, ph, pw, c)
    c_out = w_out.shape[0] // (pt * ph * pw)
    state["proj_out.weight"] = w_out.reshape(pt, qh, fh, qw, fw, c_out, -1).mean((2, 4)).reshape(-1, w_out.shape[1])
    state["proj_out.bias"] = b_out.reshape(pt, qh, fh, qw, fw, c_out).mean((2, 4)).reshape(-1)
    return state


def grow_depth(state: dict, dit: WanDiT) -> dict:
    """A DiT state with fewer blocks than ``dit``, made to start it (--dit-init into a deeper ``dit_layers``): the
    old blocks keep their order, spread evenly over the new depth, and each added block starts as the identity
    (its self-attention, cross-attention and feed-forward output projections zero, the rest freshly initialised).
    The grown DiT computes what the state did; training then gives the added blocks their say (the zero output
    projections get gradients from the first step, the rest from the second)."""
    old = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    new = len(dit.blocks)
    if old == 0 or old >= new:
        return state   # nothing to grow (fewer blocks in the DiT: load_state_dict names the mismatch)
    at = [round(i * (new - 1) / (old - 1)) for i in range(old)] if old > 1 else [0]
    logger.info("DiT grown from %d to %d blocks (the old ones at %s; the added ones start as the identity)",
                old, new, at)
    fresh = dit.state_dict()
    grown = {k: v for k, v in state.items() if not k.startswith("blocks.")}
    for j in range(new):
        prefix = f"blocks.{j}."
        if j in at:
            src = f"blocks.{at.index(j)}."
            grown.update({prefix + k[len(src):]: v for k, v in state.items() if k.startswith(src)})
            continue
        for k, v in fresh.items():
            if k.startswith(prefix):
                zero = k[len(prefix):].rsplit(".", 1)[0] in ("attn1.to_out.0", "attn2.to_out.0", "ffn.net.2")
                grown[k] = torch.zeros_like(v) if zero else v.clone()
    return grown


def make_tokenizer(p: Preset):
    return build_word_tokenizer(vocabulary(), model_max_length=p.max_text_len)


def make_text_encoder(p: Preset, vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=vocab_size, d_model=p.text_dim, d_kv=p.text_dim // p.text_heads, d_ff=p.text_ff,
                     num_layers=p.text_layers, num_heads=p.text_heads, relative_attention_num_buckets=16,
                     relative_attention_max_distance=32, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                     pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return UMT5EncoderModel(cfg)


def binding_targets(prompt: str) -> list[tuple[int, tuple[str, str, str]]]:
    """(word position, its object's colour, shape and motion key word) for each word of each object phrase of a
    prompt (the background phrase and 'and' belong to none); the motion's key word is its last ('left',
    'bounces', 'still')."""
    words = clean_prompt(prompt).split()
    objects = iter(parse(prompt).objects) if words else iter(())
    out, current = [], None
    for i, w in enumerate(words):
        if w in ARTICLES and (i == 0 or words[i - 1] == "and"):   # an object phrase starts
            o = next(objects, None)
            current = None if o is None else (o.color, o.shape, o.motion.split()[-1])
        elif w in ("and", "on"):
            current = None
        if current is not None:
            out.append((i, current))
    return out


def text_binding_loss(tokenizer, model, prompts: list[str], hidden: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each object word's hidden state, read through the tied input embeddings, against
    its object's colour, shape and motion words (a third each): ``text_bind_weight``'s loss. ``hidden``:
    ``encode_text``'s output for ``prompts``."""
    emb = model.get_input_embeddings().weight
    rows, cols, target = [], [], []
    for b, pr in enumerate(prompts):
        for pos, words in binding_targets(pr):
            if pos < hidden.shape[1]:
                rows.append(b), cols.append(pos), target.append(tokenizer.convert_tokens_to_ids(list(words)))
    if not rows:
        return hidden.sum() * 0
    logits = hidden[rows, cols].float() @ emb.float().T / emb.shape[1] ** 0.5
    soft = torch.zeros_like(logits).scatter_(1, torch.tensor(target, device=logits.device), 1 / 3)
    return -(soft * logits.log_softmax(-1)).sum(-1).mean()


def encode_text(tokenizer, model, prompts: list[str], max_len: int) -> torch.Tensor:
    """Prompts -> (B, max_len, d) hidden states zero-padded after each prompt, as vidrt's TextEncoder does
    (but with gradients)."""
    prompts = [clean_prompt(x) for x in prompts]
    tok = tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True, add_special_tokens=True,
                    return_attention_mask=True, return_tensors="pt")
    dev = next(model.parameters()).device
    ids, mask = tok.input_ids.to(dev), tok.attention_mask.to(dev)
    hidden = model(ids, mask).last_hidden_state
    return hidden * mask[..., None].to(hidden.dtype)


def vae_moments(vae: WanVAE, video: torch.Tensor) -> LatentDistribution:
    """Encoder pass with gradients (one shot: equal to the chunked inference encode)."""
    return LatentDistribution.from_moments(vae.quant_conv(vae.encoder(video, TemporalCache())))


def vae_decode_train(vae: WanVAE, z: torch.Tensor) -> torch.Tensor:
    """Decoder pass with gradients (unclamped; equal to the streamed inference decode before clamping)."""
    return vae.decoder(vae.post_quant_conv(z), TemporalCache())


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), [x.detach() for x in model.parameters()], 1.0 - decay)


def lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


# -------------------------------------------------------------------------------------- checkpoints

class Checkpoints:
    """Atomic torch.save of the run state under the workdir; ``latest`` finds the newest one."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, state: dict) -> None:
        tmp = self.dir / f".{name}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.dir / name)
        logger.info("checkpoint %s saved", self.dir / name)

    def load(self, name: str) -> Optional[dict]:
        path = self.dir / name
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=False)


def rng_state(rng: np.random.Generator) -> dict:
    return {"np": rng.bit_generator.state, "torch": torch.get_rng_state(), "py": random.getstate()}


def set_rng_state(rng: np.random.Generator, s: dict) -> None:
    rng.bit_generator.state = s["np"]
    torch.set_rng_state(s["torch"])
    random.setstate(s["py"])


# --------------------------------------------------------------------------------------- VAE stage

# phase -> (checkpoint, label, rng seed offset); the checkpoint each starts from: phase_base
VAE_PHASES = {"vae": ("vae.pt", "VAE", 0),
              "temporal": ("vae_temporal.pt", "VAE (long windows)", 40),
              "decoder": ("vae_decoder.pt", "VAE decoder", 10),
              "decoder_long": ("vae_decoder_long.pt", "VAE decoder (long)", 20),
              "decoder_smooth": ("vae_decoder_smooth.pt", "VAE decoder (blends)", 30)}


def phase_base(p: Preset, phase: str) -> Optional[str]:
    """The finished checkpoint a VAE phase starts from (None: from scratch). Decoder phases chain: the first
    starts from the encoder's checkpoint, each later one from the phase before it that runs."""
    if phase == "temporal":
        return p.vae_temporal_base
    if phase == "decoder":
        return encoder_checkpoint(p)
    if phase == "decoder_long":
        return VAE_PHASES["decoder"][0]
    if phase == "decoder_smooth":
        return VAE_PHASES["decoder_long" if p.vae_long_steps > 0 else "decoder"][0]
    return None


def train_vae(p: Preset, ck: Checkpoints, seed: int, device: torch.device, max_minutes: Optional[float],
              phase: str = "vae") -> WanVAE:
    """One VAE training phase (see VAE_PHASES): the VAE itself, its long-window continuation, or a decoder
    fine-tune.

    ``temporal`` continues the whole VAE on long windows (``vae_temporal_buckets``) from ``vae_temporal_base``
    and recomputes the latent statistics. Decoder phases start from the previous phase's finished checkpoint
    (the first from the encoder's, ``encoder_checkpoint``) with the encoder frozen: every latent the DiT trains
    on stays the same, so they run beside the DiT stage (``--stage decoder``) and the export takes the newest
    decoder. ``decoder_long`` trains on long windows (``vae_long_buckets``). With ``vae_encoder_anchor`` > 0 the
    decoder phases train the encoder too, held near the base encoder's latents (statistics kept)."""
    name, what, seed_offset = VAE_PHASES[phase]
    base_name = phase_base(p, phase)
    decoder_only = phase.startswith("decoder")
    total = {"vae": p.vae_steps, "temporal": p.vae_temporal_steps, "decoder": p.vae_decoder_steps,
             "decoder_long": p.vae_long_steps, "decoder_smooth": p.vae_smooth_steps}[phase]
    buckets = {"temporal": p.vae_temporal_buckets, "decoder_long": p.vae_long_buckets,
               "decoder_smooth": p.vae_smooth_buckets}.get(phase, p.vae_buckets)
    base_lr = p.vae_temporal_lr if phase == "temporal" else p.vae_lr
    anchored = decoder_only and p.vae_encoder_anchor > 0
    torch.manual_seed(seed)
    vae = make_vae(p).to(device)
    stats, anchor = None, None
    if base_name is not None:
        base = ck.load(base_name)
        if base is None or not base.get("done"):
            base = ck.load(name)  # resuming or finished: the phase's own checkpoint stands in for its base
        if base is None:
            raise SystemExit(f"{what}: needs a finished earlier stage in {ck.dir} ({base_name} with done=True)")
        load_vae_weights(vae, base["model"])
        if decoder_only:  # the encoder, hence the latents and their statistics, stay those of the base
            stats = base["latent_stats"]
            if anchored:  # ... or near them: a frozen copy of the base encoder gives the anchor latents
                anchor = make_vae(p).to(device)
                load_vae_weights(anchor, base["model"])
                anchor.eval().requires_grad_(False)
            else:
                vae.encoder.requires_grad_(False), vae.quant_conv.requires_grad_(False)
    if p.vae_frame_local:
        part = vae if p.vae_decoder_frame_local or not decoder_only else vae.encoder
        logger.info("%s: frame-local convs (%d restricted to their own frame)", what, frame_local_(part))
        if anchor is not None:
            frame_local_(anchor)
    params = [x for x in vae.parameters() if x.requires_grad]
    opt = torch.optim.AdamW(params, lr=base_lr, betas=(0.9, 0.999), weight_decay=0.0)
    rng = np.random.default_rng(seed + seed_offset)
    step = 0
    state = ck.load(name)
    if state is not None:
        load_vae_weights(vae, state["model"])
        stats = state.get("latent_stats", stats)
        if state.get("done"):
            vae.config = dataclasses.replace(vae.config, **stats)
            logger.info("%s: trained (step %d), loaded from %s", what, state["step"], ck.dir / name)
            return vae.eval().requires_grad_(False)
        opt.load_state_dict(state["opt"])
        set_rng_state(rng, state["rng"])
        step = state["step"]
        logger.info("%s: resuming at step %d", what, step)
    n_params = sum(x.numel() for x in params)
    logger.info("%s: %s, %.2fM trained parameters, %d steps", what, vae.config, n_params / 1e6, total)
    t_start, t_ckpt = time.time(), time.time()
    elapsed0 = state.get("elapsed", 0.0) if state else 0.0
    run = {"l1": 0.0, "mse": 0.0, "kl": 0.0, "drift": 0.0, "n": 0}
    if anchor is not None:
        lat_std = torch.tensor(stats["latents_std"], device=device).view(1, -1, 1, 1, 1)

    def snapshot(done: bool, extra: Optional[dict] = None) -> dict:
        s = {"model": vae.state_dict(), "opt": opt.state_dict(), "rng": rng_state(rng), "step": step, "done": done,
             "elapsed": elapsed0 + time.time() - t_start, "preset": dataclasses.asdict(p)}
        if stats is not None:
            s["latent_stats"] = stats
        s.update(extra or {})
        return s

    bar = tqdm(total=total, initial=step, desc=name.removesuffix(".pt"), unit="step",
               mininterval=10)
    vae.train()
    while step < total:
        if max_minutes is not None and (elapsed0 + time.time() - t_start) / 60 > max_minutes:
            logger.warning("%s: time budget of %.0f min reached at step %d of %d; moving on", what, max_minutes,
                           step, total)
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, base_lr, warmup=50)
        x = vae_batch(buckets, rng, p.vae_own_render_share if decoder_only else 0.0).to(device)
        with torch.set_grad_enabled(not decoder_only or anchored):
            dist = vae_moments(vae, x)
        # decode the mean (the DiT trains on and samples the mode): sampling z from the initial std ~ 1 would
        # bury the signal in noise for thousands of steps; the small KL keeps the latent scale bounded
        z = dist.mean
        if phase == "decoder_smooth":
            z, x = blend_latents(z, x, p, rng, stats)
        if not decoder_only:
            z, x = regularise_latents(z, x, p, rng, noise_scale=min(1.0, step / max(1.0, p.vae_noise_ramp * total)))
        y = vae_decode_train(vae, z)
        w = pixel_weights(x, p.vae_fg_weight)
        l1 = ((y - x).abs() * w).sum() / (w.sum() * 3)
        mse = weighted_mse(y, x, w)
        kl = 0.5 * (dist.mean.pow(2) + dist.std.pow(2) - 1 - dist.logvar).mean()
        loss = l1 + mse + (0.0 if decoder_only else p.vae_kl * kl)
        drift = torch.zeros(())
        if anchor is not None:  # mean square latent drift from the base encoder, in latent std units
            with torch.no_grad():
                z_base = vae_moments(anchor, x).mean
            drift = ((dist.mean - z_base) / lat_std).pow(2).mean()
            loss = loss + p.vae_encoder_anchor * drift
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update()
        for k, v in (("l1", l1), ("mse", mse), ("kl", kl), ("drift", drift)):
            run[k] += float(v.detach())
        run["n"] += 1
        if step % p.log_every == 0 or step == total:
            n = run.pop("n")
            rmse = math.sqrt(run["mse"] / n)
            logger.info("%s step %d (%.1f min): l1 %.4f mse %.5f (~%.1f dB, object-weighted) kl %.2f%s lr %.2e",
                        what, step, (elapsed0 + time.time() - t_start) / 60, run["l1"] / n, run["mse"] / n,
                        20 * math.log10(2 / max(rmse, 1e-8)), run["kl"] / n,
                        f" latent drift {math.sqrt(run['drift'] / n):.3f} std" if anchor is not None else "",
                        opt.param_groups[0]["lr"])
            run = {"l1": 0.0, "mse": 0.0, "kl": 0.0, "drift": 0.0, "n": 0}
        if p.checkpoint_minutes and time.time() - t_ckpt > 60 * p.checkpoint_minutes:
            ck.save(name, snapshot(False))
            t_ckpt = time.time()
    bar.close()
    vae.eval().requires_grad_(False)
    if stats is None:
        stats = latent_stats(vae, p, seed, device, p.stats_clips)
    vae.config = dataclasses.replace(vae.config, **stats)
    ck.save(name, snapshot(True))
    logger.info("%s: done at step %d in %.1f min; latent mean %s std %s", what, step,
                (elapsed0 + time.time() - t_start) / 60, np.round(stats["latents_mean"], 2).tolist(),
                np.round(stats["latents_std"], 2).tolist())
    return vae


def blend_latents(z: torch.Tensor, x: torch.Tensor, p: Preset, rng: np.random.Generator,
                  stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs for a decoder that decodes blends linearly: a share of the batch becomes
    (1 - l) z + l z_other -> (1 - l) x + l x_other with l ~ U(0, 1) and another clip of the batch; a share
    gets Gaussian latent noise (target unchanged)."""
    b = z.shape[0]
    if b < 2:
        raise ValueError("blend buckets need a batch of at least 2")
    other = torch.roll(torch.arange(b), 1)
    lam = torch.from_numpy(rng.random(b)).float().to(z.device)
    lam = torch.where(torch.from_numpy(rng.random(b) < p.vae_smooth_blend).to(z.device), lam, torch.zeros_like(lam))
    lz = lam.view(b, 1, 1, 1, 1)
    z = (1 - lz) * z + lz * z[other]
    x = (1 - lz) * x + lz * x[other]
    std = torch.tensor(stats["latents_std"], device=z.device).view(1, -1, 1, 1, 1)
    sigma = torch.from_numpy(0.2 * rng.random(b) * (rng.random(b) < p.vae_smooth_noise)).float().to(z.device)
    return z + sigma.view(b, 1, 1, 1, 1) * std * torch.randn_like(z), x


def regularise_latents(z: torch.Tensor, x: torch.Tensor, p: Preset, rng: np.random.Generator,
                       noise_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (latent, target) pair the decoder trains on under ``vae_scale_eq`` and ``vae_latent_noise``:
    sometimes both pooled 2x in space (scale equivariance), then latent noise (``noise_scale`` x
    ``vae_latent_noise``) relative to the batch's per-channel latent std (detached, so the encoder cannot
    outgrow it)."""
    if p.vae_scale_eq > 0 and min(z.shape[-2:]) >= 2 and rng.random() < p.vae_scale_eq:
        b, c, t, h, w = z.shape
        z = F.avg_pool2d(z.transpose(1, 2).reshape(b * t, c, h, w), 2).reshape(b, t, c, h // 2, w // 2).transpose(1, 2)
        _, cx, tx, hx, wx = x.shape
        x = F.avg_pool2d(x.transpose(1, 2).reshape(b * tx, cx, hx, wx), 2)
        x = x.reshape(b, tx, cx, hx // 2, wx // 2).transpose(1, 2)
    if p.vae_latent_noise > 0 and noise_scale > 0:
        std = z.detach().transpose(0, 1).flatten(1).std(dim=1).view(1, -1, 1, 1, 1)
        z = z + noise_scale * p.vae_latent_noise * std * torch.randn_like(z)
    return z, x


def encoder_checkpoint(p: Preset) -> str:
    """The checkpoint whose encoder (and latent statistics) the DiT stages and the decoder phases use."""
    return VAE_PHASES["temporal"][0] if p.vae_temporal_steps > 0 else VAE_PHASES["vae"][0]


def train_encoder(p: Preset, ck: Checkpoints, seed: int, device: torch.device, max_minutes: Optional[float]) -> WanVAE:
    """The VAE phases that shape the latent space: the VAE, then (if any steps) its long-window continuation."""
    vae = train_vae(p, ck, seed, device, max_minutes, phase="vae")
    if p.vae_temporal_steps > 0:
        vae = train_vae(p, ck, seed, device, max_minutes, phase="temporal")
    return vae


def train_decoder(p: Preset, ck: Checkpoints, seed: int, device: torch.device, max_minutes: Optional[float]) -> WanVAE:
    """The decoder fine-tune phases in order (each resumes, or returns at once when done)."""
    vae = train_vae(p, ck, seed, device, max_minutes, phase="decoder")
    for phase, steps in (("decoder_long", p.vae_long_steps), ("decoder_smooth", p.vae_smooth_steps)):
        if steps > 0:
            vae = train_vae(p, ck, seed, device, max_minutes, phase=phase)
    return vae


@torch.no_grad()
def latent_stats(vae: WanVAE, p: Preset, seed: int, device: torch.device, n: int = 32) -> dict:
    """Per-channel mean / std of the latent means of training clips (stored in the VAE config)."""
    rng = np.random.default_rng(seed + 7)
    zs = []
    for i in range(n):
        frames = 1 if i % 4 == 0 else 17
        size = 64 if p.gen_height >= 64 else 32
        x = render_clip(sample_train_prompt(rng), frames, size, size, int(rng.integers(2**31)))[None].to(device)
        zs.append(vae.encode_distribution(x).mean.transpose(0, 1).flatten(1))
    z = torch.cat(zs, 1)
    return {"latents_mean": tuple(float(v) for v in z.mean(1)),
            "latents_std": tuple(max(float(v), 1e-3) for v in z.std(1))}


@torch.no_grad()
def eval_vae(vae: WanVAE, n: int, device: torch.device) -> dict:
    """Reconstruction PSNR (uint8 frames) on held-out prompts through the inference encode/decode path."""
    out = {}
    prompts = held_out_prompts()[:n]
    shapes = ((1, 64, 64), (17, 64, 64), (33, 64, 64), (33, 96, 64), (33, 128, 128)) if n >= 8 else ((1, 32, 32),)
    for frames, h, w in shapes:
        vals = []
        for i, prompt in enumerate(prompts[: max(2, n // (4 if h * w > 64 * 64 else 1))]):
            x = render_clip(prompt, frames, h, w, 1000 + i)[None].to(device)
            y = vae.decode(vae.encode(x))
            vals.append(psnr(x, y))
        out[f"{frames}x{h}x{w}"] = float(np.mean(vals))
    out["mean"] = float(np.mean(list(out.values())))
    return out


@torch.no_grad()
def blend_psnr(vae: WanVAE, n: int, device: torch.device, seed: int = 3) -> dict:
    """How linear the decoder is around real latents: PSNR of decode((z_a + z_b) / 2) against
    (x_a + x_b) / 2 for ``n`` pairs of 64x64 training images on one background (recon: the pairs' own
    round trip, the ceiling). Run 3's VAE decoded the mean of two red-circle latents as two *yellow* circles:
    diffusion samplers move along such blends (docs/default_model.md)."""
    rng = np.random.default_rng(seed)
    size = 64 if n >= 4 else 32
    blend, recon = [], []
    for _ in range(n):
        bg = str(rng.choice(["gray", "black", "white"]))
        xs = []
        for _ in range(2):
            prompt = sample_train_prompt(rng)
            try:
                prompt = dataclasses.replace(parse(prompt), background=bg, background_given=True).prompt()
            except PromptError:  # an object the colour of the background: keep the prompt's own background
                pass
            xs.append(render_clip(prompt, 1, size, size, int(rng.integers(2**31)))[None].to(device))
        za, zb = (vae.encode(x) for x in xs)
        blend.append(psnr((xs[0] + xs[1]) / 2, vae.decode((za + zb) / 2)))
        recon.append(np.mean([psnr(x, vae.decode(z)) for x, z in zip(xs, (za, zb))]))
    return {"blend_psnr": float(np.mean(blend)), "recon_psnr": float(np.mean(recon)), "pairs": n}


# --------------------------------------------------------------------------------------- DiT stage

@torch.no_grad()
def encode_for_dit(vae: WanVAE, x: torch.Tensor, prompts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """What the DiT stages' data caches hold for rendered clips ``x`` (N, 3, T, H, W) of one size, encoded in
    one VAE call: per clip its normalised latent (fp16), its object mask on the latent grid (uint8, for the
    weighted loss) and its prompt."""
    z = vae.normalize(vae.encode(x))
    mask = latent_object_mask(x, z.shape)
    return [(z[i].to("cpu", torch.float16), mask[i].to("cpu", torch.uint8), pr) for i, pr in enumerate(prompts)]


def ring_insert(items: list, item: Any, capacity: int, rng: np.random.Generator) -> None:
    """Append while below ``capacity``, else replace a random entry (the caches' ring buffers)."""
    if len(items) < capacity:
        items.append(item)
    else:
        items[int(rng.integers(len(items)))] = item


FIT_AFTER = 300   # steps timed before --fit-dit-minutes sets the DiT stage's length (refitted at 4x and 16x)
FEED_LAG = 4   # DiT steps between drawing a batch of new clips (data_batch > 0) and adding it to the cache


class LatentCache:
    """Per-bucket ring buffers of (normalised latent, object mask on the latent grid, prompt) from training
    clips, grown during training: one clip at a time (``add_random``) or, with ``data_batch`` > 0, a batch of
    one bucket every ``data_batch / new_clips_per_step`` steps (``feed``), rendered by ``renderer`` while the
    loop trains. Batches still in flight are not checkpointed (a resumed run draws new ones)."""

    def __init__(self, p: Preset, renderer: Optional[Renderer] = None):
        self.p = p
        self.buckets = [tuple(b[:3]) for b in p.dit_buckets]
        w = np.array([b[3] for b in p.dit_buckets], float)
        self.weights = w / w.sum()
        self.items: dict[tuple, list] = {b: [] for b in self.buckets}
        self.added = 0
        self.renderer = renderer or Renderer()
        self.pending: list[tuple[int, tuple, list[str], list]] = []   # (due step, bucket, prompts, handles)
        self.credit, self.steps = 0.0, 0

    def state(self) -> dict:
        return {"items": {str(k): v for k, v in self.items.items()}, "added": self.added, "credit": self.credit}

    def __len__(self) -> int:
        return sum(map(len, self.items.values()))

    def load(self, s: dict) -> None:
        for b in self.buckets:
            self.items[b] = s["items"].get(str(b), [])
        self.added, self.credit = s["added"], s.get("credit", 0.0)

    def _submit(self, bucket: tuple, n: int, rng: np.random.Generator) -> tuple[list[str], list]:
        frames, h, w = bucket
        prompts, jobs = [], []
        for _ in range(n):
            if self.p.dit_prompts:
                prompt = str(rng.choice(self.p.dit_prompts))
            elif self.p.dit_object_probs:
                probs = np.asarray(self.p.dit_object_probs, float)
                prompt = sample_train_prompt(rng, int(rng.choice(len(probs), p=probs / probs.sum())) + 1)
            else:
                prompt = sample_train_prompt(rng)
            assert not is_held_out(prompt)
            prompts.append(prompt)
            jobs.append((prompt, frames, h, w, int(rng.integers(2**31))))
        return prompts, self.renderer.submit(jobs)

    @torch.no_grad()
    def _insert(self, vae: WanVAE, bucket: tuple, prompts: list[str], handles: list, rng: np.random.Generator,
                device: torch.device) -> None:
        per_call = max(1, self.p.data_batch)
        for i in range(0, len(prompts), per_call):
            x = Renderer.result(handles[i:i + per_call]).to(device)
            for item in encode_for_dit(vae, x, prompts[i:i + per_call]):
                ring_insert(self.items[bucket], item, self.p.cache_per_bucket, rng)
                self.added += 1

    def fill(self, vae: WanVAE, bucket: tuple, n: int, rng: np.random.Generator, device: torch.device) -> None:
        """Render, encode and add ``n`` new clips of ``bucket`` now."""
        prompts, handles = self._submit(bucket, n, rng)
        self._insert(vae, bucket, prompts, handles, rng, device)

    def add_random(self, vae: WanVAE, rng: np.random.Generator, device: torch.device) -> None:
        self.fill(vae, self.buckets[int(rng.choice(len(self.buckets), p=self.weights))], 1, rng, device)

    def feed(self, vae: WanVAE, rng: np.random.Generator, device: torch.device) -> None:
        """One training step's new data with ``data_batch`` > 0: draw the batches now due (``new_clips_per_step``
        on average), add those drawn ``FEED_LAG`` steps ago."""
        self.steps += 1
        self.credit += self.p.new_clips_per_step
        while self.credit >= self.p.data_batch:
            self.credit -= self.p.data_batch
            bucket = self.buckets[int(rng.choice(len(self.buckets), p=self.weights))]
            self.pending.append((self.steps + FEED_LAG, bucket, *self._submit(bucket, self.p.data_batch, rng)))
        while self.pending and self.pending[0][0] <= self.steps:
            _, bucket, prompts, handles = self.pending.pop(0)
            self._insert(vae, bucket, prompts, handles, rng, device)

    def tokens(self, bucket: tuple) -> int:
        frames, h, w = bucket
        return ((frames - 1) // 4 + 1) * (h // (8 * self.p.dit_patch)) * (w // (8 * self.p.dit_patch))

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(latents, loss weights (B, 1, t, h, w), prompts) of one bucket."""
        bucket = self.buckets[int(rng.choice(len(self.buckets), p=self.weights))]
        items = self.items[bucket]
        bs = max(1, min(self.p.dit_max_batch, self.p.dit_tokens_per_batch // self.tokens(bucket)))
        idx = rng.integers(len(items), size=bs)
        weight = 1.0 + self.p.dit_fg_weight * torch.stack([items[i][1] for i in idx]).float()
        return torch.stack([items[i][0] for i in idx]).float(), weight, [items[i][2] for i in idx]


def stage_continues(state: dict, steps: int, fit_minutes: Optional[float]) -> bool:
    """Whether a finished stage trains on: with ``fit_minutes``, only for a budget clearly beyond the minutes it
    already trained (a call repeated with the same budget must not warm-restart the schedule: session 11 lost a
    finished DiT's end of schedule that way), else for more ``steps`` than it ran."""
    if fit_minutes is not None:
        left = 60 * fit_minutes - state.get("elapsed", 0.0)
        return left > max(30.0, 0.05 * 60 * fit_minutes)
    return state["step"] < steps


def run_denoiser_stage(p: Preset, ck: Checkpoints, *, name: str, what: str, steps: int, lr: float, warmup: int,
                       seed: int, device: torch.device, cache, warm: Callable[[np.random.Generator], None],
                       step_loss: Callable, init: Optional[dict] = None, max_minutes: Optional[float] = None,
                       stop_at: Optional[float] = None, fit_minutes: Optional[float] = None,
                       train_text: bool = True) -> dict:
    """One resumable training stage of the DiT + text encoder (with EMA copies), checkpointed to ``name``;
    ``train_text=False`` keeps the text encoder as ``init`` gave it.

    ``init``: a finished stage's state to start from (its EMA weights), else random init. ``warm(rng)`` fills
    the empty data ``cache``; ``step_loss(dit, text, tokenizer, rng)`` adds new data and returns one batch's
    loss. ``fit_minutes``: after ``FIT_AFTER`` steps, set the stage's length (and so its learning-rate schedule)
    to what the measured speed does in that many minutes in all (the run records the count; pass it as the
    steps to reproduce the run). Returns the stage's final state (``done`` False when a time budget paused it).
    A finished stage's checkpoint needs only its EMA weights, step and ``done``."""
    state = ck.load(name)
    if state is not None and state.get("done") and not stage_continues(state, steps, fit_minutes):
        logger.info("%s: trained (step %d), loaded from %s", what, state["step"], ck.dir / name)
        return state
    tokenizer = make_tokenizer(p)
    torch.manual_seed(seed)
    dit = make_dit(p).to(device)
    text = make_text_encoder(p, len(tokenizer)).to(device)
    if init is not None:
        try:
            dit.load_state_dict(grow_depth(resize_patch(init["ema_dit"], dit), dit))
            text.load_state_dict(init["ema_text"])
        except (KeyError, RuntimeError) as e:
            raise SystemExit(f"{what}: the starting checkpoint does not fit this preset's DiT / text encoder "
                             f"({str(e).splitlines()[0][:200]}); pass the --set flags of the run that made it") from None
        torch.manual_seed(seed)
        logger.info("%s: starting from the EMA weights of an earlier stage (step %d)", what, init["step"])
        if steps == 0 and state is None:
            # no steps on top: the earlier stage *is* this run's finished stage (its step count, minutes, recipe
            # and lineage kept), e.g. a carried DiT exported beside a causal DiT trained from it
            recipe = init.get("preset")
            if recipe is None or recipe.get("dit_patch") != p.dit_patch:   # resized: this run's recipe
                recipe = dataclasses.asdict(p)
            state = {"ema_dit": dit.state_dict(), "ema_text": text.state_dict(), "step": init["step"],
                     "steps": init["step"], "done": True, "elapsed": init.get("elapsed", 0.0),
                     "preset": recipe, "init": init.get("init")}
            ck.save(name, state)
            logger.info("%s: taken as it is (0 steps on top)", what)
            return state
    ema_dit, ema_text = copy.deepcopy(dit).requires_grad_(False), copy.deepcopy(text).requires_grad_(False)
    text.requires_grad_(train_text)
    params = list(dit.parameters()) + (list(text.parameters()) if train_text else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01, fused=device.type == "cuda")
    # gradient norms are clipped at 1 over all parameters at once, except with the binding loss: it reaches only
    # the text encoder, yet clipped together its gradient set the DiT's clip factor (~0.5 at step 1 100 from
    # scratch, session 22), which AdamW undoes only while it stays constant; the DiT and the text encoder are then
    # clipped each on its own, so the DiT's steps do not depend on the binding loss's weight or progress
    clip_groups = ([list(dit.parameters()), list(text.parameters())] if train_text and p.text_bind_weight > 0
                   else [params])
    rng = np.random.default_rng(seed)
    step, elapsed0 = 0, 0.0
    if state is not None:
        dit.load_state_dict(state["dit"]), text.load_state_dict(state["text"])
        ema_dit.load_state_dict(state["ema_dit"]), ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"])
        cache.load(state["cache"])
        set_rng_state(rng, state["rng"])
        step, elapsed0 = state["step"], state.get("elapsed", 0.0)
        steps = max(steps, state.get("steps", steps)) if fit_minutes is not None else steps
        logger.info("%s: resuming at step %d (%d clips cached)", what, step, len(cache))
        if step >= steps:
            return state
    logger.info("%s: %s, %.2fM parameters; text encoder %.2fM parameters; %d steps", what, dit.config,
                sum(x.numel() for x in dit.parameters()) / 1e6, sum(x.numel() for x in text.parameters()) / 1e6,
                steps)
    if cache.added == 0:
        t0 = time.time()
        warm(rng)
        logger.info("%s: data cache warmed with %d clips in %.1f s", what, cache.added, time.time() - t0)

    t_start, t_ckpt = time.time(), time.time()
    run_loss, run_n = torch.zeros((), device=device), 0   # summed on the device: no host sync per step
    run_gnorm = torch.zeros(len(clip_groups), device=device)   # gradient norms before clipping, likewise
    step0, t_fit = step, None

    def snapshot(done: bool) -> dict:
        return {"dit": dit.state_dict(), "text": text.state_dict(), "ema_dit": ema_dit.state_dict(),
                "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "cache": cache.state(),
                "rng": rng_state(rng), "step": step, "steps": steps, "done": done,
                "elapsed": elapsed0 + time.time() - t_start, "preset": dataclasses.asdict(p),
                "init": None if init is None else {"step": init["step"], "elapsed": init.get("elapsed", 0.0),
                                                   "init": init.get("init")}}

    bar = tqdm(total=steps, initial=step, desc=name.removesuffix(".pt"), unit="step", mininterval=10)
    dit.train(), text.train(train_text)
    stopped_early = False
    while step < steps:
        if max_minutes is not None and (elapsed0 + time.time() - t_start) / 60 > max_minutes:
            logger.warning("%s: time budget of %.0f min reached at step %d of %d", what, max_minutes, step, steps)
            stopped_early = True
            break
        if stop_at is not None and time.time() > stop_at:
            logger.warning("%s: --stop-at reached at step %d of %d", what, step, steps)
            stopped_early = True
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup=warmup)
        loss = step_loss(dit, text, tokenizer, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        run_gnorm += torch.stack([torch.nn.utils.clip_grad_norm_(g, 1.0) for g in clip_groups])
        opt.step()
        decay = min(p.ema_decay, (1 + step) / (10 + step))
        ema_update(ema_dit, dit, decay), ema_update(ema_text, text, decay)
        step += 1
        bar.update()
        run_loss += loss.detach()
        run_n += 1
        # timed from FIT_AFTER // 3 on (the first steps pay for allocation, kernel choice, cache warm-up), fitted
        # at FIT_AFTER and refitted at 4x and 16x on the longer record (session 7: the speed over the first 300
        # steps was ~7 % below the later speed, and the run ended early)
        if fit_minutes is not None and step - step0 in (FIT_AFTER // 3, FIT_AFTER, 4 * FIT_AFTER, 16 * FIT_AFTER):
            if device.type == "cuda":
                torch.cuda.synchronize()
            if t_fit is None:
                t_fit = time.time()
            else:
                rate = (step - step0 - FIT_AFTER // 3) / (time.time() - t_fit)
                left = 60 * fit_minutes - (elapsed0 + time.time() - t_start)
                steps = max(step + 1, step + int(0.98 * left * rate))
                bar.total = steps
                logger.info("%s: %.1f steps/s -> %d steps in all to end at %.1f min", what, rate, steps, fit_minutes)
        if step % p.log_every == 0 or step == steps:
            norms = " / ".join(f"{float(g) / run_n:.3f}" for g in run_gnorm)
            logger.info("%s step %d (%.1f min): loss %.4f lr %.2e grad norm %s (%s clipped at 1), %d clips cached "
                        "(%d encoded)", what, step, (elapsed0 + time.time() - t_start) / 60, float(run_loss) / run_n,
                        opt.param_groups[0]["lr"], norms, "DiT / text encoder each" if len(clip_groups) > 1 else
                        "all", len(cache), cache.added)
            run_loss, run_gnorm, run_n = torch.zeros((), device=device), torch.zeros_like(run_gnorm), 0
        if p.checkpoint_minutes and time.time() - t_ckpt > 60 * p.checkpoint_minutes:
            ck.save(name, snapshot(False))
            t_ckpt = time.time()
    bar.close()
    state = snapshot(not stopped_early)
    ck.save(name, state)
    logger.info("%s: %s at step %d after %.1f min", what, "done" if not stopped_early else "paused", step,
                state["elapsed"] / 60)
    return state


def in_bands(s: torch.Tensor, bands: tuple, mean: float) -> torch.Tensor:
    """Noise levels ``s`` with every draw outside all ``bands`` ([lo, hi] pairs; () keeps them all) drawn again
    from the same logit-normal, i.e. that distribution restricted to the bands."""
    if not bands:
        return s
    for _ in range(10_000):
        outside = ~torch.stack([(s >= lo) & (s <= hi) for lo, hi in bands]).any(0)
        if not outside.any():
            return s
        s = torch.where(outside, torch.sigmoid(mean + torch.randn_like(s)), s)
    raise SystemExit(f"dit_s_bands={list(bands)}: the logit-normal around {mean} almost never falls in these bands; "
                     "widen them or move dit_t_mean")


def train_dit(p: Preset, ck: Checkpoints, vae: WanVAE, seed: int, device: torch.device,
              max_minutes: Optional[float], stop_at: Optional[float], render_workers: int = 0,
              fit_minutes: Optional[float] = None, init: Optional[dict] = None) -> dict:
    """Text-to-video flow matching of the DiT + text encoder on the bucketed latent cache; ``init``: a finished
    DiT stage whose EMA weights it starts from (fresh optimizer, data and schedule: training carried across
    sessions / machines)."""
    renderer = Renderer(render_workers if p.data_batch > 0 else 0)
    cache = LatentCache(p, renderer)

    def warm(rng: np.random.Generator) -> None:
        for b, w in zip(cache.buckets, cache.weights * len(cache.buckets)):
            cache.fill(vae, b, max(1, int(round(p.cache_warm * w))), rng, device)

    def step_loss(dit, text, tokenizer, rng: np.random.Generator) -> torch.Tensor:
        if p.data_batch > 0:
            cache.feed(vae, rng, device)
        else:
            n_new = int(p.new_clips_per_step) + int(rng.random() < p.new_clips_per_step % 1)  # on average
            for _ in range(n_new):
                cache.add_random(vae, rng, device)
        x0, weight, prompts = cache.batch(rng)
        x0, weight = x0.to(device), weight.to(device)
        prompts = ["" if rng.random() < p.cfg_dropout else vary_text(pr, rng) for pr in prompts]
        b, _, t, h, w = x0.shape
        s = in_bands(torch.sigmoid(p.dit_t_mean + torch.randn(b, device=device)), p.dit_s_bands, p.dit_t_mean)
        noise = torch.randn_like(x0)
        sv = s.view(b, 1, 1, 1, 1)
        ts = s * 1000
        per_frame = p.dit_frame_noise_prob > 0 and t > 1
        if per_frame:
            sv, ts = frame_noise_levels(s, t, (h // p.dit_patch) * (w // p.dit_patch), p, torch.Generator().manual_seed(
                int(rng.integers(2 ** 31))))
        xt = (1 - sv) * x0 + sv * noise
        ctx = encode_text(tokenizer, text, prompts, p.max_text_len)
        pred = dit(xt, ts, ctx)
        weight = fade_weights(weight, sv, p.dit_fg_noise_power)
        if per_frame:
            weight = weight * (sv > 0).float()     # clean frames are context: no loss
        loss = weighted_mse(pred, noise - x0, weight)
        if p.dit_temporal_weight > 0 and x0.shape[2] > 1:
            # the x0 error's change from one latent frame to the next (x0 error = -s x velocity error): what
            # decodes to flicker on a frame-local VAE
            d = sv * ((pred - noise + x0).diff(dim=2))
            loss = loss + p.dit_temporal_weight * weighted_mse(d, torch.zeros_like(d), weight[:, :, 1:])
        if p.text_bind_weight > 0 and p.dit_train_text:
            loss = loss + p.text_bind_weight * text_binding_loss(tokenizer, text, prompts, ctx)
        return loss

    try:
        return run_denoiser_stage(p, ck, name="dit.pt", what="DiT", steps=p.dit_steps, lr=p.dit_lr, warmup=200,
                                  seed=seed + 1, device=device, cache=cache, warm=warm, step_loss=step_loss,
                                  max_minutes=max_minutes, stop_at=stop_at, fit_minutes=fit_minutes, init=init,
                                  train_text=p.dit_train_text)
    finally:
        renderer.close()


# ------------------------------------------------------------------------------- causal variant stage

class LongClipCache:
    """Latents of whole long renders (several seconds, at the generation size) with their prompts; training
    windows are cut from them as the stream sees a clip: [sink chunk | previous chunk | current chunk]."""

    def __init__(self, p: Preset):
        self.p = p
        self.items: dict[int, list] = {}   # latent frames -> [(latents fp16 (C, T, h, w), object mask, prompt)]
        self.added = 0

    @staticmethod
    def frames_for(seconds: float) -> int:
        return 1 + 4 * max(1, int(round(seconds * FPS / 4)))

    def state(self) -> dict:
        return {"items": self.items, "added": self.added}

    def load(self, s: dict) -> None:
        self.items, self.added = s["items"], s["added"]

    def __len__(self) -> int:
        return sum(map(len, self.items.values()))

    @torch.no_grad()
    def add(self, vae: WanVAE, rng: np.random.Generator, device: torch.device) -> None:
        p = self.p
        prompt = sample_train_prompt(rng)
        frames = self.frames_for(float(rng.choice(p.causal_seconds)))
        x = render_clip(prompt, frames, p.gen_height, p.gen_width, int(rng.integers(2**31)))[None].to(device)
        item = encode_for_dit(vae, x, [prompt])[0]
        ring_insert(self.items.setdefault(item[0].shape[1], []), item,
                    max(1, p.causal_cache // len(p.causal_seconds)), rng)
        self.added += 1

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str], list[int]]:
        """(B, C, k + 2 chunks, h, w) latents, their loss weights (B, 1, k + 2 chunks, h, w), prompts, RoPE frame
        positions (shared by the batch); k previous chunks from ``causal_context_chunks``."""
        p, c = self.p, self.p.causal_chunk
        k = int(rng.choice(p.causal_context_chunks)) if len(p.causal_context_chunks) > 1 else p.causal_context_chunks[0]
        n = (k + 2) * c
        lengths = sorted(t for t, v in self.items.items() if t >= n and v)
        if not lengths:   # no render long enough yet for this many context chunks: the narrowest layout
            k, n = 1, 3 * c
            lengths = sorted(t for t, v in self.items.items() if t >= n and v)
        t_len = int(rng.choice(lengths))
        items = self.items[t_len]
        idx = rng.integers(len(items), size=p.causal_batch)
        z = torch.cat([torch.stack([items[i][0] for i in idx]).float(),
                       1.0 + p.dit_fg_weight * torch.stack([items[i][1] for i in idx]).float()], dim=1)
        starts = list(range(c, t_len - (k + 1) * c + 1, c))   # chunk-aligned, as the stream makes them
        if t_len == n or rng.random() < 0.25:           # the start of a clip: chunks 0 .. k + 1
            pos = list(range(n))
        else:                                            # sink chunk + k + 1 consecutive later chunks
            a = int(rng.choice(starts))
            gap = int(rng.integers(0, max(1, p.causal_max_gap - t_len) + 1)) if rng.random() < 0.5 else 0
            pos = list(range(c)) + list(range(a + gap, a + gap + (k + 1) * c))
            z = torch.cat([z[:, :, :c], z[:, :, a:a + (k + 1) * c]], dim=2)
        if pos == list(range(n)):
            z = z[:, :, :n]
        return z[:, :-1], z[:, -1:], [items[i][2] for i in idx], pos


@torch.no_grad()
def recycle_context(dit, xt: torch.Tensor, sig: torch.Tensor, recycled: torch.Tensor, ctx: torch.Tensor, mask,
                    pos: list[int], c: int, frame_tokens: int, sigma: tuple,
                    rng: np.random.Generator) -> torch.Tensor:
    """``xt`` (noise levels ``sig``, (B, chunks)) with the clean chunks marked in ``recycled`` replaced by the
    DiT's own one-step estimate of them (x0 = x_s - s * v at a noise level s ~ U(sigma) per chunk): the imperfect
    past a stream's later chunks see. Other chunks are returned unchanged."""
    if not bool(recycled.any()):
        return xt
    b, _, t = xt.shape[:3]
    lo, hi = sigma
    s = torch.from_numpy(rng.uniform(lo, hi, size=recycled.shape)).float().to(xt.device) * recycled
    sv = s.repeat_interleave(c, dim=1).view(b, 1, t, 1, 1)
    # recycled chunks hold clean latents (timestep 0), so x_s = (1 - s) x0 + s noise needs no other term
    xs = (1 - sv) * xt + sv * torch.randn_like(xt)
    # the chunks not recycled keep the noise levels they train at (a recycled chunk sees the sink: if the sink
    # is noisy, the estimate's forward must be told so); the current chunk's output is not used
    ts = (torch.where(recycled, s, sig) * 1000).repeat_interleave(c * frame_tokens, dim=1)
    was_training = dit.training
    dit.eval()
    v = dit(xs, ts, ctx, mask=mask, frame_offset=pos)
    dit.train(was_training)
    rv = recycled.float().repeat_interleave(c, dim=1).view(b, 1, t, 1, 1)
    return rv * (xs - sv * v.float()) + (1 - rv) * xt


def train_causal(p: Preset, ck: Checkpoints, vae: WanVAE, dit_state: dict, seed: int, device: torch.device,
                 max_minutes: Optional[float], fit_minutes: Optional[float] = None) -> dict:
    """Block-causal fine-tune of the DiT (diffusion forcing: an independent noise level per chunk, clean
    context chunks at timestep 0 as the stream's KV commit sees them), from the bidirectional EMA weights."""
    from vidrt.attention import MaskSpec

    cache = LongClipCache(p)
    c = p.causal_chunk

    def warm(rng: np.random.Generator) -> None:
        for _ in tqdm(range(p.causal_warm), desc="long clips", mininterval=10):
            cache.add(vae, rng, device)

    def step_loss(dit, text, tokenizer, rng: np.random.Generator) -> torch.Tensor:
        n_new = int(p.causal_new_per_step) + int(rng.random() < p.causal_new_per_step % 1)
        for _ in range(n_new):
            cache.add(vae, rng, device)
        x0, weight, prompts, pos = cache.batch(rng)
        x0, weight = x0.to(device), weight.to(device)
        prompts = ["" if rng.random() < p.cfg_dropout else vary_text(pr, rng) for pr in prompts]
        b, _, t, h, w = x0.shape
        frame_tokens = (h // p.dit_patch) * (w // p.dit_patch)
        n_chunks = t // c
        sig = torch.sigmoid(p.dit_t_mean + torch.randn(b, n_chunks))
        clean = torch.rand(b, n_chunks) < p.causal_clean_prob
        clean[:, -1] = False                       # every sample trains at least its last chunk
        sig = torch.where(clean, torch.zeros_like(sig), sig).to(device)
        sv = sig.repeat_interleave(c, dim=1).view(b, 1, t, 1, 1)
        noise = torch.randn_like(x0)
        xt = (1 - sv) * x0 + sv * noise
        ts = (sig * 1000).repeat_interleave(c * frame_tokens, dim=1)            # (B, L) per token
        ctx = encode_text(tokenizer, text, prompts, p.max_text_len)
        # context chunks see the sink and themselves, the current chunk everything: the stream's "sinks" commit
        mask = MaskSpec.block_causal(c * frame_tokens, sink_chunks=1)
        if p.causal_recycle > 0:
            recycled = clean & (torch.rand(b, 1) < p.causal_recycle)
            xt = recycle_context(dit, xt, sig, recycled.to(device), ctx, mask, pos, c, frame_tokens,
                                 p.causal_recycle_sigma, rng)
        pred = dit(xt, ts, ctx, mask=mask, frame_offset=pos)
        return weighted_mse(pred, noise - x0, fade_weights(weight, sv, p.dit_fg_noise_power) * (sv > 0).float())

    return run_denoiser_stage(p, ck, name="causal.pt", what="causal DiT", steps=p.causal_steps, lr=p.causal_lr,
                              warmup=100, seed=seed + 2, device=device, cache=cache, warm=warm,
                              step_loss=step_loss, init=dit_state, max_minutes=max_minutes, fit_minutes=fit_minutes,
                              train_text=p.causal_train_text)


# ------------------------------------------------------------------------------------------- export

def diffusers_dit(p: Preset, state: dict):
    """diffusers' WanTransformer3DModel holding a stage's EMA DiT weights (loaded strictly)."""
    from diffusers import WanTransformer3DModel

    dc = make_dit(p).config
    d_dit = WanTransformer3DModel(patch_size=tuple(dc.patch_size), num_attention_heads=dc.num_attention_heads,
                                  attention_head_dim=dc.attention_head_dim, in_channels=dc.in_channels,
                                  out_channels=dc.out_channels, text_dim=dc.text_dim, freq_dim=dc.freq_dim,
                                  ffn_dim=dc.ffn_dim, num_layers=dc.num_layers, cross_attn_norm=dc.cross_attn_norm,
                                  qk_norm=dc.qk_norm, eps=dc.eps, rope_max_seq_len=dc.rope_max_seq_len)
    d_dit.load_state_dict(state["ema_dit"], strict=True)
    return d_dit.to(export_dtype(p, "export_dit_dtype"))


def export_dtype(p: Preset, field: str) -> torch.dtype:
    """The torch dtype an ``export_*_dtype`` field names (fp32 or fp16)."""
    dtypes = {"fp32": torch.float32, "fp16": torch.float16}
    value = getattr(p, field)
    if value not in dtypes:
        raise SystemExit(f"{field}={value!r}: use one of {', '.join(dtypes)}")
    return dtypes[value]


_DIT_STAGE_FIELDS = ("dit_", "text_", "cache_", "new_clips", "max_text_len", "cfg_dropout", "ema_decay")


def preset_changes(p: Preset, trained: dict) -> dict:
    """Fields where the DiT stage's recorded preset or this export's preset differ from the named preset's
    defaults (the ``--set`` / ``--dit-steps`` overrides), so the folder says how it was made."""
    ref = dataclasses.asdict(PRESETS[p.name]) if p.name in PRESETS else {}
    out, now = {}, dataclasses.asdict(p)
    for key, default in ref.items():
        # this export's overrides first, then the DiT stage's (for the fields that shaped the DiT)
        sources = (now, trained) if key.startswith(_DIT_STAGE_FIELDS) else (now,)
        for source in sources:
            if key in source and json.dumps(source[key]) != json.dumps(default):
                out[key] = source[key]
                break
    return out


def export(p: Preset, vae: WanVAE, dit_state: dict, out: Path) -> dict:
    """Write the diffusers WanPipeline folder + vidrt.json; returns a summary (sizes, step counts)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    tokenizer = make_tokenizer(p)
    vc = vae.config
    d_vae = AutoencoderKLWan(base_dim=vc.base_dim, z_dim=vc.z_dim, dim_mult=list(vc.dim_mult),
                             num_res_blocks=vc.num_res_blocks, attn_scales=[],
                             temperal_downsample=list(vc.temperal_downsample),
                             latents_mean=list(vc.latents_mean), latents_std=list(vc.latents_std),
                             decoder_base_dim=vc.decoder_base_dim)
    d_vae.load_state_dict(vae.state_dict(), strict=True)
    d_dit = diffusers_dit(p, dit_state)
    te = make_text_encoder(p, len(tokenizer))
    te_state = dict(dit_state["ema_text"])
    te.load_state_dict(te_state, strict=True)
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                    flow_shift=p.gen_shift)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=te.eval().to(export_dtype(p, "export_text_dtype")),
                       vae=d_vae.eval().to(export_dtype(p, "export_vae_dtype")), transformer=d_dit.eval(),
                       scheduler=sched)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.rglob("*.safetensors"):
        old.unlink()
    pipe.save_pretrained(str(out), safe_serialization=True)
    defaults = {"height": p.gen_height, "width": p.gen_width, "num_frames": p.gen_frames, "steps": p.gen_steps,
                "guidance": p.gen_guidance, "fps": FPS, "max_sequence_length": p.max_text_len, "sampler": "auto",
                "shift": p.gen_shift, "negative_prompt": "", "region_layout": "world"}
    trained = dict(dit_state.get("preset", {}))
    if "steps" in dit_state:   # the stage's own step count (--fit-dit-minutes sets it during the run; --dit-steps 0
        trained["dit_steps"] = dit_state["steps"]   # on an earlier stage keeps that stage's)
        p = dataclasses.replace(p, dit_steps=dit_state["steps"])
    info = {"preset": p.name, "dit_step": dit_state["step"], "dit_steps_planned": trained.get("dit_steps", p.dit_steps),
            "dit_done": bool(dit_state.get("done")), "trained_minutes_dit": round(dit_state.get("elapsed", 0) / 60, 1),
            "changed_from_preset": preset_changes(p, trained)}
    if dit_state.get("init"):   # started from an earlier DiT stage (--dit-init): its step count and time
        info["dit_init"] = dit_state["init"]
    (out / "vidrt.json").write_text(json.dumps({**defaults, "_training": info}, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*.safetensors"))
    logger.info("exported %s: %.1f MB of safetensors", out, size / 1e6)
    return {**info, "safetensors_mb": round(size / 1e6, 2)}


def exported_dit_state(folder: Path) -> dict:
    """The DiT stage state an exported model folder holds (its EMA DiT and text encoder, step and minutes from
    vidrt.json): what ``--dit-init`` continues from when the run's own checkpoints are gone."""
    from safetensors.torch import load_file

    try:
        dit = load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
        text = load_file(str(folder / "text_encoder" / "model.safetensors"))
        info = json.loads((folder / "vidrt.json").read_text()).get("_training", {})
    except (OSError, ValueError) as e:
        raise SystemExit(f"--dit-init {folder}: not an exported default-model folder ({e})") from None
    if "shared.weight" in text:   # save_pretrained drops the tied copy of the embedding
        text.setdefault("encoder.embed_tokens.weight", text["shared.weight"])
    state = {"ema_dit": dit, "ema_text": text, "step": info.get("dit_step", 0),
             "elapsed": 60 * info.get("trained_minutes_dit", 0.0), "init": info.get("dit_init")}
    if info.get("preset") in PRESETS:   # the recipe it recorded, every field (kept when it is exported again)
        changes = [f"{k}={json.dumps(v)}" for k, v in info.get("changed_from_preset", {}).items()]
        state["preset"] = dataclasses.asdict(apply_overrides(dataclasses.replace(PRESETS[info["preset"]]), changes))
    return state


def write_vae_from_export(folder: Path, p: Preset, ck: Checkpoints) -> None:
    """Write the finished VAE checkpoints of ``p``'s chain (the VAE stage, and the long-window phase when the
    preset has one) from an exported model folder's VAE and latent statistics, so the DiT stages can run on a
    machine without the run's own checkpoints (``--vae-from``)."""
    from safetensors.torch import load_file

    try:
        model = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
        cfg = json.loads((folder / "vae" / "config.json").read_text())
        stats = {"latents_mean": tuple(cfg["latents_mean"]), "latents_std": tuple(cfg["latents_std"])}
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"--vae-from {folder}: not an exported default-model folder ({e})") from None
    vae = make_vae(p)
    try:
        load_vae_weights(vae, model)
    except RuntimeError as e:
        raise SystemExit(f"--vae-from {folder}: its VAE does not fit this preset's ({str(e).splitlines()[0][:200]})") from None
    names = {VAE_PHASES["vae"][0], encoder_checkpoint(p)}
    for name in names:
        ck.save(name, {"model": model, "latent_stats": stats, "step": 0, "done": True, "from": str(folder),
                       "preset": dataclasses.asdict(p)})


def export_causal(p: Preset, state: dict, out: Path) -> dict:
    """Write the causal DiT as a diffusers transformer folder (config + safetensors) with
    ``num_frame_per_block``; it runs on the default model's VAE and text encoder (``vidrt.Pipeline.
    from_pretrained("default-causal")``), so only the DiT is shipped twice."""
    if p.export_causal_dtype not in ("", "fp32", "fp16", "int8"):
        raise SystemExit(f"export_causal_dtype={p.export_causal_dtype!r}: use fp32, fp16, int8 or '' (the DiT's)")
    int8 = p.export_causal_dtype == "int8"
    d_dit = diffusers_dit(p if int8 else dataclasses.replace(p, export_dit_dtype=p.export_causal_dtype or
                                                             p.export_dit_dtype), state)
    tdir = out / "transformer"
    tdir.mkdir(parents=True, exist_ok=True)
    for old in tdir.glob("*.safetensors"):
        old.unlink()
    if int8:   # diffusers' config, vidrt's int8 weights (from the fp32 EMA, not the export dtype's copy)
        from vidrt.quant.storage import save_int8

        d_dit.save_config(str(tdir))
        save_int8({k: v.float() for k, v in state["ema_dit"].items()}, tdir / "diffusion_pytorch_model.safetensors")
    else:
        d_dit.save_pretrained(str(tdir), safe_serialization=True)
    cfg = json.loads((tdir / "config.json").read_text())
    cfg["num_frame_per_block"] = p.causal_chunk
    # trained on [sink | previous | current]: each context chunk's keys/values saw the sink and itself, so the
    # stream commits chunks against the sinks alone (with one window chunk that equals recomputing the past)
    cfg["commit_context"] = "sinks"
    (tdir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    info = {"preset": p.name, "causal_step": state["step"], "causal_steps_planned": state.get("steps", p.causal_steps),
            "causal_done": bool(state.get("done")), "trained_minutes": round(state.get("elapsed", 0) / 60, 1),
            "num_frame_per_block": p.causal_chunk, "base": "default",
            "stored_as": p.export_causal_dtype or p.export_dit_dtype}
    (out / "vidrt.json").write_text(json.dumps({"_training": info}, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*.safetensors"))
    logger.info("exported the causal DiT to %s: %.1f MB of safetensors", out, size / 1e6)
    return {**info, "safetensors_mb": round(size / 1e6, 2)}


# ------------------------------------------------------------------------------------------- main

def recorded_preset(path: Path) -> Preset:
    """The preset a stage checkpoint recorded (every field, ``--set`` overrides included): the recipe of a run whose
    flags are not at hand, e.g. an arm of tools/train_on_gpu.sh."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        rec = dict(state["preset"])
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as e:
        raise SystemExit(f"--preset-from {path}: not a readable stage checkpoint ({e})") from None
    except (KeyError, TypeError):
        raise SystemExit(f"--preset-from {path}: the checkpoint records no preset (a stage checkpoint of this "
                         "script has one; pass --preset and --set instead)") from None
    fields = {f.name for f in dataclasses.fields(Preset)}
    unknown = sorted(set(rec) - fields)
    if unknown:
        raise SystemExit(f"--preset-from {path}: recorded fields {unknown} are not this script's; an older or newer "
                         "recipe -- pass --preset and --set instead")
    if path.name.endswith("dit.pt") and "steps" in state:   # a fitted DiT stage: its length is the fitted count
        rec["dit_steps"] = state["steps"]
    # fields added since the checkpoint was written keep their defaults; lists from older pickles become tuples
    return dataclasses.replace(Preset(name=rec["name"]),
                               **{k: tuple(v) if isinstance(v, list) else v for k, v in rec.items()})


def apply_overrides(p: Preset, items: list[str]) -> Preset:
    """``FIELD=VALUE`` overrides of preset fields; values are JSON (lists become tuples) or plain strings."""
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields or key == "name":
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(set(fields) - {'name'})}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        default = getattr(p, key)
        if isinstance(default, tuple):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        if default is None:  # an Optional field: null or a value of the annotated type
            ok = value is None or type(value).__name__ in str(fields[key].type)
        else:
            ok = type(value) is type(default)
        if not ok:
            want = fields[key].type if default is None else type(default).__name__
            raise SystemExit(f"--set {item!r}: {key} takes a {want}, got {raw!r}")
        changes[key] = value
    p = dataclasses.replace(p, **changes)
    probs = p.dit_object_probs
    if probs and (len(probs) != 3 or min(probs) < 0 or sum(probs) <= 0):
        raise SystemExit(f"--set dit_object_probs={list(probs)}: give three non-negative shares of 1 / 2 / 3-object "
                         "prompts, e.g. [1, 1, 1]")
    if not all(isinstance(b, tuple) and len(b) == 2 and 0 <= b[0] < b[1] <= 1 for b in p.dit_s_bands):
        raise SystemExit(f"--set dit_s_bands={json.dumps(p.dit_s_bands)}: give [lo, hi] pairs of noise levels with "
                         "0 <= lo < hi <= 1, e.g. [[0, 0.3], [0.85, 1]]")
    for prompt in p.dit_prompts:
        parse(prompt)  # PromptError (with the grammar) for a prompt outside it
        if is_held_out(prompt):
            raise SystemExit(f"--set dit_prompts: {prompt!r} is a held-out prompt; the DiT trains on training prompts only")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full")
    ap.add_argument("--workdir", type=Path, default=None, help="checkpoints and logs (default runs/default_model/)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="export folder (default runtime/assets/default/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--vae-steps", type=int, default=None)
    ap.add_argument("--dit-steps", type=int, default=None)
    ap.add_argument("--vae-from", type=Path, default=None,
                    help="an exported model folder (e.g. runtime/assets/default) whose VAE becomes this workdir's "
                         "finished VAE, so the DiT stages run without training one")
    ap.add_argument("--dit-init", type=Path, default=None,
                    help="a finished DiT stage checkpoint (dit.pt; its EMA weights suffice) or an exported model "
                         "folder (e.g. runtime/assets/default) to start the DiT stage from instead of random weights: "
                         "a new schedule of --dit-steps on top of it (a different dit_patch is resized to this one); "
                         "with --dit-steps 0 it is taken as this run's finished DiT stage, its record kept")
    ap.add_argument("--vae-max-minutes", type=float, default=None, help="stop VAE training after this long")
    ap.add_argument("--dit-max-minutes", type=float, default=None, help="pause DiT training after this long")
    ap.add_argument("--stop-at", type=float, default=None, help="unix time at which DiT training pauses")
    ap.add_argument("--fit-dit-minutes", type=float, default=None,
                    help="set the DiT stage's step count from its measured speed so that it ends after this many "
                         "minutes (the learning-rate schedule runs to its end; the count is recorded)")
    ap.add_argument("--fit-causal-minutes", type=float, default=None,
                    help="as --fit-dit-minutes, for the causal DiT stage")
    ap.add_argument("--render-workers", type=int, default=None,
                    help="processes rendering training clips ahead of the DiT loop when data_batch > 0 "
                         "(default: CPU cores - 2, at most 8)")
    ap.add_argument("--stage", choices=("all", "vae", "decoder", "decoder-long"), default="all",
                    help="all: VAE, DiT, causal DiT, VAE decoder fine-tune, export; vae: the VAE stage only; "
                         "decoder (alias decoder-long): only the decoder fine-tune phases (encoder frozen), to run "
                         "in a second process beside the DiT stages")
    ap.add_argument("--vae-decoder-steps", type=int, default=None)
    ap.add_argument("--decoder-max-minutes", type=float, default=None,
                    help="stop the decoder fine-tune after this long (the phase ends there, marked finished: its "
                         "learning-rate schedule is cut short)")
    ap.add_argument("--causal-steps", type=int, default=None, help="causal-variant fine-tune steps (0: skip)")
    ap.add_argument("--causal-max-minutes", type=float, default=None, help="pause the causal fine-tune after this long")
    ap.add_argument("--causal-out", type=Path, default=None,
                    help="export folder of the causal DiT (default: OUT_causal, i.e. runtime/assets/default_causal/)")
    ap.add_argument("--export-only", action="store_true", help="export the latest checkpoint (EMA) and exit")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--eval", action="store_true", help="also run the adherence evaluation after export")
    ap.add_argument("--preset-from", type=Path, default=None, metavar="CHECKPOINT",
                    help="use the preset a stage checkpoint recorded (e.g. a GPU arm's ARM_dit.pt: its recipe "
                         "without repeating its --set flags); --preset is ignored, --set applies on top")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a preset field (repeatable), e.g. --set dit_dim=192 --set dit_layers=6; "
                         "the values are recorded in the checkpoints and the exported vidrt.json")
    args = ap.parse_args(argv)
    if args.causal_out is None:
        args.causal_out = args.out.parent / f"{args.out.name}_causal"

    base = recorded_preset(args.preset_from) if args.preset_from else dataclasses.replace(PRESETS[args.preset])
    p = apply_overrides(base, args.set)
    if args.vae_steps is not None:
        p.vae_steps = args.vae_steps
    if args.dit_steps is not None:
        p.dit_steps = args.dit_steps
    if args.causal_steps is not None:
        p.causal_steps = args.causal_steps
    if args.vae_decoder_steps is not None:
        p.vae_decoder_steps = args.vae_decoder_steps
    dit_init = None   # checked before any training starts
    if args.dit_init is not None:
        if args.dit_init.is_dir():
            dit_init = exported_dit_state(args.dit_init)
        elif args.dit_init.is_file():
            dit_init = torch.load(args.dit_init, map_location="cpu", weights_only=False)
        else:
            raise SystemExit(f"--dit-init {args.dit_init}: no such file or folder (a dit.pt of an earlier run, or "
                             "an exported model folder such as runtime/assets/default)")
        if not isinstance(dit_init, dict) or "ema_dit" not in dit_init or "step" not in dit_init:
            raise SystemExit(f"--dit-init {args.dit_init}: not a DiT stage checkpoint (needs ema_dit, ema_text, step)")
    workdir = args.workdir or REPO / "runs" / ("default_model" if p.name == "full" else f"default_model_{p.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(workdir / "run.log")])
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    random.seed(args.seed)
    ck = Checkpoints(workdir)
    if args.vae_from is not None:
        write_vae_from_export(args.vae_from, p, ck)
    logger.info("preset %s, seed %d, device %s, workdir %s", p.name, args.seed, device, workdir)
    if device.type == "cuda":   # tf32 matrix units: ~3e-4 relative error per product, far below the loss noise
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if args.render_workers is None:
        args.render_workers = max(0, min(8, (os.cpu_count() or 1) - 2))
    times: dict[str, float] = {}

    if args.export_only:
        vstate, dstate = ck.load(encoder_checkpoint(p)), ck.load("dit.pt")
        if vstate is None or not vstate.get("done") or dstate is None:
            logger.error("nothing to export: %s needs a finished VAE (%s) and a DiT checkpoint (dit.pt)", workdir,
                         encoder_checkpoint(p))
            return 2
        vae = make_vae(p)
        load_vae_weights(vae, vstate["model"])
        for dname in (VAE_PHASES["decoder_smooth"][0], VAE_PHASES["decoder_long"][0], VAE_PHASES["decoder"][0]):
            dec = ck.load(dname)
            if dec is not None:  # the newest decoder (the encoder, hence the latents, is the VAE stage's)
                vae.load_state_dict(dec["model"])
                logger.info("export: VAE decoder from %s (step %d)", dname, dec["step"])
                break
        vae.config = dataclasses.replace(vae.config, **vstate["latent_stats"])
        summary = {"default": export(p, vae, dstate, args.out)}
        cstate = ck.load("causal.pt")
        if cstate is not None and p.causal_steps > 0:
            summary["causal"] = export_causal(p, cstate, args.causal_out)
        (workdir / "export.json").write_text(json.dumps(summary, indent=2))
        return 0

    if args.stage in ("decoder", "decoder-long"):
        vae = train_decoder(p, ck, args.seed, device, args.decoder_max_minutes)
        logger.info("VAE held-out PSNR after the decoder fine-tune: %s", eval_vae(vae, p.eval_vae_prompts, device))
        return 0
    t0 = time.time()
    vae = train_encoder(p, ck, args.seed, device, args.vae_max_minutes)
    times["vae_s"] = time.time() - t0
    summary: dict[str, Any] = {"preset": p.name, "seed": args.seed}
    summary["vae_psnr"] = eval_vae(vae, p.eval_vae_prompts, device)
    summary["vae_blend"] = blend_psnr(vae, p.eval_vae_prompts, device)
    logger.info("VAE held-out PSNR: %s; blends: %s", summary["vae_psnr"], summary["vae_blend"])
    if args.stage == "vae":
        return 0
    t0 = time.time()
    dit_state = train_dit(p, ck, vae, args.seed, device, args.dit_max_minutes, args.stop_at,
                          render_workers=args.render_workers, fit_minutes=args.fit_dit_minutes, init=dit_init)
    times["dit_s"] = time.time() - t0
    causal_state = None
    if p.causal_steps > 0 and dit_state.get("done"):
        t0 = time.time()
        causal_state = train_causal(p, ck, vae, dit_state, args.seed, device, args.causal_max_minutes,
                                    fit_minutes=args.fit_causal_minutes)
        times["causal_s"] = time.time() - t0
    if p.vae_decoder_steps > 0 and dit_state.get("done"):
        t0 = time.time()
        vae = train_decoder(p, ck, args.seed, device, args.decoder_max_minutes)
        times["vae_decoder_s"] = time.time() - t0
        summary["vae_psnr_decoder"] = eval_vae(vae, p.eval_vae_prompts, device)
        logger.info("VAE held-out PSNR after the decoder fine-tune: %s", summary["vae_psnr_decoder"])
    summary["times"] = times
    if not args.no_export:
        summary["export"] = export(p, vae.cpu(), dit_state, args.out)
        if causal_state is not None:
            summary["export_causal"] = export_causal(p, causal_state, args.causal_out)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.eval and not args.no_export:
        sys.path.insert(0, str(REPO / "benchmarks"))
        import eval_default_model  # noqa: PLC0415

        eval_default_model.main(["--model", str(args.out), "--prompts", str(p.eval_prompts)])
    logger.info("finished: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
