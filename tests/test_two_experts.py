"""Two-expert checkpoints (Wan 2.2 A14B: a high-noise and a low-noise DiT split at boundary_ratio).

diffusers' WanPipeline is the oracle: same folder, text and initial latents -> the same latents and frames,
from the diffusers layout and from the original Wan 2.2 layout (high_noise_model/ + low_noise_model/).
"""
import json
import logging
import shutil
from functools import partial

import pytest
import torch

from vidrt.errors import CheckpointError, ConfigError
from vidrt.metrics import psnr as _psnr
from vidrt.pipeline import Pipeline
from vidrt.testing import make_tiny_wan, to_original_layout

psnr = partial(_psnr, peak=1.0)  # frames as floats in [0, 1]

BOUNDARY = 0.9   # with flow_shift 3 and 6 steps (timesteps 999 937 | 857 750 600 376): 2 + 4 steps
PROMPT = "a red circle moves right"
KW = dict(height=32, width=32, num_frames=5, max_sequence_length=16)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A tiny two-expert diffusers folder: the session's tiny_wan (same seed and sizes) plus a transformer_2."""
    return make_tiny_wan(tmp_path_factory.mktemp("two") / "wan22", boundary_ratio=BOUNDARY)


@pytest.fixture(scope="module")
def pipes(two):
    from diffusers import WanPipeline

    return Pipeline.from_pretrained(two), WanPipeline.from_pretrained(str(two))


