"""`vidrt bench`: measure a model's latency, throughput and memory, optionally against diffusers.

    vidrt bench --model default --shapes 64x64x33 --steps 20 --baseline diffusers --json r.json --markdown r.md --plot r.png
    vidrt bench --model random:small --shapes 64x64x17,128x128x17 --batch 1,2,4
    vidrt bench --compare old.json new.json        # exit 1 when something regressed beyond noise
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from vidrt.cli import check_report_outputs, command, require_module, write_text

EPILOG = """examples:
  vidrt bench --model default --shapes 64x64x33 --steps 20 --baseline diffusers --json r.json --plot r.png
  vidrt bench --model random:wan1.3b --device cuda --precision bf16 --shapes 480x832x81 --steps 4 --baseline diffusers
  vidrt bench --model PATH --shapes 64x64x17 --batch 1,2,4 --markdown r.md
  vidrt bench --compare old.json new.json"""


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--model", default="default",
                   help="checkpoint folder, 'default' (embedded model) or random:tiny|small|wan1.3b (random weights)")
    p.add_argument("--shapes", default=None, help="HxWxF list, e.g. 480x832x81,64x64x33 (default: the model's size)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--batch", default="1", help="prompts per call; a list like 1,2,4 sweeps throughput vs batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16")
    p.add_argument("--attention", default="sdpa", help="sdpa | triton | flash_attn")
    p.add_argument("--backend", default="torch", help="execution backend (this build: torch)")
    p.add_argument("--cache", default="none", help="step cache policy (none = exact)")
    p.add_argument("--baseline", default=None, help="run this baseline on the same inputs: diffusers")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs per runtime and case")
    p.add_argument("--repeats", type=int, default=5, help="measured runs per runtime and case")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--text-len", type=int, default=None, help="text tokens per prompt (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quality", default="auto", choices=["auto", "on", "off"],
                   help="PSNR vs the exact path (auto: for the embedded model, or free when the run is exact)")
    p.add_argument("--workdir", default=None, help="where random:NAME models are built (default ~/.cache/vidrt/bench)")
    p.add_argument("--json", default=None, help="write the vidrt.bench/1 result here")
    p.add_argument("--markdown", default=None, help="write a markdown report here")
    p.add_argument("--plot", default=None, help="write a PNG plot (latency vs tokens per runtime) here")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), default=None,
                   help="compare two result files instead of running; exit 1 on regressions beyond noise")
    p.add_argument("--min-change", type=float, default=0.05,
                   help="--compare: smallest relative median change that counts (default 0.05)")
    p.add_argument("--show-noise", action="store_true", help="--compare: list changes within noise too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _summary(doc: dict) -> str:
    lines = []
    for case in doc["cases"]:
        for r in case["results"]:
            lat, st = r["latency_s"], r["stages"]
            dps = st.get("dit_per_step_s")
            sp = f"  x{r['speedup_vs_baseline']:.2f} vs baseline" if r.get("speedup_vs_baseline") else ""
            psnr = r["quality"]["psnr_vs_exact_db"]
            q = f"  PSNR {psnr:.1f} dB" if psnr is not None else ""
            lines.append(f"{case['id']:>18}  {r['label']:<24} {lat['median']:8.3f}s [{lat['p10']:.3f}-{lat['p90']:.3f}]"
                         f"  DiT/step {dps['median'] * 1000 if dps else float('nan'):8.1f}ms"
                         f"  {r['throughput']['videos_per_min']:7.2f} videos/min{sp}{q}")
    return "\n".join(lines)


@command("bench", "benchmark latency, throughput and memory (vs diffusers with --baseline diffusers)")(_add_bench)
def _bench(args: argparse.Namespace) -> int:
    from vidrt.bench import compare as cmp
    from vidrt.bench import report
    from vidrt.bench.runner import BenchConfig, parse_batches, parse_shapes, run_bench

    if args.compare:
        if not args.min_change >= 0:
            from vidrt.errors import ConfigError

            raise ConfigError(f"--min-change {args.min_change:g}: give the smallest relative change that counts as 0 "
                              "or more, e.g. --min-change 0.05 (5%)")
        res = cmp.compare(cmp.load(args.compare[0]), cmp.load(args.compare[1]), args.min_change)
        print(cmp.format_comparison(res, args.show_noise))
        return 1 if res.regressions else 0
    check_report_outputs(args)   # fail before measuring, not after
    if args.baseline == "diffusers":
        require_module("diffusers", "--baseline diffusers", "bench", "drop --baseline")
    cfg = BenchConfig(
        model=args.model, shapes=parse_shapes(args.shapes) if args.shapes else None, steps=args.steps,
        batches=parse_batches(args.batch), precision=args.precision, attention=args.attention, backend=args.backend,
        cache=args.cache, baseline=args.baseline, device=args.device, warmup=args.warmup, repeats=args.repeats,
        guidance=args.guidance, seed=args.seed, text_len=args.text_len, threads=args.threads, quality=args.quality,
        workdir=Path(args.workdir) if args.workdir else None,
        command="vidrt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None)
    doc = run_bench(cfg, progress=not args.no_progress)
    print(_summary(doc))
    for note in doc["notes"]:
        print(f"note: {note}")
    if args.json:
        write_text(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        write_text(args.markdown, report.markdown(doc))
        print(f"wrote {args.markdown}")
    if args.plot:
        print(f"wrote {report.plot(doc, args.plot)}")
    return 0
