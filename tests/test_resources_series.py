"""The resources section built from a recorded series: before/peak/after, CPU, completeness, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.judge.catalogue import flatten_metrics
from profiler.judge.verdict import evaluate_gate
from profiler.measure.resources.series import (
    ACCURACY,
    AFTER,
    BEFORE,
    LOAD,
    STARTING,
    BoundedSeries,
    ResourcePoint,
    cores_between,
    summarise,
)

FIXTURES = Path(__file__).parent / "fixtures" / "resources"
MIB = 2**20


def point(t_s: float, memory: int | None, cpu_s: float | None, phase: str, requests: int = 0) -> ResourcePoint:
    return ResourcePoint(t_s, memory, cpu_s, 1, phase, requests, memory)


def recorded(series: BoundedSeries, name: str) -> BoundedSeries:
    for p in json.loads((FIXTURES / name).read_text())["series"]:
        series.add(ResourcePoint(p["t_s"], p["rss_bytes"], p["cpu_s"], 1, p["phase"], p["requests"],
                                 p["memory_bytes"]))
    return series


def test_before_peak_after() -> None:
    series = BoundedSeries()
    for p in [point(0, 500 * MIB, 0.0, STARTING), point(1, 100 * MIB, 1.0, BEFORE), point(2, 102 * MIB, 1.0, BEFORE),
              point(3, 101 * MIB, 1.0, BEFORE), point(4, 150 * MIB, 1.5, ACCURACY, 0),
              point(5, 180 * MIB, 2.5, LOAD, 100), point(6, 200 * MIB, 4.5, LOAD, 300),
              point(7, 190 * MIB, 5.5, LOAD, 400), point(8, 120 * MIB, 5.5, AFTER, 400),
              point(9, 121 * MIB, 5.6, AFTER, 400)]:
        series.add(p)
    section = summarise(series, "test", [])
    memory, cpu = section["memory"], section["cpu"]
    assert memory["before_bytes"] == 101 * MIB  # median of the 'before' phase, not the start-up spike
    assert memory["peak_bytes"] == 500 * MIB and memory["peak_t_s"] == 0
    assert memory["after_bytes"] == 120.5 * MIB
    assert memory["growth_bytes"] == pytest.approx(19.5 * MIB)
    assert memory["growth_pct"] == pytest.approx(19.5 / 101 * 100)
    assert memory["steady_bytes"] == 190 * MIB  # the last third of the load
    assert cpu["cores_under_load"] == pytest.approx((5.5 - 2.5) / 2)
    assert cpu["cores_peak"] == pytest.approx(2.0)
    assert cpu["seconds_per_request"] == pytest.approx(3.0 / 300)
    assert cpu["cores_before"] == pytest.approx(0.0)
    assert section["measured"] and section["complete"]
    assert [p["phase"] for p in section["series"]][:2] == [STARTING, BEFORE]
    assert [p["cores"] for p in section["series"]] == [None, 1.0, 0.0, 0.0, 0.5, 1.0, 2.0, 1.0, 0.0, 0.1]


def test_nothing_measured() -> None:
    section = summarise(BoundedSeries(), "none", ["pid 7 does not exist or has exited"])
    assert not section["measured"] and not section["complete"]
    assert section["incomplete"] == "no memory reading was taken"
    assert section["leak"]["status"] == "inconclusive"
    assert all(v is None for v in section["memory"].values())
    metrics = flatten_metrics({"resources": section})
    for name in ("memory_leak", "memory_peak_bytes", "memory_steady_bytes", "cpu_seconds_per_request",
                 "memory_growth_bytes_per_request"):
        assert metrics[name] is None
        assert evaluate_gate(name, metrics[name], None, 0.0).status == "inconclusive"


def test_incomplete_series_makes_memory_metrics_inconclusive() -> None:
    series = recorded(BoundedSeries(), "demo_leak_10kb.json")
    section = summarise(series, "test", ["pid 1 exited"], incomplete="pid 1 does not exist or has exited")
    assert section["measured"] and not section["complete"]
    assert section["memory"]["peak_bytes"] is not None  # the figures stay in the report for people
    metrics = flatten_metrics({"resources": section})
    assert metrics["memory_leak"] is None and metrics["memory_peak_bytes"] is None


@pytest.mark.parametrize(("name", "leak", "leak_gate"), [("demo_normal.json", 0.0, "pass"),
                                                         ("demo_leak_10kb.json", 1.0, "fail")])
def test_recorded_demo_series_through_the_verdict(name: str, leak: float, leak_gate: str) -> None:
    section = summarise(recorded(BoundedSeries(), name), "test", [])
    metrics = flatten_metrics({"resources": section})
    assert metrics["memory_leak"] == leak
    assert evaluate_gate("memory_leak", metrics["memory_leak"], None, 0.0).status == leak_gate
    assert metrics["cpu_seconds_per_request"] is not None and 0 < metrics["cpu_seconds_per_request"] < 1
    json.dumps(section, allow_nan=False)


def test_series_stays_bounded_and_keeps_the_peak() -> None:
    series = BoundedSeries(capacity=16)
    for i in range(1000):
        series.add(point(i, 100 * MIB + (50 * MIB if i == 777 else i), float(i), LOAD, i))
    assert len(series.points) < 16 and series.stride > 1
    assert series.peak is not None and series.peak.t_s == 777
    section = summarise(series, "test", [])
    assert section["memory"]["peak_bytes"] == 150 * MIB
    assert section["series_stride"] == series.stride


def test_missing_readings_are_not_a_peak() -> None:
    series = BoundedSeries()
    series.add(point(0, None, None, BEFORE))
    series.add(point(1, 5, 1.0, BEFORE))
    series.add(point(2, None, None, BEFORE))
    assert series.peak is not None and series.peak.memory_bytes == 5


@pytest.mark.parametrize(
    ("points", "cores"),
    [
        ([], None),
        ([point(0, 1, 1.0, LOAD)], None),
        ([point(0, 1, 1.0, LOAD), point(0, 1, 2.0, LOAD)], None),  # no time passed
        ([point(0, 1, None, LOAD), point(2, 1, None, LOAD)], None),
        ([point(0, 1, 1.0, LOAD), point(2, 1, 2.0, LOAD)], 0.5),
    ],
)
def test_cores_between(points: list[ResourcePoint], cores: float | None) -> None:
    assert cores_between(points) == cores
