"""Harness pieces without a model: interleaving, memory sampling, reports."""
import sys

import numpy as np
import pytest
import torch

from vidrt.bench import report
from vidrt.bench.memory import PeakMemory, current_rss_bytes
from vidrt.bench.runner import measure_case, parse_shapes, psnr
from vidrt.bench.targets import Request, RunOutput
from vidrt.errors import BackendUnavailableError


class FakeTarget:
    def __init__(self, name, log):
        self.name = self.label = name
        self.device = torch.device("cpu")
        self.log = log

    def settings(self):
        return {}

    def generate(self, req, latents):
        self.log.append(self.name)
        return RunOutput([np.full((1, 2, 2, 3), len(self.log), np.uint8)], {"dit_s": 0.01 * len(self.log)})


def test_measure_case_warms_up_then_interleaves():
    log = []
    a, b = FakeTarget("A", log), FakeTarget("B", log)
    ms = measure_case([a, b], Request(("p",), 16, 16, 1, 1), torch.zeros(1), warmup=2, repeats=3)
    assert log == ["A", "A", "B", "B", "A", "B", "A", "B", "A", "B"]
    assert [len(m.latency) for m in ms] == [3, 3]
    assert ms[0].stages["dit_s"] == pytest.approx([0.05, 0.07, 0.09])
    assert int(ms[1].frames[0][0, 0, 0, 0]) == 6  # frames of the first measured run are kept


def test_peak_memory_sees_a_transient_allocation():
    if current_rss_bytes() is None:
        pytest.skip("no /proc/self/statm on this system")
    with PeakMemory() as m:
        x = np.ones(96 * 2**20 // 8)  # 96 MiB, touched
        import time

        time.sleep(0.05)
        del x
    assert m.peak_delta >= 80 * 2**20
    assert m.peak_rss >= m.start_rss and m.cuda_max_allocated is None
    with PeakMemory() as quiet:
        sum(range(1000))
    assert quiet.peak_delta < 16 * 2**20


def test_psnr_and_shapes():
    a = [np.zeros((2, 4, 4, 3), np.uint8)]
    b = [np.full((2, 4, 4, 3), 255, np.uint8)]
    assert psnr(a, a) is None and psnr(a, b) == pytest.approx(0.0)
    c = [np.full((2, 4, 4, 3), 1, np.uint8)]
    assert psnr(a, c) == pytest.approx(20 * np.log10(255))
    assert parse_shapes("480x832x81, 64x64x33") == [(480, 832, 81), (64, 64, 33)]


def test_report_markdown_and_plot(smoke_run, tmp_path, monkeypatch):
    doc = smoke_run[1]
    md = report.markdown(doc)
    assert md.count("## ") == 2 and "speedup vs baseline" in md and "| exact |" in md
    ratio = doc["cases"][0]["results"][0]["speedup_vs_baseline"]
    assert f"{ratio:.2f}x" in md
    png = report.plot(doc, tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(BackendUnavailableError, match="pip install 'vidrt\\[bench\\]'"):
        report.plot(doc, tmp_path / "q.png")
