"""The default-model training script runs end to end (smoke preset, < 90 s on CPU), resumes, and exports a
diffusers folder that vidrt and diffusers' WanPipeline both load and that gives the same frames in both."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from vidrt.testing import load_script

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    return load_script(ROOT / "tools/train_default_model.py")


@pytest.mark.slow
def test_smoke_trains_resumes_and_exports(tmp_path):
    pytest.importorskip("diffusers")
    import vidrt
    from diffusers import WanPipeline

    script = _load_script()
    work, out = tmp_path / "work", tmp_path / "model"
    assert script.main(["--preset", "smoke", "--workdir", str(work), "--out", str(out)]) == 0

    # the folder: diffusers layout, vidrt defaults, training provenance
    for name in ("model_index.json", "vidrt.json", "transformer/config.json", "vae/config.json",
                 "text_encoder/config.json", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json"):
        assert (out / name).is_file(), name
    defaults = json.loads((out / "vidrt.json").read_text())
    assert defaults["max_sequence_length"] == 32 and defaults["_training"]["dit_step"] == 6
    vae_cfg = json.loads((out / "vae/config.json").read_text())
    assert len(vae_cfg["latents_std"]) == vae_cfg["z_dim"] and vae_cfg["latents_std"] != [1.0] * vae_cfg["z_dim"]

    # the long-window phase trains the encoder too (new latents, new statistics, written to the export)
    first_s, vae_s, dec_s = (torch.load(work / n, weights_only=False)
                             for n in ("vae.pt", "vae_temporal.pt", "vae_decoder.pt"))
    assert vae_s["step"] == 2 and vae_s["done"]
    assert not torch.equal(first_s["model"]["encoder.conv_in.weight"], vae_s["model"]["encoder.conv_in.weight"])
    assert vae_s["latent_stats"] != first_s["latent_stats"]
    assert vae_cfg["latents_std"] == pytest.approx(list(vae_s["latent_stats"]["latents_std"]))
    # frame-local convs: past taps zero in every phase (only the time resamplers look back)
    for state in (first_s, vae_s, dec_s):
        taps = {k: v for k, v in state["model"].items() if v.dim() == 5 and v.shape[2] == 3}
        local = [v for k, v in taps.items() if "time_conv" not in k]
        assert local and all(not v[:, :, :-1].any() and v[:, :, -1].any() for v in local)
        assert all(v[:, :, :-1].any() for k, v in taps.items() if "time_conv" in k)
    # the decoder fine-tune: encoder (so every latent the DiT saw) unchanged, decoder trained further
    assert dec_s["step"] == 3 and dec_s["done"]
    enc = [k for k in vae_s["model"] if k.startswith(("encoder.", "quant_conv."))]
    assert enc and all(torch.equal(vae_s["model"][k], dec_s["model"][k]) for k in enc)
    assert not torch.equal(vae_s["model"]["decoder.conv_out.weight"], dec_s["model"]["decoder.conv_out.weight"])

    # resume: two more DiT steps continue from the checkpoint at step 6 (the VAE is not retrained)
    assert script.main(["--preset", "smoke", "--workdir", str(work), "--out", str(out), "--dit-steps", "8"]) == 0
    assert torch.load(work / "dit.pt", weights_only=False)["step"] == 8
    assert json.loads((out / "vidrt.json").read_text())["_training"]["dit_step"] == 8

    # vidrt and diffusers load the same folder and make the same frames from the same initial latents
    pipe = vidrt.Pipeline.from_pretrained(out)
    prompt = "a red circle moves right on a gray background"
    shape = pipe.latent_shape(1, 5, 32, 32)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ours = pipe(prompt, num_frames=5, height=32, width=32, steps=3, guidance=4.0, latents=latents, progress=False)
    assert ours.frames.shape == (5, 32, 32, 3)
    ref = WanPipeline.from_pretrained(str(out), dtype=torch.float32)
    theirs = ref(prompt=prompt, negative_prompt="", num_frames=5, height=32, width=32, num_inference_steps=3,
                 guidance_scale=4.0, latents=latents.clone(), max_sequence_length=32, output_type="np").frames[0]
    theirs = (np.clip(theirs, 0, 1) * 255).round().astype(np.uint8)
    err = np.abs(ours.frames.astype(np.int16) - theirs.astype(np.int16))
    assert err.max() <= 2, f"vidrt and diffusers frames differ by up to {err.max()}"

    # the causal variant: a fine-tuned DiT (not the base weights) with num_frame_per_block, exported beside the
    # model, that streams chunk by chunk on the base model's VAE and text encoder
    causal = tmp_path / "model_causal"
    cfg = json.loads((causal / "transformer" / "config.json").read_text())
    assert cfg["num_frame_per_block"] == 1 and cfg["commit_context"] == "sinks"  # its training layout
    assert torch.load(work / "causal.pt", weights_only=False)["step"] == 4
    cpipe = vidrt.Pipeline.from_pretrained(out, transformer=causal / "transformer")
    assert cpipe.transformer.config.num_frame_per_block == 1 and cpipe.transformer.config.commit_context == "sinks"
    base_w = pipe.transformer.blocks[0].attn1.to_q.weight
    assert not torch.equal(cpipe.transformer.blocks[0].attn1.to_q.weight, base_w)
    parts = list(cpipe.stream(prompt, seconds=1.0, height=32, width=32, steps=2, guidance=1.0, progress=False))
    assert sum(p.frames.shape[0] for p in parts) >= 13 and len(parts) >= 3


def test_latent_weights_mark_the_latent_voxels_under_objects():
    """The DiT's object-weighted loss: a voxel weighs 1 + w exactly where its footprint (frame 0 alone, then
    4 frames; 8x8 pixels) touches an object or its 2-pixel rim."""
    script = _load_script()
    x = -torch.ones(1, 3, 9, 32, 32)                 # black background, 9 frames -> 3 latent frames
    x[:, 0, 0, 2:5, 2:5] = 1.0                       # frame 0: object in the top-left 8x8 footprint
    x[:, 1, 6, 19:22, 12:14] = 1.0                   # frame 6 (latent frame 2): object at pixel rows 19-21
    w = script.latent_weights(x, (1, 16, 3, 4, 4), 12.0)
    assert w.shape == (1, 1, 3, 4, 4)
    expected = torch.ones(3, 4, 4)
    expected[0, 0, 0] = 13.0
    expected[2, 2, 1] = 13.0                         # rows 19-21 (+ rim 17-23) -> row 2; cols 12-13 (+ rim 10-15)
    assert torch.equal(w[0, 0], expected)
    assert torch.equal(script.latent_weights(x, (1, 16, 3, 4, 4), 0.0), torch.ones(1, 1, 3, 4, 4))
    with pytest.raises(ValueError, match="latent frames"):
        script.latent_weights(x[:, :, :8], (1, 16, 3, 4, 4), 12.0)
    # the weighted loss is plain MSE when the weights are uniform, and follows the weighted voxels otherwise
    pred, target = torch.zeros(1, 16, 3, 4, 4), torch.ones(1, 16, 3, 4, 4)
    assert float(script.weighted_mse(pred, target, torch.ones_like(w))) == pytest.approx(1.0)
    target[:, :, 0, 0, 0] = 3.0                      # error 9 on the object voxel, 1 elsewhere
    loss = float(script.weighted_mse(pred, target, w))
    assert loss == pytest.approx((13 * 9 + 13 * 1 + 46 * 1) / (13 + 13 + 46))  # voxels: 2 objects, 46 background


def test_fade_weights_fades_the_object_weight_with_noise():
    """dit_fg_noise_power: the full object weight on clean latents, none (1 everywhere) on pure noise, (1 - s) ** power
    of the extra weight between; power 0 leaves the weights alone."""
    script = _load_script()
    w = torch.tensor([1.0, 13.0]).view(2, 1, 1, 1, 1).expand(2, 1, 3, 2, 2)
    s = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 3, 1, 1)            # per latent frame (the causal stage's layout)
    out = script.fade_weights(w, s, 2.0)
    torch.testing.assert_close(out[1, 0, :, 0, 0], torch.tensor([13.0, 1.0 + 12.0 * 0.25, 1.0]))
    assert torch.equal(out[0], torch.ones_like(out[0]))                  # background voxels stay at 1
    assert script.fade_weights(w, s, 0.0) is w


def test_frame_noise_levels_give_some_samples_a_level_per_latent_frame():
    """dit_frame_noise_prob: that share of samples gets independent per-frame levels (some frames clean, never all),
    the rest keep their one level; the per-token timesteps repeat each frame's level over its tokens."""
    script = _load_script()
    p = dataclasses_replace(script.PRESETS["smoke"], dit_frame_noise_prob=0.5, dit_frame_clean_prob=0.3)
    s = torch.full((400,), 0.5)
    levels, ts = script.frame_noise_levels(s, 5, 3, p, torch.Generator().manual_seed(0))
    assert levels.shape == (400, 1, 5, 1, 1) and ts.shape == (400, 15)
    lv = levels.view(400, 5)
    torch.testing.assert_close(ts, (lv * 1000).repeat_interleave(3, dim=1))
    per_frame = (lv != 0.5).any(dim=1)
    assert 0.4 < float(per_frame.float().mean()) < 0.6                      # about half the samples
    assert torch.equal(lv[~per_frame], torch.full_like(lv[~per_frame], 0.5))  # the rest: one level for the clip
    clean = lv[per_frame] == 0
    assert 0.2 < float(clean.float().mean()) < 0.35                          # ~0.3 of frames, less the forced one
    assert bool((~clean).any(dim=1).all())                                   # every sample trains a frame
    assert float(lv[per_frame][~clean].std()) > 0.1                          # independent levels
    off = dataclasses_replace(p, dit_frame_noise_prob=0.0)
    levels, _ = script.frame_noise_levels(s, 5, 3, off, torch.Generator().manual_seed(0))
    assert torch.equal(levels.view(400, 5), torch.full((400, 5), 0.5))


