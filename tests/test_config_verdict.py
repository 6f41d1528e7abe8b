"""Config sections of the verdict: gates with change bounds, requirements, node, history, baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.config import parse_config
from profiler.core.errors import ConfigError
from profiler.judge.verdict import ChangeBound, Gate

BASE = """\
target: {url: "http://127.0.0.1:1", model: m}
dataset: {path: data.jsonl}
load: {stages: [{rate_rps: 1, duration_s: 1}]}
"""


def parse(extra: str):
    return parse_config(BASE + extra, Path("/cfg/profile.yaml"))


def test_gate_with_change_becomes_a_pure_gate():
    config = parse("gates:\n  - {metric: f1_macro, min: 0.9, change: {max_worse: 0.01, significant: true}}\n"
                   "  - {metric: latency_p99_ms@100.0rps, change: {min_better: 5, relative: false}, "
                   "greater_is_better: false, required: false}\n")
    gates = [g.to_gate() for g in config.gates]
    assert gates[0] == Gate("f1_macro", 0.9, None, True, ChangeBound(max_worse=0.01, significant=True))
    assert gates[1] == Gate("latency_p99_ms@100rps", None, None, False, ChangeBound(min_better=5.0), False)


@pytest.mark.parametrize(("gate", "message"), [
    ("{metric: acuracy, min: 1}", r"profile.yaml:5: gates.0.metric: unknown metric 'acuracy'; known: accuracy"),
    ("{metric: f1_macro, min: '90%'}", r"gates.0.min: Input should be a valid number"),
    ("{metric: f1_macro, min: '0.9'}", r"gates.0.min: Input should be a valid number"),
    ("{metric: f1_macro, min: true}", r"gates.0.min: Input should be a valid number"),
    ("{metric: f1_macro, min: .nan}", r"gates.0.min: Input should be a finite number"),
    ("{metric: f1_macro, max: [1]}", r"gates.0.max: Input should be a valid number"),
    ("{metric: f1_macro}", r"a gate needs 'min', 'max' or 'change'"),
    ("{metric: f1_macro, min: 0.9, max: 0.5}", r"'min' 0.9 is above 'max' 0.5"),
    ("{metric: f1_macro, change: {}}", r"gates.0.change: a change bound needs exactly one of 'max_worse'"),
    ("{metric: f1_macro, change: {max_worse: 0.1, min_better: 0.1}}", r"exactly one of"),
    ("{metric: f1_macro, change: {max_worse: -0.1}}", r"gates.0.change.max_worse: Input should be greater than"),
    ("{metric: f1_macro, change: {max_worse: 0.1, alpha: 0.7}}", r"gates.0.change.alpha"),
    ("{metric: f1_macro, change: {max_worse: 0.1, direction: up}}", r"gates.0.change.direction: unknown field"),
    ("{metric: memory_peak_bytes, change: {max_worse: 0.1, significant: true}}",
     r"no significance test exists for 'memory_peak_bytes'"),
    ("{metric: latency_max_ms, change: {max_worse: 1, significant: true}}", r"no significance test exists"),
])
def test_bad_gates_name_the_field(gate, message):
    with pytest.raises(ConfigError, match=message):
        parse(f"gates:\n  - {gate}\n")


def test_history_defaults_next_to_the_report():
    config = parse("report: {path: out/report.json}\n")
    assert config.history.path == Path("/cfg/out/profiler-history.sqlite")
    assert config.history.enabled
    assert parse("history: {path: h.sqlite}\n").history.path == Path("/cfg/h.sqlite")
    assert parse("baseline: {run: abc}\n").baseline.run == "abc"


@pytest.mark.parametrize(("text", "expected"), [
    ("16Gi", 16 * 2**30), ("512Mi", 512 * 2**20), ("2G", 2 * 10**9), ("1.5Gi", int(1.5 * 2**30)), (1024, 1024),
])
def test_node_memory_quantities(text, expected):
    value = text if isinstance(text, int) else f'"{text}"'
    config = parse(f"node: {{allocatable_memory_bytes: {value}, price_per_hour: 0.5}}\n")
    assert config.node is not None and config.node.allocatable_memory_bytes == expected


@pytest.mark.parametrize(("section", "message"), [
    ("node: {allocatable_memory_bytes: 16 gigs}", r"node.allocatable_memory_bytes: must be a size like 512Mi"),
    ("node: {allocatable_memory_bytes: 0}", r"node.allocatable_memory_bytes: Input should be greater than 0"),
    ("node: {allocatable_memory_bytes: 1Gi, price_per_hour: -1}", r"node.price_per_hour"),
    ("requirements: {peak_factor: 2}", r"requirements: requirements need 'requests_per_day' or 'peak_rps'"),
    ("requirements: {requests_per_day: 0}", r"requirements.requests_per_day: Input should be greater than 0"),
    ("requirements: {requests_per_day: 100, peak_factor: 0.5}", r"requirements.peak_factor"),
    ("requirements: {requests_per_day: 100, utilisation: 0}", r"requirements.utilisation"),
    ("tracking: {experiment: x}", r"tracking.mlflow_uri: required field is missing"),
])
def test_bad_capacity_sections(section, message):
    with pytest.raises(ConfigError, match=message):
        parse(section + "\n")
