"""The Prometheus collector over a run's live state and report: names, labels and values, and promtool's lint."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from profiler.config import Config, parse_config
from profiler.core.results import CONNECTION, OK, TIMEOUT, Result
from profiler.measure.latency import StageRecorder
from profiler.measure.resources.series import ResourcePoint
from profiler.record.exporter import RunCollector, bucket_bounds_s
from profiler.schedule import Stage
from profiler.state import RunState, new_state
from tests.conftest import require

MS = 1_000_000


def _config(tmp_path: Path, latency_ms: float = 100) -> Config:
    text = f"""
target: {{url: "http://user:pw@127.0.0.1:9", model: digits}}
dataset: {{path: holdout.jsonl}}
load: {{stages: [{{rate_rps: 10, duration_s: 1}}]}}
objective: {{latency_ms: {latency_ms}}}
"""
    return parse_config(text, tmp_path / "profile.yaml")


def _state(tmp_path: Path) -> RunState:
    state = new_state(_config(tmp_path))
    recorder = StageRecorder(Stage(1, 10.0, 1.0))
    for i, (latency_ms, outcome) in enumerate([(8, OK), (40, OK), (150, OK), (3000, OK), (0, TIMEOUT),
                                               (0, CONNECTION)]):
        recorder.add(Result(1, i, 1, 0, 0, latency_ms * MS, outcome, [1] if outcome == OK else None, "boom"))
    recorder.unsent = 2
    recorder.started_ns, recorder.ended_ns = 0, 1_000 * MS
    state.recorders.append(recorder)
    state.recorders.append(StageRecorder(Stage(2, 20.0, 1.0)))  # started, nothing finished yet
    state.phase = "load"
    return state


def _scrape(state: RunState | None) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    registry.register(RunCollector(lambda: state))
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _one(samples: dict[str, Any], name: str, **labels: str) -> float:
    matches = [v for k, v in samples[name].items() if set(labels.items()) <= set(k)]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return float(matches[0])


def test_nothing_before_the_first_run() -> None:
    assert _scrape(None) == {}


def test_live_load_figures(tmp_path: Path) -> None:
    state = _state(tmp_path)
    samples = _scrape(state)
    assert _one(samples, "profiler_run_info", phase="load", model="digits", run_id=state.run_id) == 1
    assert _one(samples, "profiler_requests_total", stage="stage-1", outcome="ok") == 4
    assert _one(samples, "profiler_requests_total", stage="stage-1", outcome="timeout") == 1
    assert _one(samples, "profiler_requests_total", stage="stage-1", outcome="decode") == 0
    assert _one(samples, "profiler_requests_total", stage="stage-2", outcome="ok") == 0
    assert _one(samples, "profiler_requests_unsent_total", stage="stage-1") == 2
    # Buckets from 100 µs up, finer around the 100 ms objective, cumulative, successful requests only.
    buckets = {dict(k)["le"]: v for k, v in samples["profiler_request_latency_seconds_bucket"].items()
               if dict(k)["stage"] == "stage-1"}
    assert buckets == {"0.0001": 0, "0.00025": 0, "0.0005": 0, "0.001": 0, "0.0025": 0, "0.005": 0, "0.01": 1,
                       "0.025": 1, "0.05": 2, "0.075": 2, "0.1": 2, "0.15": 2, "0.2": 3, "0.25": 3, "0.5": 3, "1": 3,
                       "+Inf": 4}
    assert _one(samples, "profiler_request_latency_seconds_count", stage="stage-1") == 4
    assert _one(samples, "profiler_request_latency_seconds_sum", stage="stage-1") == pytest.approx(3.198, rel=1e-2)
    assert _one(samples, "profiler_request_latency_percentile_seconds", stage="stage-1",
                percentile="50") == pytest.approx(0.040, rel=1e-2)
    assert _one(samples, "profiler_request_latency_percentile_seconds", stage="stage-1",
                percentile="99.9") == pytest.approx(3.0, rel=1e-2)
    # An empty stage has no percentiles (never a fake zero) but has its offered rate.
    assert not [k for k in samples["profiler_request_latency_percentile_seconds"] if ("stage", "stage-2") in k]
    assert _one(samples, "profiler_offered_rate_requests_per_second", stage="stage-2") == 20
    # 4 successes over the window to the last answer (3 s), which is longer than the stage's 1 s.
    assert _one(samples, "profiler_achieved_rate_requests_per_second", stage="stage-1") == pytest.approx(4 / 3)
    # No sampler reading yet, no report yet: no memory, no verdict.
    for name in ("profiler_target_memory_rss_bytes", "profiler_verdict", "profiler_accuracy_ratio"):
        assert name not in samples
    text = generate_latest(_registry(state)).decode()
    assert "pw" not in text and "127.0.0.1" not in text


def _registry(state: RunState) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RunCollector(lambda: state))
    return registry


def test_resources_from_the_latest_reading(tmp_path: Path) -> None:
    state = _state(tmp_path)
    for t, memory in ((0.0, 100), (1.0, 300), (2.0, 200)):
        state.series.add(ResourcePoint(t, memory + 5, t * 0.5, 3, "load", memory_bytes=memory))
    samples = _scrape(state)
    assert _one(samples, "profiler_target_memory_bytes", figure="none") == 200
    assert _one(samples, "profiler_target_memory_peak_bytes") == 300
    assert _one(samples, "profiler_target_memory_rss_bytes") == 205
    assert _one(samples, "profiler_target_cpu_seconds_total") == 1.0
    assert _one(samples, "profiler_target_processes") == 3


def test_unreadable_figures_are_left_out(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.series.add(ResourcePoint(0.0, None, None, 0, "load", memory_bytes=None))
    samples = _scrape(state)
    for name in ("profiler_target_memory_bytes", "profiler_target_memory_peak_bytes",
                 "profiler_target_memory_rss_bytes", "profiler_target_cpu_seconds_total"):
        assert name not in samples
    assert _one(samples, "profiler_target_processes") == 0


def _report(**resources: Any) -> dict[str, Any]:
    return {
        "accuracy": {"accuracy": 0.9, "f1_macro": 0.85, "coverage": 1.0, "precision_macro": None},
        "metrics": {"inconsistent_rate": 0.0},
        "capacity": {"max_sustained_rps": 50.0},
        "stages": [{"name": "warmup"}, {"name": "stage-1", "objective": {"sustained": True}},
                   {"name": "stage-2", "objective": {"sustained": False}}],
        "resources": {"memory": {"growth_bytes": 4096.0}, **resources},
        "run": {"finished_at": "2026-01-02T03:04:05+00:00"},
        "verdict": {"status": "fail", "checks": [{"metric": "f1_macro", "status": "fail"},
                                                 {"metric": "f1_macro", "status": "pass", "kind": "change"},
                                                 {"metric": "error_rate", "status": "pass"},
                                                 {"metric": "odd", "status": "unknown"}]},
    }


def test_report_figures(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.report = _report()
    samples = _scrape(state)
    assert _one(samples, "profiler_accuracy_ratio", metric="f1_macro") == 0.85
    assert not [k for k in samples["profiler_accuracy_ratio"] if ("metric", "precision_macro") in k]
    assert _one(samples, "profiler_prediction_inconsistency_ratio") == 0
    assert _one(samples, "profiler_capacity_max_sustained_requests_per_second") == 50
    assert _one(samples, "profiler_stage_sustained", stage="stage-1") == 1
    assert _one(samples, "profiler_stage_sustained", stage="stage-2") == 0
    assert len(samples["profiler_stage_sustained"]) == 2
    assert _one(samples, "profiler_target_memory_growth_bytes") == 4096
    assert _one(samples, "profiler_verdict") == -1
    assert {dict(k)["state"]: v for k, v in samples["profiler_verdict_state"].items()} == {
        "pass": 0, "inconclusive": 0, "fail": 1}
    assert _one(samples, "profiler_last_run_end_timestamp_seconds") == 1767323045
    assert _one(samples, "profiler_verdict_check", metric="f1_macro", kind="absolute") == -1
    assert _one(samples, "profiler_verdict_check", metric="f1_macro", kind="change") == 1
    assert _one(samples, "profiler_verdict_check", metric="error_rate") == 1
    assert len(samples["profiler_verdict_check"]) == 3
    assert "profiler_memory_leak" not in samples


@pytest.mark.parametrize(
    ("leak", "expected"),
    [
        ({"status": "leaked", "reason": "r", "bytes_per_request": 1024.5, "bytes_per_hour": 7200.0,
          "hours_to_limit": 2.0},
         {"profiler_memory_leak": 1.0, "profiler_memory_growth_bytes_per_request": 1024.5,
          "profiler_memory_growth_bytes_per_second": 2.0, "profiler_memory_limit_reached_in_seconds": 7200.0}),
        ({"status": "no leak", "reason": "r", "bytes_per_request": 3.0, "bytes_per_hour": None},
         {"profiler_memory_leak": 0.0, "profiler_memory_growth_bytes_per_request": 3.0}),
        ({"status": "inconclusive", "reason": "r", "bytes_per_request": math.nan}, {"profiler_memory_leak": -1.0}),
        ({"status": "something new", "bytes_per_request": "fast"}, {"profiler_memory_leak": -1.0}),
        ({}, {}),
        (None, {}),
    ],
)
def test_leak_fields_read_defensively(tmp_path: Path, leak: dict[str, Any] | None, expected: dict[str, float]) -> None:
    state = _state(tmp_path)
    state.report = _report(leak=leak)
    samples = _scrape(state)
    found = {name: _one(samples, name) for name in samples
             if name.startswith(("profiler_memory_leak", "profiler_memory_growth", "profiler_memory_limit"))}
    assert found == expected


@pytest.mark.parametrize(
    ("objective_ms", "expected"),
    [
        (100, [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5,
               1.0]),
        (1, [5e-05, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.005, 0.01]),
        (0, []),
        (-5, []),
        (math.nan, []),
        (math.inf, []),
    ],
)
def test_bucket_bounds(objective_ms: float, expected: list[float]) -> None:
    assert bucket_bounds_s(objective_ms) == pytest.approx(expected)


def test_promtool_accepts_every_family(tmp_path: Path) -> None:
    require(shutil.which("promtool") is not None, "promtool", "apt-get install -y --no-install-recommends prometheus")
    state = _state(tmp_path)
    state.series.add(ResourcePoint(0.0, 100, 0.5, 1, "load", memory_bytes=90))
    state.report = _report(leak={"status": "leaked", "reason": "r", "bytes_per_request": 10.0, "bytes_per_hour": 3600.0,
                                 "hours_to_limit": 1.5})
    text = generate_latest(_registry(state))
    assert b"profiler_memory_limit_reached_in_seconds" in text and b"profiler_target_memory_bytes" in text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