def test_frame_anchor_gives_one_clean_frame_and_the_clip_level_elsewhere():
    """dit_frame_anchor: per-frame samples get exactly one clean frame, anywhere, and the clip's own level on the
    other frames (the motion word, not a second clean frame, must say where the object goes)."""
    script = _load_script()
    p = dataclasses_replace(script.PRESETS["smoke"], dit_frame_noise_prob=1.0, dit_frame_anchor=True)
    s = torch.rand(600, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    levels, ts = script.frame_noise_levels(s, 5, 3, p, torch.Generator().manual_seed(0))
    lv = levels.view(600, 5)
    clean = lv == 0
    assert torch.equal(clean.sum(dim=1), torch.ones(600, dtype=torch.long))   # one anchor per sample
    torch.testing.assert_close(lv[~clean], s[:, None].expand(600, 5)[~clean])  # the clip's level elsewhere
    where = clean.float().mean(dim=0)
    assert float(where.min()) > 0.13 and float(where.max()) < 0.27            # anchors spread over the 5 frames
    torch.testing.assert_close(ts, (lv * 1000).repeat_interleave(3, dim=1))


def test_dit_stage_trains_with_frame_noise(tmp_path):
    """The DiT stage runs with per-frame noise levels (per-token timesteps through the bidirectional DiT)."""
    script = _load_script()
    p, vae, _ = _smoke_cache(script, None, dit_steps=3, dit_frame_noise_prob=1.0, dit_buckets=((5, 32, 32, 1),))
    calls, levels = [], script.frame_noise_levels
    script.frame_noise_levels = lambda *a: calls.append(a[1:3]) or levels(*a)
    state = script.train_dit(p, script.Checkpoints(tmp_path / "a"), vae, 0, torch.device("cpu"), None, None)
    assert state["step"] == 3 and state["done"]
    assert calls == [(2, 4 * 4 // 4)] * 3    # 2 latent frames of 4x4 latents at patch 2: 4 tokens each, every step
    assert all(torch.isfinite(v).all() for v in state["ema_dit"].values())


def test_binding_loss_clips_the_dit_and_the_text_encoder_each_on_its_own(tmp_path, monkeypatch):
    """Without the binding loss one gradient clip covers the DiT and the text encoder; with it each is clipped on
    its own, so the binding loss cannot set the DiT's clip factor."""
    script = _load_script()
    seen = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, *a, **k: seen.append(sum(x.numel() for x in params)) or clip(params, *a, **k))
    calls = {}
    for w in (0.0, 1.0):
        seen.clear()
        p, vae, _ = _smoke_cache(script, None, dit_steps=2, text_bind_weight=w, dit_buckets=((1, 32, 32, 1),))
        state = script.train_dit(p, script.Checkpoints(tmp_path / f"w{w}"), vae, 0, torch.device("cpu"), None, None)
        assert state["step"] == 2
        calls[w] = list(seen)
    n_dit, n_text = calls[1.0][:2]   # parameters seen by each clip: the DiT's, then the text encoder's
    assert calls[1.0] == [n_dit, n_text] * 2 and n_dit > n_text > 0
    assert calls[0.0] == [n_dit + n_text] * 2


def test_blend_latents_pairs_latent_and_frame_blends():
    """The decoder's blend phase: a blended latent's target is the same blend of the frames (same partner, same
    weight); latent noise leaves the target alone; a batch of one is refused."""
    script = _load_script()
    p = script.Preset("t", vae_z_dim=4, vae_smooth_blend=1.0, vae_smooth_noise=0.0)
    stats = {"latents_std": (1.0, 2.0, 3.0, 4.0)}
    z, x = torch.randn(3, 4, 2, 4, 4), torch.rand(3, 3, 5, 32, 32)
    zb, xb = script.blend_latents(z, x, p, np.random.default_rng(0), stats)
    # recover each sample's weight from the latents and check the frames used the same one
    for i, j in ((0, 2), (1, 0), (2, 1)):                     # partner = the previous clip of the batch
        lam = float(((zb[i] - z[i]) * (z[j] - z[i])).sum() / (z[j] - z[i]).pow(2).sum())
        assert 0.0 <= lam <= 1.0
        torch.testing.assert_close(zb[i], (1 - lam) * z[i] + lam * z[j], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(xb[i], (1 - lam) * x[i] + lam * x[j], rtol=1e-4, atol=1e-5)
    p0 = script.Preset("t", vae_z_dim=4, vae_smooth_blend=0.0, vae_smooth_noise=1.0)
    zn, xn = script.blend_latents(z, x, p0, np.random.default_rng(1), stats)
    assert torch.equal(xn, x) and 0 < float((zn - z).abs().max()) < 4 * 0.2 * 4.0
    with pytest.raises(ValueError, match="at least 2"):
        script.blend_latents(z[:1], x[:1], p, np.random.default_rng(0), stats)


def test_set_overrides_are_typed_and_recorded():
    """--set FIELD=VALUE: JSON values of the field's type (lists -> tuples), clear errors otherwise; the export
    records what differs from the named preset (this export's overrides first, then the DiT stage's)."""
    import dataclasses

    script = _load_script()
    full = script.PRESETS["full"]
    p = script.apply_overrides(full, ["dit_dim=192", "gen_guidance=2", "dit_buckets=[[1, 64, 64, 1]]"])
    assert (p.dit_dim, p.gen_guidance, p.dit_buckets) == (192, 2.0, ((1, 64, 64, 1),))
    assert script.apply_overrides(full, ["vae_decoder_base_dim=16"]).vae_decoder_base_dim == 16   # Optional[int]
    assert script.apply_overrides(full, ["vae_decoder_base_dim=null"]).vae_decoder_base_dim is None
    for bad, msg in (("dit_dim=abc", "takes a int"), ("nope=1", "expected FIELD=VALUE"), ("dit_dim", "expected"),
                     ("vae_decoder_base_dim=wide", "takes a Optional")):
        with pytest.raises(SystemExit, match=msg):
            script.apply_overrides(full, [bad])
    # dit_prompts: training prompts only, checked once when the preset is built
    from vidrt.errors import PromptError
    from vidrt.world import held_out_prompts

    one = script.apply_overrides(full, ['dit_prompts=["a red circle moves right on a gray background"]'])
    assert one.dit_prompts == ("a red circle moves right on a gray background",)
    with pytest.raises(SystemExit, match="held-out prompt"):
        script.apply_overrides(full, [f'dit_prompts=["{held_out_prompts()[0]}"]'])
    with pytest.raises(PromptError, match="dragon"):
        script.apply_overrides(full, ['dit_prompts=["a red dragon"]'])
    # the DiT stage's record counts for DiT fields only (not its run-time flags or generation defaults)
    trained = dataclasses.asdict(script.apply_overrides(full, ["dit_steps=20000", "gen_guidance=7.0",
                                                               "causal_steps=0"]))
    assert script.preset_changes(p, trained) == {"dit_dim": 192, "gen_guidance": 2.0,
                                                 "dit_buckets": ((1, 64, 64, 1),), "dit_steps": 20000}
    assert script.preset_changes(full, {}) == {}


def test_regularised_latents_pool_together_and_get_relative_noise():
    """Run 4's VAE regularisers: scale equivariance pools latent and frames 2x in space together (frame count
    unchanged); latent noise has the asked std relative to the latent's own per-channel std and leaves the
    target alone; both off is the identity."""
    script = _load_script()
    z = torch.randn(2, 4, 3, 8, 6) * torch.tensor([1.0, 10.0, 0.1, 3.0]).view(1, 4, 1, 1, 1)
    x = torch.rand(2, 3, 9, 64, 48)
    rng = np.random.default_rng(0)
    same = script.regularise_latents(z, x, script.Preset("t"), rng)
    assert same[0] is z and same[1] is x
    zp, xp = script.regularise_latents(z, x, script.Preset("t", vae_scale_eq=1.0), rng)
    assert zp.shape == (2, 4, 3, 4, 3) and xp.shape == (2, 3, 9, 32, 24)
    torch.testing.assert_close(zp[1, 2, 1, 0, 0], z[1, 2, 1, :2, :2].mean())
    torch.testing.assert_close(xp[0, 1, 7, 3, 5], x[0, 1, 7, 6:8, 10:12].mean())
    big = torch.randn(64, 4, 2, 8, 8) * torch.tensor([1.0, 10.0, 0.1, 3.0]).view(1, 4, 1, 1, 1)
    zn, xn = script.regularise_latents(big, x, script.Preset("t", vae_latent_noise=0.1), rng)
    assert xn is x
    rel = (zn - big).transpose(0, 1).flatten(1).std(1) / big.transpose(0, 1).flatten(1).std(1)
    torch.testing.assert_close(rel, torch.full((4,), 0.1), rtol=0.1, atol=0)
    # ramped in: half strength halfway through the ramp, none at step 0
    zh, _ = script.regularise_latents(big, x, script.Preset("t", vae_latent_noise=0.1), rng, noise_scale=0.5)
    rel = (zh - big).transpose(0, 1).flatten(1).std(1) / big.transpose(0, 1).flatten(1).std(1)
    torch.testing.assert_close(rel, torch.full((4,), 0.05), rtol=0.1, atol=0)
    assert script.regularise_latents(big, x, script.Preset("t", vae_latent_noise=0.1), rng, noise_scale=0.0)[0] is big


class _PoolVAE:
    """A stand-in VAE: encode = 8x average pooling, decode = nearest upsampling, optionally through a
    nonlinearity on the latent (``bend``), to check what the blend test measures."""

    def __init__(self, bend: bool):
        self.bend = bend

    def encode(self, x):
        z = torch.nn.functional.avg_pool3d(x, (1, 8, 8))
        return z.pow(3) if self.bend else z

    def decode(self, z):
        z = z.sign() * z.abs().pow(1 / 3) if self.bend else z
        return torch.nn.functional.interpolate(z, scale_factor=(1, 8, 8), mode="nearest")


def test_blend_psnr_separates_linear_from_bent_decoders():
    """A decoder that is linear in the latent decodes the mean of two latents exactly as the mean of the two
    round trips, so its blend PSNR is no worse than the round trip's; bending the latent space (same round
    trip) costs blend PSNR: the property run 3's VAE lacked."""
    script = _load_script()
    lin = script.blend_psnr(_PoolVAE(False), 6, torch.device("cpu"))
    bent = script.blend_psnr(_PoolVAE(True), 6, torch.device("cpu"))
    assert lin["pairs"] == 6 and lin["recon_psnr"] == pytest.approx(bent["recon_psnr"], abs=0.2)
    assert lin["blend_psnr"] >= lin["recon_psnr"] - 0.5
    assert bent["blend_psnr"] < lin["blend_psnr"] - 1.0


@pytest.mark.slow
def test_probe_vae_scores_a_short_image_dit_on_a_vae(tmp_path):
    """tools/probe_vae.py: blend test + the training script's DiT stage on images only, scored by the eval
    script; refuses an unfinished VAE checkpoint."""
    script = _load_script()
    work = tmp_path / "work"
    assert script.main(["--preset", "smoke", "--workdir", str(work), "--stage", "vae",
                        "--set", "vae_scale_eq=0.5"]) == 0
    tool = load_script(ROOT / "tools/probe_vae.py")
    res = tool.probe(work / "vae.pt", tmp_path / "probe", preset="smoke", steps=3, prompts=2, pairs=2,
                     recon_prompts=2, recon_sizes="1x32x32,5x32x32")
    assert res["vae_changed_from_preset"] == {"vae_scale_eq": 0.5} and res["dit_steps"] == 3
    assert set(res["recon"]) == {"1x32x32", "5x32x32"} and res["vae_config"]["base_dim"] == 4
    assert all(np.isfinite(r["psnr"]) and 0 <= r["truth_through_vae"]["adherence"] <= 1 for r in res["recon"].values())
    assert res["size"] == "1x32x32" and res["prompts"] == 2 and 0.0 <= res["generated"]["adherence"] <= 1.0
    assert res["blend"]["pairs"] == 2 and np.isfinite(res["blend"]["blend_psnr"])
    dit = torch.load(tmp_path / "probe" / "dit.pt", weights_only=False)
    assert dit["step"] == 3 and dit["preset"]["dit_buckets"] == ((1, 32, 32, 1),)
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["dit_steps"] == 3
    state = torch.load(work / "vae.pt", weights_only=False)
    state["done"] = False
    torch.save(state, tmp_path / "unfinished.pt")
    with pytest.raises(SystemExit, match="not a finished VAE"):
        tool.probe(tmp_path / "unfinished.pt", tmp_path / "p2", preset="smoke", steps=1)


def test_probe_vae_reconstruction_reads_a_model_folder_and_its_stage_checkpoint_alike(tmp_path):
    """probe_vae --recon-only: the eval's PSNR and truth-through-the-VAE scores, the same for the shipped VAE read
    from its model folder and from the stage checkpoint --vae-from makes of it; the shipped VAE's numbers are
    those of benchmarks/results/default_model.md (images ~32 dB, presence near 1)."""
    script = _load_script()
    tool = load_script(ROOT / "tools/probe_vae.py")
    folder = ROOT / "runtime" / "assets" / "default"
    ck = script.Checkpoints(tmp_path / "work")
    script.write_vae_from_export(folder, script.PRESETS["gpu"], ck)
    kw = dict(recon_prompts=2, recon_sizes="1x64x64,5x64x64", recon_only=True)
    a = tool.probe(folder, tmp_path / "a", **kw)
    b = tool.probe(tmp_path / "work" / "vae.pt", tmp_path / "b", **kw)
    assert a["vae_config"] == b["vae_config"] and a["vae_parameters"] == b["vae_parameters"] == 1_467_607
    for size in ("1x64x64", "5x64x64"):
        assert a["recon"][size]["psnr"] == pytest.approx(b["recon"][size]["psnr"], abs=1e-3)
        assert a["recon"][size]["truth_through_vae"] == b["recon"][size]["truth_through_vae"]
    assert a["recon"]["1x64x64"]["psnr"] > 29 and a["recon"]["1x64x64"]["truth_through_vae"]["presence"] >= 0.9
    assert json.loads((tmp_path / "a" / "probe.json").read_text())["recon_prompts"] == 2
    with pytest.raises(SystemExit, match="--recon-only"):
        tool.probe(folder, tmp_path / "c", recon_prompts=1, recon_sizes="1x64x64")


def _smoke_cache(script, renderer, **changes):
    import dataclasses
    p = dataclasses.replace(script.PRESETS["smoke"], **changes)
    torch.manual_seed(0)
    vae = script.make_vae(p).eval().requires_grad_(False)
    return p, vae, script.LatentCache(p, renderer)


def test_batched_data_feed_is_the_same_stream_with_or_without_worker_processes():
    """data_batch > 0 (the GPU path): new clips come a batch of one bucket at a time, join the cache FEED_LAG
    steps after they are drawn, and are the same clips whether rendered inline or by worker processes; a batch
    encoded in one VAE call matches clips encoded one at a time."""
    script = _load_script()
    caches = []
    for workers in (0, 2):
        renderer = script.Renderer(workers)
        try:
            p, vae, cache = _smoke_cache(script, renderer, data_batch=3, new_clips_per_step=1.5)
            rng = np.random.default_rng(7)
            sizes = []
            for _ in range(8):
                cache.feed(vae, rng, torch.device("cpu"))
                sizes.append(cache.added)
        finally:
            renderer.close()
        caches.append((cache, rng.random()))
        # 1.5 clips a step in batches of 3: a batch drawn on steps 2, 4, 6, 8, added FEED_LAG (4) steps later
        assert sizes == [0, 0, 0, 0, 0, 3, 3, 6]
        assert len(cache.pending) == 2
    (a, ra), (b, rb) = caches
    assert ra == rb   # the same random draws
    for bucket in a.buckets:
        assert len(a.items[bucket]) == len(b.items[bucket])
        for x, y in zip(a.items[bucket], b.items[bucket]):
            assert x[2] == y[2] and torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    # one VAE call for the batch vs one per clip: same latents (fp16 rounding) and masks
    bucket = next(k for k, v in a.items.items() if len(v) >= 3)
    frames, h, w = bucket
    x = torch.stack([script.render_clip(pr, frames, h, w, s) for pr, s in
                     (("a red circle moves right", 1), ("a blue square stays still", 2), ("a green triangle grows", 3))])
    _, vae, _ = _smoke_cache(script, None)
    batched = script.encode_for_dit(vae, x, ["p0", "p1", "p2"])
    for i, item in enumerate(batched):
        single = script.encode_for_dit(vae, x[i:i + 1], [f"p{i}"])[0]
        assert item[2] == single[2] == f"p{i}" and torch.equal(item[1], single[1])
        torch.testing.assert_close(item[0].float(), single[0].float(), atol=2e-3, rtol=2e-3)


def test_fit_dit_minutes_sets_the_stage_length_from_measured_speed(tmp_path, monkeypatch):
    """--fit-dit-minutes: after FIT_AFTER timed steps the DiT stage's length becomes what the measured speed does
    in the budget; the run ends there as a finished stage (schedule complete) and records the count; a finished
    stage's checkpoint stripped to its EMA weights is still loadable as finished (what a GPU run brings back)."""
    script = _load_script()
    monkeypatch.setattr(script, "FIT_AFTER", 6)
    renderer = script.Renderer(0)
    p, vae, _ = _smoke_cache(script, renderer, data_batch=2, new_clips_per_step=1.0, dit_steps=10_000)
    ck = script.Checkpoints(tmp_path)
    state = script.train_dit(p, ck, vae, 0, torch.device("cpu"), None, None, fit_minutes=0.1)
    assert state["done"] and state["step"] == state["steps"] and 6 < state["steps"] < 10_000
    saved = torch.load(tmp_path / "dit.pt", weights_only=False)
    assert saved["steps"] == state["steps"] and saved["cache"]["added"] >= state["steps"] - script.FEED_LAG
    # the same call again (a GPU call repeated with the same budget) returns the finished stage untouched; only a
    # budget clearly beyond the minutes it trained continues it (a warm restart of the schedule)
    same = script.train_dit(p, ck, vae, 0, torch.device("cpu"), None, None, fit_minutes=0.1)
    assert same["step"] == state["step"] and same["elapsed"] == state["elapsed"]
    assert not script.stage_continues(state, 10_000, 0.1)
    assert script.stage_continues({**state, "elapsed": 60 * 7.23}, 10_000, 10.8)
    assert not script.stage_continues({**state, "elapsed": 60 * 7.23}, 10_000, 7.2)
    assert script.stage_continues(state, state["step"] + 1, None) and not script.stage_continues(state, 6, None)
    # the causal stage fits its length the same way (--fit-causal-minutes) and the export records that count
    causal = script.train_causal(dataclasses_replace(p, causal_steps=10_000, causal_train_text=False), ck, vae, state,
                                 0, torch.device("cpu"), None, fit_minutes=0.05)
    assert causal["done"] and causal["step"] == causal["steps"] and 6 < causal["steps"] < 10_000
    # causal_train_text=False: the DiT trains against the frozen text encoder it will run with
    assert all(torch.equal(causal["ema_text"][k], state["ema_text"][k]) for k in state["ema_text"])
    assert not all(torch.equal(causal["ema_dit"][k], state["ema_dit"][k]) for k in state["ema_dit"])
    pytest.importorskip("diffusers")
    info = script.export_causal(p, causal, tmp_path / "causal_model")
    assert info["causal_steps_planned"] == causal["steps"] == info["causal_step"]
    # export_causal_dtype=int8: the block linears stored as int8 rows (vidrt.quant.storage); vidrt reads back the
    # dequantized weights with the causal config kept
    from vidrt.checkpoints.load import load_transformer
    from vidrt.quant import dequantize, quantize_int8

    assert script.export_causal(dataclasses_replace(p, export_causal_dtype="int8"), causal,
                                tmp_path / "causal_int8")["stored_as"] == "int8"
    a, b = (load_transformer(tmp_path / d / "transformer") for d in ("causal_model", "causal_int8"))
    assert b.config.num_frame_per_block == a.config.num_frame_per_block == p.causal_chunk
    w = a.blocks[0].attn1.to_q.weight
    assert torch.equal(b.blocks[0].attn1.to_q.weight, dequantize(*quantize_int8(w)))
    assert not torch.equal(b.blocks[0].attn1.to_q.weight, w)
    with pytest.raises(SystemExit, match="export_causal_dtype='int4'"):
        script.export_causal(dataclasses_replace(p, export_causal_dtype="int4"), causal, tmp_path / "x")
    slim = {k: saved[k] for k in ("ema_dit", "ema_text", "step", "steps", "done", "elapsed", "preset")}
    torch.save(slim, tmp_path / "dit.pt")
    # --preset-from: the stripped checkpoint (what a GPU arm brings back) carries its whole recipe, with the fitted
    # step count as the stage's length
    recorded = script.recorded_preset(tmp_path / "dit.pt")
    assert recorded == dataclasses_replace(p, dit_steps=state["steps"]) and recorded != script.PRESETS["smoke"]
    torch.save({"step": 1}, tmp_path / "bare.pt")
    with pytest.raises(SystemExit, match="records no preset"):
        script.recorded_preset(tmp_path / "bare.pt")
    with pytest.raises(SystemExit, match="not a readable stage checkpoint"):
        script.recorded_preset(tmp_path / "missing.pt")
    again = script.train_dit(dataclasses_replace(p, dit_steps=state["steps"]), ck, vae, 0, torch.device("cpu"),
                             None, None)
    assert again["step"] == state["step"] and "opt" not in again
    # the export records the fitted count as the planned one (not the --dit-steps the run started with)
    pytest.importorskip("diffusers")
    info = script.export(dataclasses_replace(p, dit_steps=script.PRESETS["smoke"].dit_steps), vae, again,
                         tmp_path / "model")
    assert info["dit_steps_planned"] == state["steps"] == info["dit_step"] and info["dit_done"]
    assert info["changed_from_preset"]["dit_steps"] == state["steps"]


def dataclasses_replace(p, **kw):
    import dataclasses
    return dataclasses.replace(p, **kw)


def test_gpu_preset_is_the_shipped_recipe():
    """The gpu preset: the frame-local VAE recipe, the 192-dim / 6-layer DiT (3.50 M parameters, the shipped
    model's), batched data; run 3's CPU recipe stays the full preset."""
    script = _load_script()
    gpu, full = script.PRESETS["gpu"], script.PRESETS["full"]
    assert gpu.vae_frame_local and gpu.vae_temporal_steps > 0 and gpu.data_batch > 0 and full.data_batch == 0
    assert sum(x.numel() for x in script.make_dit(gpu).parameters()) == pytest.approx(3.50e6, rel=0.01)
    assert sum(x.numel() for x in script.make_dit(full).parameters()) == pytest.approx(1.11e6, rel=0.01)
    assert script.encoder_checkpoint(gpu) == "vae_temporal.pt"


def test_dit_init_starts_a_new_stage_from_an_earlier_one(tmp_path):
    """--dit-init: the DiT stage starts from another run's EMA weights (fresh optimizer, data and schedule), records
    where it came from, and a checkpoint of another architecture stops with the fix named."""
    script = _load_script()
    p, vae, _ = _smoke_cache(script, None, dit_steps=3)
    first = script.train_dit(p, script.Checkpoints(tmp_path / "a"), vae, 0, torch.device("cpu"), None, None)
    slim = {k: first[k] for k in ("ema_dit", "ema_text", "step", "elapsed")}
    # zero steps on top: the earlier stage is taken as this run's finished one -- same weights, its own record
    again = script.train_dit(dataclasses_replace(p, dit_steps=0), script.Checkpoints(tmp_path / "b"), vae, 0,
                             torch.device("cpu"), None, None, init={**slim, "init": {"step": 7}})
    assert all(torch.equal(again["ema_dit"][k], first["ema_dit"][k]) for k in first["ema_dit"])
    assert again["done"] and again["step"] == again["steps"] == 3 and again["init"] == {"step": 7}
    assert script.Checkpoints(tmp_path / "b").load("dit.pt")["step"] == 3
    info = script.export(dataclasses_replace(p, dit_steps=0), vae, again, tmp_path / "export")   # records that stage
    assert (info["dit_step"], info["dit_steps_planned"], info["dit_init"]) == (3, 3, {"step": 7})
    assert info["changed_from_preset"]["dit_steps"] == 3
    more = script.train_dit(p, script.Checkpoints(tmp_path / "c"), vae, 0, torch.device("cpu"), None, None, init=slim)
    assert more["step"] == 3 and not torch.equal(more["ema_dit"]["proj_out.weight"], first["ema_dit"]["proj_out.weight"])
    assert not all(torch.equal(more["ema_text"][k], first["ema_text"][k]) for k in first["ema_text"])
    # dit_train_text=False: the DiT continues against the text encoder it started with (the one the shipped causal
    # DiT runs on), which comes out bit for bit
    frozen = script.train_dit(dataclasses_replace(p, dit_train_text=False), script.Checkpoints(tmp_path / "f"), vae, 0,
                              torch.device("cpu"), None, None, init=slim)
    assert all(torch.equal(frozen["ema_text"][k], first["ema_text"][k]) for k in first["ema_text"])
    assert not torch.equal(frozen["ema_dit"]["proj_out.weight"], first["ema_dit"]["proj_out.weight"])
    with pytest.raises(SystemExit, match="does not fit this preset's DiT"):
        script.train_dit(dataclasses_replace(p, dit_dim=64), script.Checkpoints(tmp_path / "d"), vae, 0,
                         torch.device("cpu"), None, None, init=slim)
    torch.save({"nope": 1}, tmp_path / "bad.pt")
    with pytest.raises(SystemExit, match="not a DiT stage checkpoint"):
        script.main(["--preset", "smoke", "--workdir", str(tmp_path / "e"), "--dit-init", str(tmp_path / "bad.pt"),
                     "--stage", "all", "--no-export"])


def test_dit_init_from_the_exported_embedded_model(tmp_path):
    """--dit-init on an exported folder (the embedded model): its EMA DiT and text encoder load strictly into the
    recipe its vidrt.json records (so training continues from the package on a later GPU with the right flags),
    with its step count; its latent channels are the shipped VAE's."""
    import vidrt.pipeline as P

    script = _load_script()
    folder = P.embedded_model_path()
    if not (folder / "vidrt.json").is_file():
        pytest.skip("this build has no embedded model")
    info = json.loads((folder / "vidrt.json").read_text())["_training"]
    state = script.exported_dit_state(folder)
    p = script.Preset(**state["preset"])
    assert p == script.apply_overrides(dataclasses_replace(script.PRESETS[info["preset"]]),
                                       [f"{k}={json.dumps(v)}" for k, v in info["changed_from_preset"].items()])
    dit = script.make_dit(p)
    dit.load_state_dict(state["ema_dit"])
    script.make_text_encoder(p, len(script.make_tokenizer(p))).load_state_dict(state["ema_text"])
    assert state["step"] == info["dit_step"] > 0
    assert dit.config.patch_size == (1, 1, 1) and p.export_dit_dtype == "fp16"
    assert dit.config.in_channels == json.loads((folder / "vae" / "config.json").read_text())["z_dim"]
    with pytest.raises(SystemExit, match="not an exported default-model folder"):
        script.exported_dit_state(tmp_path)


def test_carried_bound_dit_fits_its_recipe_and_its_encoder_binds():
    """tools/carry/s23_bound (what the next GPU lease continues): its EMA DiT and text encoder load strictly into the
    recipe its vidrt.json records, on the shipped VAE's latents, and its encoder binds -- on the 72 held-out prompts
    the binding loss is near its floor (ln 3: each object word names its colour, shape and motion words a third
    each), where the shipped encoder, trained without that loss, is far off."""
    import math

    import vidrt.pipeline as P
    from vidrt.world.grammar import held_out_prompts

    script = _load_script()
    folder = ROOT / "tools" / "carry" / "s23_bound"
    if not (folder / "vidrt.json").is_file():
        pytest.skip("no carried DiT in this checkout")

    def binding_loss(state: dict) -> float:
        p = script.Preset(**state["preset"])
        tok = script.make_tokenizer(p)
        text = script.make_text_encoder(p, len(tok))
        text.load_state_dict(state["ema_text"])
        text.eval()
        prompts = held_out_prompts()
        with torch.no_grad():
            return script.text_binding_loss(tok, text, prompts, script.encode_text(tok, text, prompts,
                                                                                   p.max_text_len)).item()

    state = script.exported_dit_state(folder)
    p = script.Preset(**state["preset"])
    dit = script.make_dit(p)
    dit.load_state_dict(state["ema_dit"])
    assert state["step"] == 2630 and p.text_bind_weight == 1.0 and p.dit_layers == 8
    shipped_vae = json.loads((P.embedded_model_path() / "vae" / "config.json").read_text())
    assert json.loads((folder / "vae" / "config.json").read_text()) == shipped_vae
    assert dit.config.in_channels == shipped_vae["z_dim"]
    bound, shipped = binding_loss(state), binding_loss(script.exported_dit_state(P.embedded_model_path()))
    assert math.log(3) < bound < 1.3 and shipped > 3.0   # measured 1.197 and 4.059


def test_vae_from_the_exported_embedded_model(tmp_path):
    """--vae-from: the embedded model's VAE becomes a workdir's finished VAE chain (the DiT stages then run on a
    machine without the run's checkpoints, e.g. a lent GPU); a VAE of another size stops with the problem named."""
    import vidrt.pipeline as P
    from safetensors.torch import load_file

    script = _load_script()
    folder = P.embedded_model_path()
    if not (folder / "model_index.json").is_file():
        pytest.skip("this build has no embedded model")
    p, ck = script.PRESETS["gpu"], script.Checkpoints(tmp_path)
    script.write_vae_from_export(folder, p, ck)
    vae = script.train_encoder(p, ck, 0, torch.device("cpu"), None)
    ref = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(vae.state_dict()[k], ref[k]) for k in ref)
    cfg = json.loads((folder / "vae" / "config.json").read_text())
    assert list(vae.config.latents_std) == pytest.approx(cfg["latents_std"])
    with pytest.raises(SystemExit, match="does not fit this preset"):
        script.write_vae_from_export(folder, script.PRESETS["smoke"], script.Checkpoints(tmp_path / "s"))


def test_export_dit_in_fp16_halves_it_and_loads_everywhere(tmp_path):
    """export_dit_dtype=fp16: the DiT's safetensors are fp16 (half the bytes), vidrt upcasts them on load and
    makes nearly the frames of the fp32 export; so with export_vae_dtype / export_text_dtype=fp16 for the VAE and
    the text encoder; an unknown dtype stops with the choices named."""
    pytest.importorskip("diffusers")
    from safetensors import safe_open

    import vidrt

    script = _load_script()
    p, vae, _ = _smoke_cache(script, None, dit_steps=2)
    state = script.train_dit(p, script.Checkpoints(tmp_path / "w"), vae, 0, torch.device("cpu"), None, None)
    frames, sizes = {}, {}
    for dt in ("fp32", "fp16", "all16"):   # all16: the VAE and the text encoder in fp16 too
        out = tmp_path / dt
        rest = "fp16" if dt == "all16" else "fp32"
        script.export(dataclasses_replace(p, export_dit_dtype="fp32" if dt == "fp32" else "fp16",
                                          export_vae_dtype=rest, export_text_dtype=rest), vae, state, out)
        sizes[dt] = {c: sum(f.stat().st_size for f in (out / c).glob("*.safetensors"))
                     for c in ("transformer", "vae", "text_encoder")}
        for c, key in (("transformer", "proj_out.weight"), ("vae", "decoder.conv_out.weight"),
                       ("text_encoder", "shared.weight")):
            with safe_open(str(next((out / c).glob("*.safetensors"))), framework="pt") as f:
                stored = torch.float32 if dt == "fp32" or (dt == "fp16" and c != "transformer") else torch.float16
                assert f.get_tensor(key).dtype == stored, (dt, c)
        pipe = vidrt.Pipeline.from_pretrained(out)
        assert pipe.transformer.proj_out.weight.dtype == torch.float32
        assert pipe.vae.decoder.conv_out.weight.dtype == torch.float32
        frames[dt] = pipe("a red circle moves right", num_frames=5, height=32, width=32, steps=2, seed=0,
                          progress=False).frames.astype(np.int16)
    assert sizes["fp16"]["transformer"] < 0.55 * sizes["fp32"]["transformer"]
    assert sizes["all16"]["vae"] < 0.55 * sizes["fp32"]["vae"]
    assert sizes["all16"]["text_encoder"] < 0.55 * sizes["fp32"]["text_encoder"]
    assert np.abs(frames["fp16"] - frames["fp32"]).max() <= 3
    assert np.abs(frames["all16"] - frames["fp32"]).max() <= 4
    # diffusers loads the all-fp16 folder too (upcast) and makes vidrt's frames from the same latents
    from diffusers import WanPipeline

    pipe = vidrt.Pipeline.from_pretrained(tmp_path / "all16")
    latents = torch.randn(pipe.latent_shape(1, 5, 32, 32), generator=torch.Generator().manual_seed(0))
    kw = dict(num_frames=5, height=32, width=32)
    ours = pipe("a red circle moves right", **kw, steps=2, guidance=3.0, latents=latents, progress=False).frames
    theirs = WanPipeline.from_pretrained(str(tmp_path / "all16"), dtype=torch.float32)(
        prompt="a red circle moves right", negative_prompt="", **kw, num_inference_steps=2, guidance_scale=3.0,
        latents=latents.clone(), max_sequence_length=32, output_type="np").frames[0]
    theirs = (np.clip(theirs, 0, 1) * 255).round().astype(np.int16)
    assert np.abs(ours.astype(np.int16) - theirs).max() <= 2
    with pytest.raises(SystemExit, match="use one of fp32, fp16"):
        script.diffusers_dit(dataclasses_replace(p, export_dit_dtype="int4"), state)
    with pytest.raises(SystemExit, match="export_vae_dtype='bf16': use one of fp32, fp16"):
        script.export(dataclasses_replace(p, export_vae_dtype="bf16"), vae, state, tmp_path / "bad")


def test_dit_init_across_patch_sizes_keeps_patch_embedding_and_output_meaning():
    """--dit-init from a patch-2 DiT into a patch-1 one: a token of the new grid embeds like a uniform 2x2
    patch of the old one, and the new output is the mean of the old one over its 2x2 sub-positions."""
    script = _load_script()
    from vidrt.models.dit import DiTConfig, WanDiT

    cfg = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=8, freq_dim=8,
               ffn_dim=16, num_layers=1)
    old = WanDiT(DiTConfig(patch_size=(1, 2, 2), **cfg))
    new = WanDiT(DiTConfig(patch_size=(1, 1, 1), **cfg))
    state = script.resize_patch(old.state_dict(), new)
    new.load_state_dict(state)
    x = torch.randn(1, 4, 2, 3, 5)
    up = x.repeat_interleave(2, 3).repeat_interleave(2, 4)                          # each pixel a uniform 2x2 patch
    torch.testing.assert_close(new.patch_embedding(x), old.patch_embedding(up), rtol=1e-5, atol=1e-5)
    h = torch.randn(3, 16)
    o = old.proj_out(h).reshape(3, 1, 2, 2, 4)                                     # (pt, ph, pw, c) per token
    torch.testing.assert_close(new.proj_out(h), o.mean((2, 3)).reshape(3, 4), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in script.resize_patch(old.state_dict(), old).items())


def test_dit_object_probs_set_the_mix_of_object_counts():
    """dit_object_probs: the DiT's training prompts come in the asked shares of 1 / 2 / 3 objects (never a
    held-out triple); () keeps the grammar's sampler, where held-out redraws leave 3-object scenes ~21 %."""
    from vidrt.world.grammar import is_held_out, parse

    script = _load_script()

    def counts(**changes) -> np.ndarray:
        _, _, cache = _smoke_cache(script, None, **changes)
        prompts, _ = cache._submit(cache.buckets[0], 600, np.random.default_rng(3))
        assert not any(is_held_out(pr) for pr in prompts)
        return np.bincount([len(parse(pr).objects) for pr in prompts], minlength=4)[1:] / len(prompts)

    only3 = counts(dit_object_probs=(0, 0, 1))
    assert only3.tolist() == [0.0, 0.0, 1.0]
    even = counts(dit_object_probs=(1, 1, 1))
    assert np.abs(even - 1 / 3).max() < 0.06
    default = counts()
    assert 0.15 < default[2] < 0.27 and default[0] > 0.38   # the grammar's mix, 3-object scenes the rarest
    with pytest.raises(SystemExit, match="dit_object_probs"):
        script.apply_overrides(script.PRESETS["smoke"], ["dit_object_probs=[1, 1]"])


def test_causal_windows_hold_k_context_chunks_cut_as_the_stream_sees_them():
    """causal_context_chunks: a training window is [sink | k previous | current] with k drawn per batch, the chunks
    after the sink consecutive and chunk-aligned, their RoPE positions those frames' (plus a gap); (1,) is the
    three-chunk layout of sessions <= 15."""
    import dataclasses

    script = _load_script()
    c = 2
    for choices, sizes in (((1,), {3}), ((1, 2, 3), {3, 4, 5})):
        p = dataclasses.replace(script.PRESETS["smoke"], causal_chunk=c, causal_batch=2, causal_context_chunks=choices)
        cache = script.LongClipCache(p)
        t_len = 13
        frame = torch.arange(t_len, dtype=torch.float16).view(1, t_len, 1, 1).expand(4, t_len, 2, 2)
        cache.items[t_len] = [(frame.clone(), torch.zeros(1, t_len, 2, 2, dtype=torch.float16), "a red circle grows")]
        rng = np.random.default_rng(0)
        seen = set()
        for _ in range(60):
            z, w, prompts, pos = cache.batch(rng)
            chunks = z.shape[2] // c
            seen.add(chunks)
            assert z.shape[2] == len(pos) == w.shape[2] and z.shape[2] % c == 0
            src = z[0, 0, :, 0, 0].long().tolist()      # which latent frame each position holds
            assert src[:c] == list(range(c))            # the sink: the clip's first chunk
            rest = src[c:]
            assert rest == list(range(rest[0], rest[0] + len(rest))) and rest[0] % c == 0
            gap = pos[c] - rest[0]
            assert gap >= 0 and pos[c:] == [f + gap for f in rest]
        assert seen == sizes


def _vae_then_decoder_preset(script, decoder_steps: int):
    """The smoke preset cut to its VAE stage and one decoder phase (no long-window, blend or temporal phases)."""
    import dataclasses

    return dataclasses.replace(script.PRESETS["smoke"], vae_temporal_steps=0, vae_decoder_steps=decoder_steps,
                               vae_long_steps=0, vae_smooth_steps=0, checkpoint_minutes=0)


def test_anchored_encoder_decoder_phase_keeps_latents_near_the_base(tmp_path):
    """vae_encoder_anchor > 0: the decoder phase trains the encoder too, pulled to the base encoder's latents
    (the latent statistics, hence every latent a DiT learnt, stay the base's); a strong anchor drifts far less
    than a negligible one, and 0 keeps the encoder frozen."""
    import dataclasses

    script = _load_script()
    dev = torch.device("cpu")
    base_p = _vae_then_decoder_preset(script, decoder_steps=12)
    ck0 = script.Checkpoints(tmp_path / "base")
    base = script.train_encoder(base_p, ck0, 0, dev, None)
    x = script.render_clip("a red circle moves right on a gray background", 5, 32, 32, 3)[None]
    with torch.no_grad():
        z0 = base.encode_distribution(x).mean
    std = torch.tensor(base.config.latents_std).view(1, -1, 1, 1, 1)
    drift = {}
    for weight in (0.0, 1e-6, 1e3):
        ck = script.Checkpoints(tmp_path / f"w{weight}")
        ck.save("vae.pt", ck0.load("vae.pt"))
        p = dataclasses.replace(base_p, vae_encoder_anchor=weight)
        vae = script.train_decoder(p, ck, 0, dev, None)
        assert vae.config.latents_std == base.config.latents_std
        with torch.no_grad():
            drift[weight] = float(((vae.encode_distribution(x).mean - z0) / std).pow(2).mean().sqrt())
        dec = ck.load("vae_decoder.pt")
        assert dec["done"] and dec["latent_stats"] == ck0.load("vae.pt")["latent_stats"]
    assert drift[0.0] == 0.0                       # frozen encoder: the very same latents
    assert drift[1e-6] > 0 and drift[1e3] > 0       # anchored: the encoder trains too
    assert drift[1e3] < 0.5 * drift[1e-6], drift


def test_wider_decoder_phase_keeps_the_encoder_and_exports(tmp_path):
    """vae_decoder_base_dim: a decoder phase on a base VAE of another decoder width keeps the base's encoder (its
    latents bit for bit) and trains a fresh decoder of the new width; the export records decoder_base_dim and loads
    in vidrt and diffusers alike."""
    import dataclasses

    pytest.importorskip("diffusers")
    import vidrt
    from diffusers import AutoencoderKLWan

    script = _load_script()
    dev = torch.device("cpu")
    base_p = _vae_then_decoder_preset(script, decoder_steps=4)
    ck = script.Checkpoints(tmp_path / "w")
    base = script.train_encoder(base_p, ck, 0, dev, None)
    wide_p = dataclasses.replace(base_p, vae_decoder_base_dim=2 * base_p.vae_base_dim)
    wide = script.train_decoder(wide_p, ck, 0, dev, None)
    b, w = base.state_dict(), wide.state_dict()
    enc = [k for k in b if k.startswith(("encoder.", "quant_conv."))]
    assert enc and all(torch.equal(b[k], w[k]) for k in enc)
    assert w["decoder.conv_in.weight"].shape[0] == 2 * b["decoder.conv_in.weight"].shape[0]
    x = script.render_clip("a red circle moves right on a gray background", 5, 32, 32, 3)[None]
    y = wide.decode(wide.encode(x))
    assert y.shape == x.shape and torch.isfinite(y).all()
    # the script's export writes it, vidrt and diffusers load it and decode alike
    assert script.main(["--preset", "smoke", "--workdir", str(ck.dir), "--out", str(tmp_path / "m"),
                        "--set", f"vae_decoder_base_dim={wide_p.vae_decoder_base_dim}", "--set", "vae_temporal_steps=0",
                        "--set", "vae_long_steps=0", "--set", "vae_smooth_steps=0", "--vae-decoder-steps", "4",
                        "--dit-steps", "1", "--causal-steps", "0"]) == 0
    cfg = json.loads((tmp_path / "m" / "vae" / "config.json").read_text())
    assert cfg["decoder_base_dim"] == wide_p.vae_decoder_base_dim
    ours = vidrt.Pipeline.from_pretrained(tmp_path / "m").vae
    theirs = AutoencoderKLWan.from_pretrained(str(tmp_path / "m" / "vae"))
    z = ours.encode(x)
    with torch.no_grad():
        ref = theirs.decode(z, return_dict=False)[0]
    assert (ours.decode(z) - ref.clamp(-1, 1)).abs().max() < 1e-4


def test_recycled_context_is_the_models_own_estimate_and_leaves_other_chunks_alone():
    """causal_recycle: clean context chunks picked for recycling become x_s - s * v (the DiT's one-step estimate
    from noise level s in causal_recycle_sigma, told to the DiT as their timestep), noisy chunks keep their noise
    level in that forward, unpicked chunks come back bit-identical, and the DiT's train mode is restored."""
    script = _load_script()
    from vidrt.attention import MaskSpec

    class Fake(torch.nn.Module):
        def forward(self, x, ts, ctx, mask=None, frame_offset=None):
            self.seen = (x.clone(), ts.clone(), self.training)
            return torch.full_like(x, 0.5)

    c, frame_tokens, b = 2, 4, 3
    xt = torch.randn(b, 4, 3 * c, 2, 2)
    sig = torch.tensor([[0.0, 0.0, 0.7], [0.0, 0.4, 0.9], [0.0, 0.0, 0.3]])
    recycled = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    dit = Fake().train()
    out = script.recycle_context(dit, xt, sig, recycled, torch.zeros(b, 5, 8), MaskSpec.block_causal(c * frame_tokens,
                                 sink_chunks=1), list(range(3 * c)), c, frame_tokens, (0.2, 0.8),
                                 np.random.default_rng(0))
    xs, ts, training = dit.seen
    assert not training and dit.training
    ts = ts.view(b, 3, c * frame_tokens)
    assert (ts == ts[:, :, :1]).all()                      # one timestep per chunk
    s = ts[:, :, 0] / 1000
    for i in range(b):
        for k in range(3):
            got, was = out[i, :, k * c:(k + 1) * c], xt[i, :, k * c:(k + 1) * c]
            if recycled[i, k]:
                assert 0.2 <= float(s[i, k]) <= 0.8
                assert torch.allclose(got, xs[i, :, k * c:(k + 1) * c] - s[i, k] * 0.5, atol=1e-6)
                # the estimate's input was noised, not the clean chunk itself
                assert not torch.allclose(xs[i, :, k * c:(k + 1) * c], was)
            else:
                assert torch.equal(got, was) and abs(float(s[i, k]) - float(sig[i, k])) < 1e-6
    # nothing picked: no forward at all, the input returned as is
    dit.seen = None
    same = script.recycle_context(dit, xt, sig, torch.zeros_like(recycled), None, None, [], c, frame_tokens,
                                  (0.2, 0.8), np.random.default_rng(0))
    assert same is xt and dit.seen is None


def test_causal_stage_trains_with_recycled_context(tmp_path):
    """causal_recycle=1 runs end to end on the smoke preset (every clean context chunk recycled each step) and
    moves the DiT; the recipe is recorded in the stage's preset."""
    script = _load_script()
    renderer = script.Renderer(0)
    p, vae, _ = _smoke_cache(script, renderer)
    ck = script.Checkpoints(tmp_path)
    state = script.train_dit(p, ck, vae, 0, torch.device("cpu"), None, None)
    q = dataclasses_replace(p, causal_steps=3, causal_recycle=1.0)
    causal = script.train_causal(q, ck, vae, state, 0, torch.device("cpu"), None)
    assert causal["done"] and causal["step"] == 3 and causal["preset"]["causal_recycle"] == 1.0
    assert not all(torch.equal(causal["ema_dit"][k], state["ema_dit"][k]) for k in state["ema_dit"])


def test_dit_init_into_a_deeper_dit_computes_the_same_and_trains_the_added_blocks():
    """--dit-init from a 3-block DiT into a 5-block one: the old blocks keep their order (spread to 0, 2, 4), the
    added blocks start as the identity, so the grown DiT's output is the old one's; one backward pass reaches the
    added blocks' output projections."""
    script = _load_script()
    from vidrt.models.dit import DiTConfig, WanDiT

    cfg = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=8, freq_dim=8,
               ffn_dim=16, patch_size=(1, 2, 2))
    torch.manual_seed(0)
    old, new = WanDiT(DiTConfig(num_layers=3, **cfg)), WanDiT(DiTConfig(num_layers=5, **cfg))
    for prm in old.parameters():   # no zero-init output layer left: the check below must see every block's effect
        prm.data.normal_(0, 0.3)
    state = script.grow_depth(old.state_dict(), new)
    new.load_state_dict(state)
    assert torch.equal(state["blocks.2.attn1.to_q.weight"], old.state_dict()["blocks.1.attn1.to_q.weight"])
    assert torch.equal(state["blocks.4.ffn.net.2.weight"], old.state_dict()["blocks.2.ffn.net.2.weight"])
    assert not state["blocks.1.attn1.to_q.weight"].eq(0).all() and state["blocks.3.ffn.net.2.weight"].eq(0).all()
    x, t, ctx = torch.randn(1, 4, 3, 4, 6), torch.tensor([400.0]), torch.randn(1, 5, 8)
    ref = old(x, t, ctx)
    out = new(x, t, ctx)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert ref.abs().mean() > 0.1 and (ref - WanDiT(DiTConfig(num_layers=3, **cfg))(x, t, ctx)).abs().mean() > 0.1
    out.square().mean().backward()
    for j in (1, 3):
        blk = new.blocks[j]
        assert blk.attn1.to_out[0].weight.grad.abs().sum() > 0 and blk.ffn.net[2].weight.grad.abs().sum() > 0
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in script.grow_depth(old.state_dict(), old).items())


