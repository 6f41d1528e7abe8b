"""Two runs side by side: deltas, direction, significance, the one-line summary."""

from __future__ import annotations

import math

import pytest

from profiler.judge.comparison import compare, metric_order, render, summarise
from profiler.judge.verdict import Significance

A = {"accuracy": 0.90, "latency_p99_ms": 100.0, "memory_peak_bytes": 1000.0, "f1[3]": 0.5, "cpu_cores": None,
     "error_rate": 0.0, "coverage": math.nan}
B = {"accuracy": 0.95, "latency_p99_ms": 120.0, "memory_peak_bytes": 1000.0, "f1[3]": 0.4, "cpu_cores": 0.5,
     "error_rate": 0.01, "coverage": 1.0}


def significance(metric: str):
    return {"accuracy": Significance("McNemar", 0.05, True, p_value=0.001, samples=100),
            "latency_p99_ms": Significance("bootstrap", 20.0, False, ci_low=-5.0, ci_high=40.0, samples=50)}.get(
        metric, "untested")


@pytest.mark.parametrize(("metric", "a", "b", "delta", "pct", "better"), [
    ("accuracy", 0.90, 0.95, 0.05, 5.555555, True),
    ("latency_p99_ms", 100.0, 120.0, 20.0, 20.0, False),   # lower is better
    ("memory_peak_bytes", 1000.0, 1000.0, 0.0, 0.0, None),
    ("f1[3]", 0.5, 0.4, -0.1, -20.0, False),
    ("cpu_cores", None, 0.5, None, None, None),           # missing on one side: no delta
    ("error_rate", 0.0, 0.01, 0.01, None, False),         # no percentage of zero
    ("coverage", None, 1.0, None, None, None),            # NaN is missing
])
def test_rows(metric, a, b, delta, pct, better):
    row = next(r for r in compare(A, B, significance) if r.metric == metric)
    assert row.a == a and row.b == b
    assert row.delta == (None if delta is None else pytest.approx(delta))
    assert row.delta_pct == (None if pct is None else pytest.approx(pct))
    assert row.better is better
    if delta is None:
        assert row.significance is None


def test_default_rows_cover_every_measured_metric_in_order():
    rows = compare(A, B, None)
    assert [r.metric for r in rows] == ["accuracy", "coverage", "error_rate", "latency_p99_ms", "memory_peak_bytes",
                                        "cpu_cores", "f1[3]"]
    assert metric_order(["f1[3]", "zeta@1rps", "accuracy"]) == ["accuracy", "f1[3]", "zeta@1rps"]
    assert compare({}, {}, None) == []


def test_render_and_summary():
    rows = compare(A, B, significance, ["accuracy", "latency_p99_ms", "memory_peak_bytes", "f1[3]"])
    lines = render(rows, "A", "B")
    assert lines[0].split() == ["metric", "A", "B", "delta", "delta", "%", "change", "significance"]
    text = "\n".join(lines)
    assert "significant (p=0.001)" in text
    assert "noise (CI -5..+40)" in text
    assert "WORSE" in text and "same" in text and "untested" in text
    summary = summarise(rows)
    assert summary == ("better on accuracy +5.6%, significant | worse on latency_p99_ms +20.0%, inside the noise; "
                       "f1[3] -20.0%")
    assert summarise([]) == "no measured difference"