def _latents(pipe, seed=3):
    return torch.randn(pipe.latent_shape(1, 5, 32, 32), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("guidance_2", [None, 2.0])
def test_two_experts_match_diffusers(pipes, guidance_2):
    ours, ref = pipes
    assert ours.boundary_ratio == BOUNDARY and ours.transformer_2 is not None
    lat = _latents(ours)
    expect = ref(PROMPT, num_inference_steps=6, guidance_scale=5.0, guidance_scale_2=guidance_2, latents=lat.clone(),
                 output_type="latent", **KW).frames
    got = ours(PROMPT, steps=6, guidance=5.0, guidance_2=guidance_2, latents=lat.clone(), output="latent",
               progress=False, **KW)
    assert float((got - expect).abs().max() / expect.abs().max()) <= 1e-4
    frames = ref(PROMPT, num_inference_steps=6, guidance_scale=5.0, guidance_scale_2=guidance_2, latents=lat.clone(),
                 output_type="np", **KW).frames[0]
    video = ours(PROMPT, steps=6, guidance=5.0, guidance_2=guidance_2, latents=lat.clone(), progress=False, **KW)
    assert psnr(video.frames / 255.0, frames) >= 40.0
    assert video.stats["experts"] == {"boundary_ratio": BOUNDARY, "guidance_2": guidance_2 or 5.0, "steps": [2, 4]}


def test_second_expert_and_its_guidance_change_the_result(pipes):
    ours, _ = pipes
    lat = _latents(ours)
    both = ours(PROMPT, steps=6, guidance=5.0, latents=lat.clone(), output="latent", progress=False, **KW)
    g2 = ours(PROMPT, steps=6, guidance=5.0, guidance_2=1.0, latents=lat.clone(), output="latent", progress=False,
              **KW)
    high, low = ours.transformer_2, ours.boundary_ratio
    ours.transformer_2 = ours.boundary_ratio = None   # the high-noise expert alone (what vidrt ran before)
    try:
        alone = ours(PROMPT, steps=6, guidance=5.0, latents=lat.clone(), output="latent", progress=False, **KW)
    finally:
        ours.transformer_2, ours.boundary_ratio = high, low
    assert float((both - alone).abs().max()) > 0.1
    assert float((both - g2).abs().max()) > 0.01


def test_expert_index_follows_the_boundary(pipes):
    ours, _ = pipes
    assert [ours.expert_index(t) for t in (1000.0, 900.0, 899.9, 0.0)] == [0, 0, 1, 1]
    assert len(ours.experts) == 2 and ours.experts[1] is ours.transformer_2


def test_original_wan22_layout_gives_same_frames(two, pipes, tmp_path):
    orig = to_original_layout(two, tmp_path / "orig")
    assert (orig / "high_noise_model" / "config.json").is_file() and not (orig / "config.json").exists()
    # without a vidrt.json: the settings of Wan 2.2 T2V-A14B's release
    p = Pipeline.from_pretrained(orig)
    assert p.boundary_ratio == 0.875 and p.scheduler_config["flow_shift"] == 12.0
    assert (p.defaults.steps, p.defaults.guidance, p.defaults.guidance_2) == (40, 4.0, 3.0)
    # a vidrt.json beside it overrides them: the tiny folder's own boundary and shift -> the diffusers folder's frames
    (orig / "vidrt.json").write_text(json.dumps({"boundary_ratio": BOUNDARY, "flow_shift": 3.0}))
    p = Pipeline.from_pretrained(orig)
    ours, _ = pipes
    lat = _latents(ours)
    a = ours(PROMPT, steps=6, guidance=5.0, guidance_2=2.0, latents=lat.clone(), progress=False, **KW)
    b = p(PROMPT, steps=6, guidance=5.0, guidance_2=2.0, latents=lat.clone(), progress=False, **KW)
    assert b.stats["experts"]["steps"] == [2, 4]
    assert psnr(a.frames / 255.0, b.frames / 255.0) >= 60.0


def test_pair_built_from_a_one_dit_checkpoint(tiny_wan, two, pipes):
    """transformer_2= + boundary_ratio= make a pair from a one-DiT checkpoint (its transformer is the same
    random DiT as the two-expert folder's): identical latents."""
    ours, _ = pipes
    pair = Pipeline.from_pretrained(tiny_wan, transformer_2=two / "transformer_2", boundary_ratio=BOUNDARY)
    lat = _latents(ours)
    a = ours(PROMPT, steps=6, guidance=5.0, latents=lat.clone(), output="latent", progress=False, **KW)
    b = pair(PROMPT, steps=6, guidance=5.0, latents=lat.clone(), output="latent", progress=False, **KW)
    assert torch.equal(a, b)
    # boundary_ratio= overrides the checkpoint's: an earlier switch gives the low-noise expert more steps
    later = Pipeline.from_pretrained(two, boundary_ratio=0.5)
    v = later(PROMPT, steps=6, guidance=5.0, latents=lat.clone(), progress=False, **KW)
    assert v.stats["experts"]["steps"] == [5, 1]


@pytest.mark.parametrize("cache,counter,expected", [("teacache", ("teacache", "computed"), 3),
                                                    ("first_block", ("first_block", "computed"), 3),
                                                    ("cfg", ("cfg", "uncond_computed"), 4)])
def test_step_caches_start_afresh_at_the_switch(pipes, cache, counter, expected):
    """With a threshold / interval that reuses everything, a cache computes the warm-up step (and the CFG cache the
    first step of its interval), the final step, and the first step of the second expert (step 2: the first
    expert's residuals and guidance deltas say nothing about it)."""
    ours, _ = pipes
    v = ours(PROMPT, steps=6, guidance=5.0, seed=0, cache=cache, cache_threshold=1e9, cfg_interval=100,
             progress=False, **KW)
    name, key = counter
    stats = v.stats["cache"][name]
    computed = stats[key]["cond"] if isinstance(stats[key], dict) else stats[key]
    assert computed == expected


def test_latency_target_plans_a_two_expert_run(two, tmp_path, monkeypatch):
    from vidrt.errors import LatencyError

    monkeypatch.setenv("VIDRT_CACHE_DIR", str(tmp_path))
    p = Pipeline.from_pretrained(two)
    v = p(PROMPT, latency_target=60.0, steps=6, seed=0, progress=False, **KW)
    s = v.stats["schedule"]
    assert s["plan"]["steps"] == 6 and 0 < s["predicted_s"] <= 60.0 and s["actual_s"] > 0
    assert v.stats["experts"]["steps"] == [2, 4]
    with pytest.raises(LatencyError, match="impossible"):
        p(PROMPT, latency_target=1e-5, steps=6, progress=False, **KW)
    # guidance only on the low-noise expert's steps: priced as such (4 of 6 steps with CFG), not as 6. One fixed
    # cost model for the three plans: this tiny model's timings are overhead-dominated noise, and the pricing
    # (not the measurement) is under test here
    from vidrt.caching import scheduler

    fixed = scheduler.CostModel({}, text_s=0.01, dit=(1e-3, 1e-5, 1e-8), vae=(1e-3, 1e-6))
    monkeypatch.setattr(scheduler, "calibrate_cost", lambda pipe, **kw: fixed)
    p.cost_load_check = False
    both = p(PROMPT, latency_target=60.0, steps=6, guidance=3.0, guidance_2=3.0, progress=False, **KW)
    low = p(PROMPT, latency_target=60.0, steps=6, guidance=1.0, guidance_2=3.0, progress=False, **KW)
    none = p(PROMPT, latency_target=60.0, steps=6, guidance=1.0, guidance_2=1.0, progress=False, **KW)
    assert (none.stats["schedule"]["predicted_s"] < low.stats["schedule"]["predicted_s"]
            < both.stats["schedule"]["predicted_s"])
    # each guided step adds one unconditional row: 4 of them for `low`, 2 more for `both`
    n, lo, b = (x.stats["schedule"]["predicted_s"] for x in (none, low, both))
    assert lo - n == pytest.approx(2 * (b - lo))


def test_each_step_guided_by_its_own_scale(two):
    """guidance <= 1 with guidance_2 > 1: the high-noise expert runs the conditional branch alone (batch 1), the
    low-noise one runs CFG (batch 2 in one call); and the other way round."""
    p = Pipeline.from_pretrained(two)
    batches = {0: [], 1: []}
    for e, dit in enumerate(p.experts):
        dit.register_forward_pre_hook(lambda m, args, e=e: batches[e].append(args[0].shape[0]))
    p(PROMPT, steps=6, guidance=1.0, guidance_2=3.0, seed=0, progress=False, **KW)
    assert batches == {0: [1, 1], 1: [2, 2, 2, 2]}
    batches[0].clear(), batches[1].clear()
    p(PROMPT, steps=6, guidance=3.0, guidance_2=0.5, seed=0, progress=False, **KW)
    assert batches == {0: [2, 2], 1: [1, 1, 1, 1]}


def test_teacache_is_calibrated_per_expert(two, tmp_path):
    """`vidrt calibrate` fits one TeaCache rescaling per expert; the second applies from the switch on."""
    from vidrt.caching.calibration import fit_teacache
    from vidrt.caching.policy import make_cache
    from vidrt.cli import main

    folder = tmp_path / "two"
    shutil.copytree(two, folder)
    assert main(["calibrate", "--model", str(folder), "--height", "32", "--width", "32", "--frames", "5", "--steps",
                 "10", "--threads", "1", "--skip-quality", "--json", str(tmp_path / "cal.json")]) == 0
    cal = json.loads((tmp_path / "cal.json").read_text())
    assert len(cal["teacache_coefficients"]) >= 2 and len(cal["teacache_coefficients_2"]) >= 2
    assert cal["teacache_coefficients"] != cal["teacache_coefficients_2"]
    p = Pipeline.from_pretrained(folder)
    assert p.teacache_coefficients_2 == tuple(cal["teacache_coefficients_2"])
    fits = fit_teacache(p, ["a red circle moves right", "a blue square", "a green circle moves up"], degree=1,
                        steps=10, **KW)
    assert len(fits) == 2
    plan = make_cache("teacache", 0.1, coefficients=p.teacache_coefficients)
    p(PROMPT, steps=6, cache=plan, seed=0, progress=False, **KW)
    assert list(plan.block.poly.coeffs) == pytest.approx(list(p.teacache_coefficients_2))


def test_quantized_and_bf16_load_both_experts(two):
    p = Pipeline.from_pretrained(two, precision="bf16")
    assert p.transformer_2.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert p.transformer_2.blocks[0].scale_shift_table.dtype == torch.float32
    q = Pipeline.from_pretrained(two, precision="int8")
    assert type(q.transformer_2.blocks[0].attn1.to_q) is type(q.transformer.blocks[0].attn1.to_q)
    assert type(q.transformer_2.blocks[0].attn1.to_q) is not torch.nn.Linear
    # `vidrt compare` reports the bytes of both experts as they run
    from vidrt.quant.apply import model_bytes
    from vidrt.quant.compare import dit_bytes

    assert dit_bytes(q) == model_bytes(q.transformer) + model_bytes(q.transformer_2) < dit_bytes(
        Pipeline.from_pretrained(two))


# ------------------------------------------------------------------ bad input


def test_bad_pairs_are_refused_before_any_work(tiny_wan, two, tmp_path):
    with pytest.raises(ConfigError, match="has one DiT; pass the low-noise expert with transformer_2="):
        Pipeline.from_pretrained(tiny_wan, boundary_ratio=0.8)
    with pytest.raises(ConfigError, match="pass boundary_ratio= too"):
        Pipeline.from_pretrained(tiny_wan, transformer_2=two / "transformer_2")
    for bad in (1.5, 0.0, float("nan"), "high"):
        with pytest.raises(ConfigError, match="boundary_ratio="):
            Pipeline.from_pretrained(two, boundary_ratio=bad)
    with pytest.raises(ConfigError, match="guidance_2 is the low-noise expert's scale"):
        Pipeline.from_pretrained(tiny_wan)(PROMPT, guidance_2=2.0, steps=1, progress=False, **KW)
    with pytest.raises(ConfigError, match="guidance_2="):
        Pipeline.from_pretrained(two)(PROMPT, guidance_2=float("inf"), steps=1, progress=False, **KW)
    # an expert that cannot denoise the other's latents
    other = make_tiny_wan(tmp_path / "patch1", patch=(1, 1, 1))
    with pytest.raises(CheckpointError, match="do not fit together.*patch_size"):
        Pipeline.from_pretrained(two, transformer_2=other / "transformer")


def _edit_index(src, dst, **changes):
    shutil.copytree(src, dst)
    index = json.loads((dst / "model_index.json").read_text())
    index.update(changes)
    (dst / "model_index.json").write_text(json.dumps(index))
    return dst


def test_broken_two_expert_folders(two, tiny_wan, tmp_path, caplog):
    no_second = _edit_index(tiny_wan, tmp_path / "a", boundary_ratio=0.875)
    with pytest.raises(CheckpointError, match="names no transformer_2"):
        Pipeline.from_pretrained(no_second)
    missing = _edit_index(two, tmp_path / "b")
    shutil.rmtree(missing / "transformer_2")
    with pytest.raises(CheckpointError, match="transformer_2/config.json is missing"):
        Pipeline.from_pretrained(missing)
    with pytest.raises(CheckpointError, match=r"boundary_ratio='0.9'.*number in \(0, 1\)"):
        Pipeline.from_pretrained(_edit_index(two, tmp_path / "c", boundary_ratio="0.9"))
    # a pair with per-token timesteps (expand_timesteps) runs the scalar path: the same latents
    expand = Pipeline.from_pretrained(_edit_index(two, tmp_path / "d", expand_timesteps=True))
    plain = Pipeline.from_pretrained(two)
    lat = _latents(plain)
    kw = dict(steps=6, guidance=5.0, output="latent", progress=False, **KW)
    assert torch.equal(expand(PROMPT, latents=lat.clone(), **kw), plain(PROMPT, latents=lat.clone(), **kw))
    # like diffusers: transformer_2 without boundary_ratio never runs (a warning says so) ...
    no_ratio = _edit_index(two, tmp_path / "e", boundary_ratio=None)
    with caplog.at_level(logging.WARNING, logger="vidrt.checkpoints.load"):
        p = Pipeline.from_pretrained(no_ratio)
    assert p.transformer_2 is None and "only transformer/ runs" in caplog.text
    # ... until from_pretrained is given one, as the warning says: then it is the two-expert folder
    p = Pipeline.from_pretrained(no_ratio, boundary_ratio=BOUNDARY)
    ref = Pipeline.from_pretrained(two)
    lat = _latents(ref)
    kw = dict(steps=6, guidance=5.0, output="latent", progress=False, **KW)
    assert torch.equal(p(PROMPT, latents=lat.clone(), **kw), ref(PROMPT, latents=lat.clone(), **kw))
    # a diffusers folder keeps boundary_ratio in model_index.json; in vidrt.json it is ignored, with a warning
    (no_ratio / "vidrt.json").write_text(json.dumps({"boundary_ratio": 0.5}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vidrt.checkpoints.load"):
        assert Pipeline.from_pretrained(no_ratio).transformer_2 is None
    assert "keeps in model_index.json" in caplog.text


def test_original_layout_with_one_expert_is_refused(two, tmp_path):
    orig = to_original_layout(two, tmp_path / "orig")
    shutil.rmtree(orig / "low_noise_model")
    with pytest.raises(CheckpointError, match="has high_noise_model/ but no low_noise_model/config.json"):
        Pipeline.from_pretrained(orig)
    (orig / "vidrt.json").write_text(json.dumps({"boundary_ratio": 2}))
    shutil.copytree(orig / "high_noise_model", orig / "low_noise_model")
    with pytest.raises(CheckpointError, match="boundary_ratio=2 in .*vidrt.json"):
        Pipeline.from_pretrained(orig)


def test_long_clip_streams_two_experts_in_sliding_windows(pipes, tiny_wan):
    """A two-expert model streams through the sliding-window fallback; its first window (no context yet) is exactly
    Pipeline.__call__ on the same noise, each step on its own expert with its own guidance."""
    ours, _ = pipes
    gen = dict(height=32, width=32, steps=6, guidance=5.0, guidance_2=2.0, max_sequence_length=16, progress=False)
    parts = list(ours.stream(PROMPT, seconds=1.5, window_frames=4, overlap_frames=1, canonical_prompts=False,
                             seed=0, **gen))
    assert {p.mode for p in parts} == {"sliding"} and [p.latents.shape[2] for p in parts] == [4, 2]
    noise = torch.randn((1, 16, 4, 4, 4), generator=torch.Generator("cpu").manual_seed(0))
    ref = ours(PROMPT, num_frames=13, latents=noise, output="latent", **gen)
    assert float((parts[0].latents - ref).abs().max() / ref.abs().max()) < 1e-4
    other = ours(PROMPT, num_frames=13, latents=noise, output="latent", **{**gen, "guidance_2": 1.0})
    assert float((parts[0].latents - other).abs().max()) > 1e-3   # guidance_2 reached the stream
    with pytest.raises(ConfigError, match="streams long clips in sliding mode"):
        ours.stream(PROMPT, mode="causal")
    with pytest.raises(ConfigError, match="guidance_2 is the low-noise expert's scale"):
        Pipeline.from_pretrained(tiny_wan).stream(PROMPT, guidance_2=2.0)
    for bad in ("abc", float("nan")):
        with pytest.raises(ConfigError, match="guidance_2="):
            ours.stream(PROMPT, guidance_2=bad)
        with pytest.raises(ConfigError, match="guidance="):
            ours.stream(PROMPT, guidance=bad)


def test_exported_models_take_no_component_swaps(two, tmp_path):
    for kw in ({"boundary_ratio": 0.5}, {"transformer_2": two / "transformer_2"}, {"transformer": two / "transformer"}):
        with pytest.raises(ConfigError, match="cannot change an exported model"):
            Pipeline.from_pretrained(two, backend="onnxruntime", **kw)


def test_one_dit_tools_refuse_two_experts(pipes):
    from pathlib import Path

    from vidrt.testing import load_script

    root = Path(__file__).resolve().parents[1]
    ours, _ = pipes
    with pytest.raises(SystemExit, match="two-expert"):
        load_script(root / "tools/expert_mix.py").mix(ours, ours, (0.3, 0.8))
    with pytest.raises(SystemExit, match="two-expert"):
        load_script(root / "tools/probe_dit_binding.py").denoising_errors(ours, torch.zeros(1, 16, 1, 4, 4),
                                                                         [PROMPT], 2, 0)


# ------------------------------------------------------------------ CLI and export


def test_cli_generate_with_guidance_2(two, tmp_path):
    from vidrt.cli import main

    out, js = tmp_path / "c.gif", tmp_path / "c.json"
    assert main(["generate", PROMPT, "--model", str(two), "--frames", "5", "--height", "32", "--width", "32",
                 "--steps", "6", "--guidance-2", "1.5", "-o", str(out), "--json", str(js)]) == 0
    stats = json.loads(js.read_text())
    assert out.is_file() and stats["experts"] == {"boundary_ratio": BOUNDARY, "guidance_2": 1.5, "steps": [2, 4]}
    assert main(["generate", PROMPT, "--model", str(two), "--boundary-ratio", "0.5", "--frames", "1", "--height",
                 "32", "--width", "32", "--steps", "6", "-o", str(tmp_path / "i.png"), "--json", str(js)]) == 0
    assert json.loads(js.read_text())["experts"]["steps"] == [5, 1]


def test_onnx_export_and_onnxruntime_run_both_experts(two, pipes, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from vidrt.export.onnx_export import export_onnx

    m = export_onnx(two, tmp_path / "onnx")
    assert m["boundary_ratio"] == BOUNDARY and set(m["graphs"]) == {"transformer", "transformer_2", "vae_decoder",
                                                                      "text_encoder"}
    ort = Pipeline.from_pretrained(tmp_path / "onnx", backend="onnxruntime")
    assert ort.boundary_ratio == BOUNDARY
    ours, _ = pipes
    lat = _latents(ours)
    a = ours(PROMPT, steps=6, guidance=5.0, guidance_2=2.0, latents=lat.clone(), output="latent", progress=False,
             **KW)
    b = ort(PROMPT, steps=6, guidance=5.0, guidance_2=2.0, latents=lat.clone(), output="latent", progress=False,
            **KW)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-4
    (tmp_path / "onnx" / "transformer_2.onnx").unlink()
    with pytest.raises(ConfigError, match="transformer_2.onnx"):
        Pipeline.from_pretrained(tmp_path / "onnx", backend="onnxruntime")


def test_tensorrt_check_covers_the_second_expert(two, tmp_path):
    pytest.importorskip("onnx")
    from vidrt.cli import main
    from vidrt.export.onnx_export import export_onnx

    export_onnx(two, tmp_path / "onnx")
    assert main(["export", "tensorrt", "--onnx", str(tmp_path / "onnx"), "--shapes", "32x32x5", "--check-only",
                 "--json", str(tmp_path / "t.json")]) == 0
    assert set(json.loads((tmp_path / "t.json").read_text())["issues"]) == {
        "transformer", "transformer_2", "vae_decoder", "text_encoder"}


def test_one_dit_pipeline_has_one_expert(tiny_wan):
    """(The one-DiT path's numbers are checked against diffusers in test_pipeline_conformance.py.)"""
    one = Pipeline.from_pretrained(tiny_wan)
    v = one(PROMPT, steps=3, seed=1, progress=False, **KW)
    assert "experts" not in v.stats and one.experts == [one.transformer] and one.boundary_ratio is None
    assert [one.expert_index(t) for t in (999, 1)] == [0, 0]


def test_diffusers_baseline_times_both_experts(two):
    """`vidrt bench --baseline diffusers` on a two-expert folder: dit_s holds the low-noise expert's calls too."""
    from vidrt.bench.baseline_diffusers import DiffusersTarget
    from vidrt.bench.targets import Request

    target = DiffusersTarget(two, torch.device("cpu"))
    low = target.pipe.transformer_2
    calls = []
    inner = low.forward
    low.forward = lambda *a, **k: calls.append(1) or inner(*a, **k)
    req = Request((PROMPT,), 32, 32, 5, 6, guidance=5.0, text_len=16)
    out = target.generate(req, _latents(Pipeline.from_pretrained(two)))
    assert len(calls) == 8 and out.stages["dit_s"] > 0   # 4 low-noise steps x (cond, uncond)
    # the timer sits on the low-noise expert itself: a call to it alone is billed as DiT time
    target._acc.clear()
    x = torch.randn(1, 16, 2, 4, 4)
    low(hidden_states=x, timestep=torch.tensor([100.0]), encoder_hidden_states=torch.randn(1, 4, 16))
    assert target._acc.get("dit_s", 0.0) > 0


def test_vidrt_bench_target_times_both_experts(two):
    from vidrt.bench.targets import Request, VidrtTarget

    target = VidrtTarget(Pipeline.from_pretrained(two))
    req = Request((PROMPT,), 32, 32, 5, 6, guidance=5.0, text_len=16)
    assert target.generate(req, _latents(target.pipe)).stages["dit_s"] > 0
    for dit in target.pipe.experts:
        target._acc.clear()
        dit(torch.randn(1, 16, 2, 4, 4), torch.tensor([100.0]), torch.randn(1, 4, 16))
        assert target._acc.get("dit_s", 0.0) > 0


def test_regions_follow_the_expert_switch(two):
    """Regional prompting on a two-expert checkpoint: the sub-prompts' K/V are the current expert's (a region over
    the whole frame under the same prompt is the plain run, through the switch), and a region does steer."""
    from vidrt.regions import Regions

    class Same:
        def __init__(self, sub=None):
            self.sub = sub

        def split(self, prompt):
            return [self.sub or prompt]

        def masks(self, frames, prompt):
            return torch.ones((1,) + tuple(frames.shape[:3]), dtype=torch.bool)

    p = Pipeline.from_pretrained(two)
    lat = _latents(p)
    plain = p(PROMPT, latents=lat, steps=6, output="latent", progress=False, **KW)
    same = p(PROMPT, latents=lat, steps=6, output="latent", progress=False, regions=Regions(Same(), start=1), **KW)
    torch.testing.assert_close(same, plain, rtol=1e-4, atol=1e-5)
    other = p(PROMPT, latents=lat, steps=6, output="latent", progress=False,
              regions=Regions(Same("a blue square"), start=1), **KW)
    assert (other - plain).abs().max() > 1e-3