def test_binding_targets_name_each_object_words_colour_shape_and_motion():
    """text_bind_weight's targets: every word of an object phrase (any wording) maps to its own object's colour,
    shape and motion key word, at the position the tokenizer gives that word; 'and' and the background do not."""
    script = _load_script()
    prompt = "a red circle moves to the left and an orange square on a grey background"
    got = script.binding_targets(prompt)
    assert got == [(i, ("red", "circle", "left")) for i in range(7)] + [(i, ("orange", "square", "still"))
                                                                          for i in (8, 9, 10)]
    tok = script.make_tokenizer(script.PRESETS["smoke"])
    ids = tok(prompt)["input_ids"]
    assert tok.convert_ids_to_tokens(ids[:11]) == "a red circle moves to the left and an orange square".split()
    assert script.binding_targets("") == []
    three = script.binding_targets("a blue triangle bounces and a red circle grows and a cyan square moves up")
    assert three == [(i, ("blue", "triangle", "bounces")) for i in range(4)] + [
        (i, ("red", "circle", "grows")) for i in range(5, 9)] + [(i, ("cyan", "square", "up")) for i in range(10, 15)]


def test_text_binding_loss_teaches_shape_words_their_colour():
    """A tiny text encoder trained on the binding loss alone: the loss falls far below its start, and the state
    of each shape word in two-object prompts then names its own object's colour (through the tied embeddings)
    ahead of the other object's colour -- what the untrained encoder does at chance."""
    script = _load_script()
    from vidrt.models.text import TextEncoder
    from vidrt.world.grammar import held_out_prompts, parse, sample_train_prompt

    p = dataclasses_replace(script.PRESETS["smoke"], text_dim=64, text_layers=2, text_ff=128)
    tok = script.make_tokenizer(p)
    torch.manual_seed(0)
    text = script.make_text_encoder(p, len(tok))
    rng = np.random.default_rng(0)
    test = [sample_train_prompt(rng, num_objects=2) for _ in range(64)]

    def own_colour_wins() -> float:
        with torch.no_grad():
            h = script.encode_text(tok, text, test, p.max_text_len)
            logits = h @ text.get_input_embeddings().weight.T
        wins = []
        for b, pr in enumerate(test):
            objs, words = parse(pr).objects, pr.split()
            pos = [i for i, w in enumerate(words) if w in ("circle", "square", "triangle")]
            for k, i in enumerate(pos):
                own, other = (tok.convert_tokens_to_ids(o.color) for o in (objs[k], objs[1 - k]))
                wins.append(float(logits[b, i, own] > logits[b, i, other]))
        return float(np.mean(wins))

    probe_tool = load_script(ROOT / "tools/probe_text_binding.py")
    encoder = TextEncoder(tok, text, p.max_text_len)
    probe_train = [sample_train_prompt(rng, num_objects=int(rng.integers(1, 4))) for _ in range(400)]
    probe_test = held_out_prompts()
    probed_before = probe_tool.probe(encoder, probe_train, probe_test)
    before = own_colour_wins()
    text.train()
    opt = torch.optim.Adam(text.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        prompts = [sample_train_prompt(rng, num_objects=int(rng.integers(1, 4))) for _ in range(32)]
        loss = script.text_binding_loss(tok, text, prompts, script.encode_text(tok, text, prompts, p.max_text_len))
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    assert 0.3 < before < 0.7 and own_colour_wins() > 0.9
    # tools/probe_text_binding.py sees it: colour from the shape word on held-out 2 / 3-object prompts from what a
    # random encoder's context mixing gives to always (chance 1/8); the input embeddings stay at chance
    text.eval()
    probed = probe_tool.probe(encoder, probe_train, probe_test)
    colour = "colour from shape word"
    assert probed_before[colour][2] < 0.7 and probed_before[colour][3] < 0.5   # measured 0.50 / 0.31
    assert min(probed[colour][2], probed[colour][3]) > 0.9 and probed["shape from colour word"][3] > 0.9
    assert probe_tool.probe(encoder, probe_train, probe_test, layer="embedding")[colour][2] < 0.3


def test_dit_s_bands_restrict_the_training_noise_levels():
    """dit_s_bands: every training noise level falls in a band, drawn from the logit-normal restricted to them
    (an expert for the ends of the schedule, tools/expert_mix.py); () leaves the draw untouched."""
    script = _load_script()
    torch.manual_seed(0)
    s = torch.sigmoid(torch.randn(4000))
    assert script.in_bands(s, (), 0.0) is s
    bands = ((0.0, 0.3), (0.85, 1.0))
    r = script.in_bands(s.clone(), bands, 0.0)
    assert bool((((r >= 0) & (r <= 0.3)) | ((r >= 0.85) & (r <= 1))).all())
    kept = ((s <= 0.3) | (s >= 0.85))
    assert torch.equal(r[kept], s[kept])                 # draws already inside stay as they were
    # the restricted logit-normal: within the low band, its own shape (median of the in-band draws)
    low = r[r <= 0.3]
    assert abs(float(low.median()) - float(s[s <= 0.3].median())) < 0.02
    assert 0.78 < float((r <= 0.3).float().mean()) < 0.88   # logit-normal(0, 1) puts 19.8 % / 4.1 % in the bands
    p = script.apply_overrides(script.PRESETS["smoke"], ["dit_s_bands=[[0, 0.3], [0.85, 1]]"])
    assert p.dit_s_bands == bands
    for bad in ("dit_s_bands=[[0.3, 0.2]]", "dit_s_bands=[[0, 1.5]]", "dit_s_bands=[[0.1]]"):
        with pytest.raises(SystemExit, match="dit_s_bands"):
            script.apply_overrides(script.PRESETS["smoke"], [bad])
