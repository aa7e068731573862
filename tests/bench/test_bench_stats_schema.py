import copy

import numpy as np
import pytest

from vidrt.bench import schema
from vidrt.bench.stats import ratio, summarize
from vidrt.errors import ConfigError


def test_summarize_matches_numpy_percentiles():
    x = [0.31, 0.12, 0.5, 0.2, 0.27, 0.9, 0.33]
    s = summarize(x)
    assert s["median"] == pytest.approx(0.31)
    assert s["p10"] == pytest.approx(np.percentile(x, 10)) and s["p90"] == pytest.approx(np.percentile(x, 90))
    assert (s["min"], s["max"], s["n"], s["samples"]) == (0.12, 0.9, 7, x)
    one = summarize([2.0])
    assert one["p10"] == one["median"] == one["p90"] == 2.0
    with pytest.raises(ValueError):
        summarize([])
    assert ratio({"median": 3.0}, {"median": 1.5}) == 2.0 and ratio(None, {"median": 1}) is None


def test_schema_rejects_broken_documents(smoke_run):
    doc = smoke_run[1]
    assert schema.validate(doc) == []
    bad = copy.deepcopy(doc)
    bad["schema"] = "vidrt.bench/0"
    assert schema.validate(bad) == ["$.schema: expected 'vidrt.bench/1', got 'vidrt.bench/0'"]
    bad = copy.deepcopy(doc)
    del bad["cases"][0]["results"][1]["latency_s"]["p90"]
    bad["cases"][1]["tokens"] = "8"
    bad["environment"]["threads"] = None
    bad["cases"][0]["results"][0]["quality"]["is_exact_reference"] = 1
    errs = schema.validate(bad)
    assert "$.cases[0].results[1].latency_s.p90: missing" in errs
    assert "$.cases[1].tokens: expected int, got str" in errs
    assert "$.environment.threads: required, got null" in errs
    assert "$.cases[0].results[0].quality.is_exact_reference: expected bool, got int" in errs
    bad = copy.deepcopy(doc)
    lat = bad["cases"][0]["results"][0]["latency_s"]
    lat["p10"], lat["p90"] = lat["p90"] + 1, lat["p10"]
    assert any("p10 <= median <= p90" in e for e in schema.validate(bad))
    with pytest.raises(ConfigError, match="not a valid vidrt.bench/1 document"):
        schema.check(bad, "x.json")
    assert schema.validate([1]) == ["$: expected a JSON object, got list"]


def test_optional_fields_may_be_null_and_extra_keys_pass(smoke_run):
    doc = copy.deepcopy(smoke_run[1])
    doc["future_field"] = {"anything": 1}
    r = doc["cases"][0]["results"][0]
    r["memory"]["peak_rss_mb"] = None
    del r["stages"]["text_s"]
    assert schema.validate(doc) == []


def test_describe_documents_every_result_field():
    table = schema.describe()
    for key in schema.RESULT:
        assert f"cases[].results[].{key}" in table
    for key in ("schema", "environment.device_name", "cases[].tokens", "notes"):
        assert f"`{key}`" in table


def test_docs_carry_the_current_schema_table():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    docs = [p for p in (root / "docs" / "bench.md", root / "README.md") if p.is_file()]
    assert any(schema.describe() in p.read_text() for p in docs), \
        "the JSON schema table in the docs is stale: regenerate it from vidrt.bench.schema.describe()"
