"""vidrt exact path vs diffusers' WanPipeline on the same folder, shapes, steps and latents.

pytest-benchmark suite:   pytest benchmarks/bench_pipeline.py --benchmark-only --benchmark-json out.json
side-by-side CLI:          python benchmarks/bench_pipeline.py --json benchmarks/results/cpu_vs_diffusers.json

Stages: one CFG denoising step of the transformer (diffusers: cond + uncond calls; vidrt: one batched
call with cached cross-attention K/V), VAE decode, and end to end. The CLI interleaves the two
runtimes (A B A B ...) so machine noise hits both alike, and reports medians and the ratio.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pytest
import torch

MODEL = dict(heads=4, head_dim=64, layers=4, ffn_dim=1024, text_dim=64, vae_base_dim=16)
SHAPES = [(33, 64, 64), (17, 128, 128)]
PROMPT = "a red circle moves right"


def build(folder: Path):
    from diffusers import WanPipeline

    from vidrt.pipeline import Pipeline
    from vidrt.testing import make_tiny_wan

    if not (folder / "model_index.json").is_file():
        make_tiny_wan(folder, **MODEL)
    ours = Pipeline.from_pretrained(folder)
    ref = WanPipeline.from_pretrained(str(folder))
    ref.set_progress_bar_config(disable=True)
    return ours, ref


def stage_fns(ours, ref, frames: int, h: int, w: int, steps: int = 4):
    """name -> (vidrt fn, diffusers fn) doing the same work on the same inputs."""
    lat = torch.randn(ours.latent_shape(1, frames, h, w), generator=torch.Generator().manual_seed(0))
    ctx = ours.encode_prompts([PROMPT, ""], 32)
    t = torch.tensor([500.0])
    kv = ours.transformer.prepare_context(ctx)
    z = lat.clone()

    @torch.no_grad()
    def ours_step():
        ours.transformer(torch.cat([z, z]), t.expand(2), context_kv=kv)  # K/V prepared once per clip

    @torch.no_grad()
    def ref_step():
        ref.transformer(z, t, ctx[:1], return_dict=False)
        ref.transformer(z, t, ctx[1:], return_dict=False)

    def ours_decode():
        ours.decode(z)

    @torch.no_grad()
    def ref_decode():
        ref.vae.decode(z, return_dict=False)

    def ours_e2e():
        ours(PROMPT, num_frames=frames, height=h, width=w, steps=steps, latents=lat.clone(), max_sequence_length=32,
             progress=False)

    def ref_e2e():
        ref(PROMPT, num_frames=frames, height=h, width=w, num_inference_steps=steps, latents=lat.clone(),
            max_sequence_length=32, output_type="np")

    return {"dit_cfg_step": (ours_step, ref_step), "vae_decode": (ours_decode, ref_decode),
            f"end_to_end_{steps}steps": (ours_e2e, ref_e2e)}


# ----------------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    return build(tmp_path_factory.mktemp("bench") / "wan")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("stage", ["dit_cfg_step", "vae_decode", "end_to_end_4steps"])
@pytest.mark.parametrize("runtime", ["vidrt", "diffusers"])
def test_bench(benchmark, pipes, shape, stage, runtime):
    fns = stage_fns(*pipes, *shape)[stage]
    benchmark.group = f"{stage}-{'x'.join(map(str, shape))}"
    benchmark.pedantic(fns[0] if runtime == "vidrt" else fns[1], rounds=3, warmup_rounds=1)


# ----------------------------------------------------------------------------- side-by-side CLI


def side_by_side(ours, ref, repeats: int = 5) -> list[dict]:
    rows = []
    for shape in SHAPES:
        for stage, (a, b) in stage_fns(ours, ref, *shape).items():
            a(), b()  # warm-up
            ta, tb = [], []
            for _ in range(repeats):
                for fn, acc in ((a, ta), (b, tb)):
                    t0 = time.perf_counter()
                    fn()
                    acc.append(time.perf_counter() - t0)
            ma, mb = statistics.median(ta), statistics.median(tb)
            rows.append({"shape": "x".join(map(str, shape)), "stage": stage, "vidrt_s": ma, "diffusers_s": mb,
                         "speedup": mb / ma, "vidrt_all_s": ta, "diffusers_all_s": tb})
            print(f"{rows[-1]['shape']:>10} {stage:<20} vidrt {ma * 1000:8.1f} ms  diffusers {mb * 1000:8.1f} ms  "
                  f"x{mb / ma:.2f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import diffusers

    with tempfile.TemporaryDirectory() as tmp:
        ours, ref = build(Path(tmp) / "wan")
        rows = side_by_side(ours, ref, args.repeats)
    env = {"device": "cpu", "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "diffusers": diffusers.__version__, "model": MODEL}
    result = {"schema": "vidrt.bench.vs_diffusers/1", "env": env, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.markdown:
        lines = [f"# vidrt exact path vs diffusers (CPU, {env['threads']} threads, torch {env['torch']}, "
                 f"diffusers {env['diffusers']})", "",
                 f"Random-weight Wan-layout model {MODEL}; medians of {args.repeats} interleaved runs.", "",
                 "| shape (frames x H x W) | stage | vidrt | diffusers | speedup |", "|---|---|---|---|---|"]
        lines += [f"| {r['shape']} | {r['stage']} | {r['vidrt_s'] * 1000:.1f} ms | {r['diffusers_s'] * 1000:.1f} ms "
                  f"| x{r['speedup']:.2f} |" for r in rows]
        Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
