import copy
import json

from vidrt.bench.compare import compare, format_comparison, verdict
from vidrt.cli import main


def _scale(doc, label, factor, metric="latency_s"):
    doc = copy.deepcopy(doc)
    for c in doc["cases"]:
        for r in c["results"]:
            if r["label"] == label:
                s = r["latency_s"] if metric == "latency_s" else r["stages"][metric]
                for k in ("median", "p10", "p90", "min", "max"):
                    s[k] *= factor
                s["samples"] = [v * factor for v in s["samples"]]
    return doc


def _band(doc):
    """Replace every stat with a wide fixed band around its median, so noise tests are deterministic."""
    doc = copy.deepcopy(doc)
    for c in doc["cases"]:
        for r in c["results"]:
            for s in [r["latency_s"], *r["stages"].values()]:
                s["p10"], s["p90"] = s["median"] * 0.9, s["median"] * 1.1
    return doc


def test_verdict_uses_bands_and_min_change():
    old = {"median": 1.0, "p10": 0.95, "p90": 1.05}
    assert verdict(old, {"median": 1.3, "p10": 1.2, "p90": 1.4}) == "regression"
    assert verdict(old, {"median": 0.7, "p10": 0.6, "p90": 0.8}) == "improvement"
    assert verdict(old, {"median": 1.04, "p10": 1.0, "p90": 1.1}) == "noise"          # bands overlap
    assert verdict(old, {"median": 1.06, "p10": 1.051, "p90": 1.07}, 0.1) == "noise"  # disjoint but < 10 %


def test_injected_regression_is_reported_and_noise_ignored(smoke_run, tmp_path, capsys):
    old = _band(smoke_run[1])
    slow = _scale(old, "vidrt fp32 sdpa", 1.5)
    res = compare(old, slow)
    regs = {(c.case, c.label, c.metric) for c in res.regressions}
    assert regs == {("16x16x5-b1", "vidrt fp32 sdpa", "latency_s"), ("32x32x5-b1", "vidrt fp32 sdpa", "latency_s")}
    assert not res.improvements and not res.only_old and not res.only_new
    text = format_comparison(res)
    assert text.splitlines()[0].startswith("REGRESSION") and "x1.50" in text
    # within the bands: +5 % on everything is noise
    assert compare(old, _scale(_scale(old, "vidrt fp32 sdpa", 1.05), "diffusers fp32", 0.96)).regressions == []
    # a faster DiT step is an improvement of that stage only
    fast = _scale(old, "diffusers fp32", 0.5, "dit_per_step_s")
    imp = compare(old, fast).improvements
    assert {c.metric for c in imp} == {"dit_per_step_s"} and {c.label for c in imp} == {"diffusers fp32"}

    a, b, c = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "same.json"
    a.write_text(json.dumps(old))
    b.write_text(json.dumps(slow))
    c.write_text(json.dumps(old))
    capsys.readouterr()
    assert main(["bench", "--compare", str(a), str(b)]) == 1
    assert "2 regression(s)" in capsys.readouterr().out
    assert main(["bench", "--compare", str(a), str(c)]) == 0
    assert "0 regression(s), 0 improvement(s)" in capsys.readouterr().out


def test_compare_lists_unmatched_cases_and_bad_files(smoke_run, tmp_path, capsys):
    old = smoke_run[1]
    new = copy.deepcopy(old)
    new["cases"] = new["cases"][:1]
    res = compare(old, new)
    assert res.only_old == ["32x32x5-b1 / vidrt fp32 sdpa", "32x32x5-b1 / diffusers fp32"] and res.only_new == []
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["bench", "--compare", str(bad), str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"schema": "vidrt.bench/1"}))
    assert main(["bench", "--compare", str(bad), str(bad)]) == 2
    assert "not a valid vidrt.bench/1 document" in capsys.readouterr().err
