"""The JSON format of `vidrt bench` results, version ``vidrt.bench/1``: its fields, documented and checked.

The spec below is the single source: :func:`validate` checks a document against it and
:func:`describe` renders it as the markdown table in docs/bench.md. Within version 1, fields may
be added (readers ignore unknown keys); removing, renaming or changing the meaning of a field
bumps the version. Times are seconds, memory is MiB, a "stat" is the summary of repeated runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from vidrt.errors import ConfigError

SCHEMA = "vidrt.bench/1"


@dataclass(frozen=True)
class F:
    """A leaf field: ``kind`` in str | int | float | bool | dict | list[int] | list[str] | list[float];
    ``optional`` fields may be null."""

    kind: str
    doc: str
    optional: bool = False


def _stat(what: str) -> dict:
    return {
        "median": F("float", f"median {what}"),
        "p10": F("float", "10th percentile (lower edge of the noise band)"),
        "p90": F("float", "90th percentile (upper edge of the noise band)"),
        "min": F("float", "fastest run"),
        "max": F("float", "slowest run"),
        "n": F("int", "measured runs (after warm-up)"),
        "samples": F("list[float]", "every measured value, in run order"),
    }


STAT = _stat("value")
Spec = Union[F, dict, list]

RESULT: dict = {
    "runtime": F("str", "'vidrt' or the baseline ('diffusers')"),
    "label": F("str", "runtime and switches, e.g. 'vidrt bf16 sdpa' (the plot's series name)"),
    "precision": F("str", "fp32 | bf16 | fp16"),
    "attention": F("str", "attention backend (vidrt: sdpa | triton | flash_attn)"),
    "cache": F("str", "step-cache policy, 'none' = exact"),
    "backend": F("str", "execution backend ('torch'; for the baseline its name and version)"),
    "latency_s": _stat("end-to-end seconds of one call (text + DiT + VAE, all clips of the batch)"),
    "stages": {
        "text_s": [STAT, "text encoder seconds per call"],
        "dit_s": [STAT, "all denoising steps, seconds per call"],
        "dit_per_step_s": [STAT, "DiT seconds per denoising step (all CFG branches)"],
        "vae_s": [STAT, "VAE decode seconds per call"],
    },
    "throughput": {
        "videos_per_min": F("float", "60 * batch / median latency"),
        "frames_per_s": F("float", "batch * frames / median latency"),
        "dit_tokens_per_s": F("float", "tokens * batch * CFG branches * steps / median DiT seconds (effective: "
                                       "a step cache that skips work raises it)", optional=True),
    },
    "memory": {
        "peak_rss_mb": F("float", "peak resident memory of the process during the measured runs", optional=True),
        "start_rss_mb": F("float", "resident memory before the runs (weights of every loaded model)",
                          optional=True),
        "peak_rss_delta_mb": F("float", "largest peak_rss - start_rss of one run: the run's working memory",
                               optional=True),
        "cuda_max_allocated_mb": F("float", "torch.cuda.max_memory_allocated over the runs (GPU only)",
                                   optional=True),
    },
    "quality": {
        "psnr_vs_exact_db": F("float", "PSNR of the frames vs the exact path (vidrt fp32 sdpa, no cache) from "
                                       "the same latents; null when not measured or identical", optional=True),
        "is_exact_reference": F("bool", "true for the exact path itself"),
        "adherence": F("float", "mean vidrt.world prompt-adherence score in [0, 1] (embedded model only)",
                       optional=True),
        "note": F("str", "why a quality column is missing", optional=True),
    },
    "speedup_vs_baseline": F("float", "baseline median latency / this median latency (null for the baseline, "
                                      "or without one)", optional=True),
    "stage_speedup_vs_baseline": F("dict", "the same ratio per stage (text_s, dit_per_step_s, vae_s)",
                                   optional=True),
}

CASE: dict = {
    "id": F("str", "HxWxF-bB, e.g. '480x832x81-b1' (the key `compare` matches on)"),
    "height": F("int", "frame height in pixels"),
    "width": F("int", "frame width in pixels"),
    "frames": F("int", "frames per clip (4k+1)"),
    "batch": F("int", "prompts per call"),
    "latent_shape": F("list[int]", "initial latents (B, C, T', H', W'), the same for every runtime"),
    "tokens": F("int", "DiT tokens of one clip (latent voxels / patch volume)"),
    "prompts": F("list[str]", "the prompts of the call"),
    "results": [RESULT, "one entry per runtime / switch setting"],
}

DOC: dict = {
    "schema": F("str", f"format id, '{SCHEMA}'"),
    "created": F("str", "UTC time the run finished, ISO 8601"),
    "command": F("str", "the command line that produced the file", optional=True),
    "environment": {
        "device": F("str", "torch device, e.g. 'cpu' or 'cuda:0'"),
        "device_name": F("str", "GPU name, or 'CPU (<model>)'"),
        "threads": F("int", "torch intra-op threads"),
        "cpu_count": F("int", "logical CPUs of the host", optional=True),
        "vidrt": F("str", "vidrt version"),
        "torch": F("str", "torch version"),
        "diffusers": F("str", "diffusers version (null when not installed)", optional=True),
        "git_commit": F("str", "commit of the vidrt checkout, when run from one", optional=True),
        "load_avg_1min": F("float", "host load average when the run started (other work adds noise)", optional=True),
    },
    "model": {
        "spec": F("str", "--model as given: a path, 'default' or 'random:NAME'"),
        "path": F("str", "the checkpoint folder both runtimes loaded"),
        "embedded": F("bool", "the embedded default model (quality columns apply)"),
        "random": F("bool", "random weights (speed only; frames are noise)"),
        "config": F("dict", "the DiT config (heads, head_dim, layers, ...) and parameter count"),
    },
    "settings": {
        "steps": F("int", "denoising steps per call"),
        "guidance": F("float", "classifier-free guidance scale (> 1: two DiT branches per step)"),
        "text_len": F("int", "text tokens per prompt (max_sequence_length)"),
        "warmup": F("int", "unmeasured runs per runtime and case"),
        "repeats": F("int", "measured runs per runtime and case (interleaved across runtimes)"),
        "seed": F("int", "seed of the initial latents"),
        "baseline": F("str", "baseline runtime, or null", optional=True),
    },
    "cases": [CASE, "one entry per shape and batch size"],
    "notes": F("list[str]", "caveats of this run (missing quality columns, CPU-only, ...)"),
}

_PY = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict}


def _check_leaf(f: F, value: Any, path: str, errors: list[str]) -> None:
    if value is None:
        if not f.optional:
            errors.append(f"{path}: required, got null")
        return
    if f.kind.startswith("list["):
        inner = _PY[f.kind[5:-1]]
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, inner) for v in value):
            errors.append(f"{path}: expected {f.kind}, got {type(value).__name__}")
        return
    ok = isinstance(value, _PY[f.kind]) and (f.kind == "bool" or not isinstance(value, bool))
    if not ok:
        errors.append(f"{path}: expected {f.kind}, got {type(value).__name__}")


def _check(spec: Spec, value: Any, path: str, errors: list[str]) -> None:
    if isinstance(spec, F):
        _check_leaf(spec, value, path, errors)
    elif isinstance(spec, list):  # [item spec, doc]: a list of objects, or (for stages) an optional object
        item = spec[0]
        if item is STAT:
            if value is not None:
                _check(item, value, path, errors)
            return
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            _check(item, v, f"{path}[{i}]", errors)
    else:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for key, sub in spec.items():
            if key not in value:
                if isinstance(sub, F) and sub.optional or isinstance(sub, list) and sub[0] is STAT:
                    continue
                errors.append(f"{path}.{key}: missing")
                continue
            _check(sub, value[key], f"{path}.{key}", errors)


def validate(doc: Any) -> list[str]:
    """Every way ``doc`` departs from the ``vidrt.bench/1`` schema (empty list: valid)."""
    if not isinstance(doc, dict):
        return [f"$: expected a JSON object, got {type(doc).__name__}"]
    if doc.get("schema") != SCHEMA:
        return [f"$.schema: expected {SCHEMA!r}, got {doc.get('schema')!r}"]
    errors: list[str] = []
    _check(DOC, doc, "$", errors)
    for ci, case in enumerate(doc.get("cases") or []):
        for ri, r in enumerate(case.get("results") or [] if isinstance(case, dict) else []):
            lat = r.get("latency_s") if isinstance(r, dict) else None
            if isinstance(lat, dict) and all(isinstance(lat.get(k), (int, float)) for k in ("p10", "median", "p90")):
                if not lat["p10"] <= lat["median"] <= lat["p90"]:
                    errors.append(f"$.cases[{ci}].results[{ri}].latency_s: p10 <= median <= p90 does not hold")
    return errors


def check(doc: Any, source: str = "result") -> dict:
    """``doc`` if it is a valid ``vidrt.bench/1`` document, else a ConfigError listing the problems."""
    errors = validate(doc)
    if errors:
        shown = "; ".join(errors[:8]) + (f"; ... {len(errors) - 8} more" if len(errors) > 8 else "")
        raise ConfigError(f"{source} is not a valid {SCHEMA} document: {shown}. Re-create it with "
                          "`vidrt bench ... --json FILE`")
    return doc


def describe() -> str:
    """The schema as a markdown table (path | type | meaning), for the docs."""
    rows = ["| field | type | meaning |", "|---|---|---|"]

    def walk(spec: Spec, path: str) -> None:
        if isinstance(spec, F):
            kind = spec.kind + (" or null" if spec.optional else "")
            rows.append(f"| `{path}` | {kind} | {spec.doc} |")
        elif isinstance(spec, list):
            item, doc = spec
            if item is STAT:
                rows.append(f"| `{path}` | stat or null | {doc} |")
            else:
                rows.append(f"| `{path}` | list | {doc} |")
                walk(item, path + "[]")
        else:
            for k, sub in spec.items():
                if sub is STAT or (isinstance(sub, dict) and set(sub) == set(STAT)):
                    rows.append(f"| `{path}.{k}` | stat | {sub['median'].doc} |" if path else
                                f"| `{k}` | stat | {sub['median'].doc} |")
                else:
                    walk(sub, f"{path}.{k}" if path else k)

    walk(DOC, "")
    rows.append("")
    rows.append("A **stat** is `{median, p10, p90, min, max, n, samples}` (percentiles linearly interpolated).")
    return "\n".join(rows)
