"""Human-readable views of a `vidrt bench` result: a markdown report and a PNG plot.

The plot shows, per runtime/switch label, median latency (p10-p90 error bars) against DiT tokens
per clip for the shape sweep, DiT time per step against tokens, and, with several batch sizes,
videos/min against batch size. matplotlib (the `bench` extra) is imported only when plotting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from vidrt.errors import BackendUnavailableError


def _t(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _stat(s: Optional[dict]) -> str:
    return "-" if not s else _t(s["median"])


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n:,}"


def _num(x: Optional[float], fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{suffix}"


def markdown(doc: dict) -> str:
    """The result as markdown: environment, model, settings, one table per case, notes."""
    env, model, st = doc["environment"], doc["model"], doc["settings"]
    cfg = model["config"]
    size = ", ".join(f"{k} {cfg[k]}" for k in ("num_attention_heads", "attention_head_dim", "num_layers", "ffn_dim")
                     if k in cfg)
    lines = [f"# vidrt bench: {model['spec']} on {env['device_name']}", "",
             f"- environment: {env['device']} ({env['device_name']}), {env['threads']} threads, vidrt {env['vidrt']}, "
             f"torch {env['torch']}, diffusers {env.get('diffusers') or '-'}"
             + (f", commit {env['git_commit']}" if env.get("git_commit") else ""),
             f"- model: `{model['spec']}` ({size}; {_params(cfg.get('dit_parameters', 0))} DiT parameters)"
             + (", random weights" if model["random"] else "") + (", embedded default model" if model["embedded"] else ""),
             f"- settings: {st['steps']} steps, guidance {st['guidance']}, {st['text_len']} text tokens, "
             f"{st['warmup']} warm-up + {st['repeats']} measured runs per runtime (interleaved), seed {st['seed']}",
             f"- created {doc['created']}" + (f" by `{doc['command']}`" if doc.get("command") else ""), ""]
    gpu = env["device"].startswith("cuda")
    for case in doc["cases"]:
        lines += [f"## {case['height']}x{case['width']}, {case['frames']} frames, batch {case['batch']} "
                  f"({case['tokens']} DiT tokens per clip)", "",
                  "| runtime | latency median [p10-p90] | text | DiT / step | VAE | videos/min | frames/s | "
                  f"DiT tokens/s | {'CUDA max alloc' if gpu else 'peak RSS (+run)'} | PSNR vs exact | adherence | "
                  "speedup vs baseline |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in case["results"]:
            lat, sg, th, mem, q = r["latency_s"], r["stages"], r["throughput"], r["memory"], r["quality"]
            if gpu:
                memtxt = _num(mem.get("cuda_max_allocated_mb"), ".0f", " MiB")
            else:
                memtxt = (f"{_num(mem.get('peak_rss_mb'), '.0f')} MiB (+{_num(mem.get('peak_rss_delta_mb'), '.0f')})"
                          if mem.get("peak_rss_mb") is not None else "-")
            psnr = "exact" if q["is_exact_reference"] else (
                _num(q["psnr_vs_exact_db"], ".1f", " dB") if q["psnr_vs_exact_db"] is not None
                else ("identical" if q.get("note") == "frames identical to the exact path" else "-"))
            lines.append(
                f"| {r['label']} | {_t(lat['median'])} [{_t(lat['p10'])}-{_t(lat['p90'])}] | {_stat(sg.get('text_s'))} "
                f"| {_stat(sg.get('dit_per_step_s'))} | {_stat(sg.get('vae_s'))} | {_num(th['videos_per_min'])} "
                f"| {_num(th['frames_per_s'], '.1f')} | {_num(th.get('dit_tokens_per_s'), ',.0f')} | {memtxt} | {psnr} "
                f"| {_num(q.get('adherence'), '.3f')} | {_num(r.get('speedup_vs_baseline'), '.2f', 'x')} |")
        lines.append("")
    batches = sorted({c["batch"] for c in doc["cases"]})
    if len(batches) > 1:
        lines += ["## Throughput vs batch size (videos/min)", "",
                  "| shape | runtime | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|---|" + "---|" * len(batches)]
        for shape, label, by_batch in _batch_series(doc):
            lines.append(f"| {shape} | {label} | " + " | ".join(_num(by_batch.get(b)) for b in batches) + " |")
        lines.append("")
    if doc["notes"]:
        lines += ["Notes:", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    return "\n".join(lines)


def _batch_series(doc: dict):
    series: dict[tuple[str, str], dict[int, float]] = {}
    for c in doc["cases"]:
        for r in c["results"]:
            series.setdefault((f"{c['height']}x{c['width']}x{c['frames']}", r["label"]), {})[c["batch"]] = \
                r["throughput"]["videos_per_min"]
    return [(s, l, v) for (s, l), v in series.items()]


def plot(doc: dict, path: Union[str, Path]) -> Path:
    """Write a PNG: latency vs tokens and DiT/step vs tokens per label (+ videos/min vs batch)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        raise BackendUnavailableError("--plot needs matplotlib, which is not installed; "
                                      "pip install 'vidrt[bench]' (or matplotlib), or drop --plot") from None
    batches = sorted({c["batch"] for c in doc["cases"]})
    b0 = batches[0]
    by_tokens = len({c["tokens"] for c in doc["cases"]}) > 1  # a shape sweep; else a batch sweep on one shape
    panels = 3 if len(batches) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), squeeze=False)
    axes = axes[0]
    labels = list(dict.fromkeys(r["label"] for c in doc["cases"] for r in c["results"]))
    for label in labels:
        pts = sorted((c["tokens"] if by_tokens else c["batch"], r) for c in doc["cases"]
                     if c["batch"] == b0 or not by_tokens for r in c["results"] if r["label"] == label)
        for ax, get in ((axes[0], lambda r: r["latency_s"]), (axes[1], lambda r: r["stages"].get("dit_per_step_s"))):
            ys = [(t, get(r)) for t, r in pts if get(r)]
            if not ys:
                continue
            med = [s["median"] for _, s in ys]
            err = [[s["median"] - s["p10"] for _, s in ys], [s["p90"] - s["median"] for _, s in ys]]
            ax.errorbar([t for t, _ in ys], med, yerr=err, marker="o", capsize=3, label=label)
    lat_title = f"end-to-end latency (batch {b0})" if by_tokens else "end-to-end latency per call"
    for ax, title in ((axes[0], lat_title), (axes[1], "DiT time per denoising step")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.autoscale_view()
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = axis.get_view_interval()
            few = hi / max(lo, 1e-12) < 10  # less than a decade: label the 2-9 ticks too
            axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0) if not few else
                                                     tuple(float(i) for i in range(1, 10))))
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("DiT tokens per clip" if by_tokens else "prompts per call (batch)")
        ax.set_ylabel("seconds (median, p10-p90 bars)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if len(batches) > 1:
        ax = axes[2]
        for shape, label, by_batch in _batch_series(doc):
            bs = sorted(by_batch)
            ax.plot(bs, [by_batch[b] for b in bs], marker="o", label=f"{label} {shape}")
        ax.set_xlabel("prompts per call (batch)")
        ax.set_ylabel("videos / min")
        ax.set_xticks(batches)
        ax.set_title("throughput vs batch size")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    env, st = doc["environment"], doc["settings"]
    fig.suptitle(f"vidrt bench: {doc['model']['spec']}, {st['steps']} steps, {env['device_name']}, "
                 f"{env['threads']} threads", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
