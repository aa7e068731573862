"""`vidrt export onnx | tensorrt`: write exported graphs / engines.

    vidrt export onnx --model PATH -o DIR [--precision fp32|fp16]
    vidrt export tensorrt --onnx DIR --shapes 64x64x33,32x32x1 [--batch 1] [--precision fp16] [--check-only]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidrt.cli import check_output, check_positive, command, write_text


def parse_shapes(text: str, batch: int = 1, cfg: bool = True):
    """'HxWxF,HxWxF' -> [Request]; a ConfigError for malformed entries."""
    from vidrt.errors import ConfigError
    from vidrt.export.tensorrt_build import Request

    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            h, w, f = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--shapes entry {part!r} is not HxWxF (e.g. 64x64x33)") from None
        out.append(Request(f, h, w, batch, cfg))
    if not out:
        raise ConfigError("--shapes is empty; give HxWxF sizes like 64x64x33,32x32x1")
    return out


def _add_export(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="target", required=True)
    o = sub.add_parser("onnx", help="DiT, VAE decoder and text encoder to ONNX (dynamic shapes) + manifest")
    o.add_argument("--model", default="default", help="checkpoint folder or 'default' (embedded model)")
    o.add_argument("-o", "--output", required=True, help="output folder")
    o.add_argument("--precision", default="fp32", choices=("fp32", "fp16"), help="DiT weights precision")
    o.add_argument("--opset", type=int, default=18)
    o.add_argument("--external-data", action="store_true", help="weights in a .data file even under 2 GB")
    t = sub.add_parser("tensorrt", help="TensorRT engines from an ONNX folder (profiles from --shapes)")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", help="folder written by `vidrt export onnx`")
    src.add_argument("--model", help="checkpoint folder (exported to ONNX first, into the cache)")
    t.add_argument("--shapes", required=True, help="HxWxF sizes the engines must serve, e.g. 64x64x33,32x32x1")
    t.add_argument("--batch", type=int, default=1, help="prompts per call (CFG doubles the DiT batch)")
    t.add_argument("--no-cfg", action="store_true", help="guidance <= 1: the DiT batch is not doubled")
    t.add_argument("--precision", default="fp16", help="fp32 | fp16 | bf16 | fp8 | int8 (builder flags)")
    t.add_argument("--cache-dir", default=None, help="engine cache folder (default: ~/.cache/vidrt/tensorrt)")
    t.add_argument("--check-only", action="store_true",
                   help="no build: derive profiles and check the graphs for TensorRT (works without TensorRT)")
    t.add_argument("--json", default=None, help="write the profiles / engine paths as JSON here")


@command("export", "export a model to ONNX or build TensorRT engines")(_add_export)
def _export(args: argparse.Namespace) -> int:
    from vidrt.errors import ConfigError
    from vidrt.export.tensorrt_build import TRT_PRECISIONS

    if args.target == "onnx":
        from vidrt.export.onnx_export import export_onnx

        check_output(args.output, "-o", folder=True)
        m = export_onnx(None if args.model == "default" else args.model, args.output, precision=args.precision,
                        opset=args.opset, external_data=True if args.external_data else None)
        for name, g in m["graphs"].items():
            print(f"{name:13s} {g['file']:22s} {g['weight_bytes'] / 1e6:9.2f} MB  inputs "
                  + ", ".join(f"{k}{v['shape']}" for k, v in g["inputs"].items()))
        print(f"wrote {args.output} (opset {m['opset']}, {m['precision']}, model {m['model_hash']}) in "
              f"{m['export_s']:.1f}s")
        return 0
    if args.precision not in TRT_PRECISIONS:
        raise ConfigError(f"--precision {args.precision}: unknown TensorRT precision; choose one of "
                          f"{', '.join(TRT_PRECISIONS)}")
    check_positive(args, "batch")
    check_output(args.json, "--json")
    requests = parse_shapes(args.shapes, args.batch, not args.no_cfg)
    from vidrt.export.onnx_export import graph_files, load_manifest, require_onnx

    require_onnx("vidrt export tensorrt")  # graph checks and engine builds read the ONNX graphs
    from vidrt.export.ort_backend import resolve_onnx_dir
    from vidrt.export.tensorrt_build import build_engines, check_graph_for_tensorrt, derive_profiles

    onnx_dir = Path(args.onnx) if args.onnx else resolve_onnx_dir(args.model, "fp32")
    m = load_manifest(onnx_dir)
    profiles = derive_profiles(m, requests)
    report = {"onnx": str(onnx_dir), "profiles": {k: p.as_dict() for k, p in profiles.items()}}
    if args.check_only:
        issues = {c: [vars(i) for i in check_graph_for_tensorrt(onnx_dir / f, args.precision)]
                  for c, f in graph_files(m).items()}
        report["issues"] = issues
        for comp, prof in report["profiles"].items():
            for name, r in prof.items():
                print(f"{comp:13s} {name:15s} min {r['min']} opt {r['opt']} max {r['max']}")
        for comp, lst in issues.items():
            for i in lst:
                print(f"{comp}: {i['severity']}: {i['message']}")
        print("graphs ready for TensorRT" if not any(i["severity"] == "error" for lst in issues.values() for i in lst)
              else "graphs have TensorRT errors")
    else:
        engines = build_engines(onnx_dir, requests, precision=args.precision, cache_dir=args.cache_dir)
        report["engines"] = {k: str(v) for k, v in engines.items()}
        for k, v in engines.items():
            print(f"{k:13s} {v}")
    if args.json:
        write_text(args.json, json.dumps(report, indent=2))
    return 0
