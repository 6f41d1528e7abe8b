"""Capacity rules are pure: stability, the search's next rate, and the capacity summary, by tables."""

from __future__ import annotations

import math

import pytest

from profiler.judge.capacity import (
    capacity_summary,
    judge_window_stage,
    next_search_rate,
    windows_broken,
    windows_stable,
)


@pytest.mark.parametrize(
    ("windows", "limit", "expected"),
    [
        ([(100, 20.0, 0), (100, 21.0, 0), (99, 19.5, 0)], None, True),
        ([(100, 20.0, 0), (100, 21.0, 0)], None, False),                     # fewer than three
        ([(50, 90.0, 0), (100, 20.0, 0), (100, 21.0, 0), (99, 19.5, 0)], None, True),  # only the last three
        ([(100, 20.0, 0), (80, 20.0, 0), (100, 20.0, 0)], None, False),       # throughput swings 20%
        ([(100, 20.0, 0), (100, 40.0, 0), (100, 60.0, 0)], None, False),      # latency climbing
        ([(100, 2.0, 0), (100, 4.0, 0), (100, 3.0, 0)], 100.0, True),         # far inside the objective
        ([(100, 2.0, 0), (100, 4.0, 0), (100, 3.0, 0)], None, False),
        ([(100, None, 0), (100, 4.0, 0), (100, 3.0, 0)], 100.0, False),       # a window with no answer
        ([(0, 5.0, 3), (0, 5.0, 3), (0, 5.0, 3)], 100.0, False),              # nothing completes
        ([(math.nan, 5.0, 0)] * 3, 100.0, False),
        ([], 100.0, False),
    ],
)
def test_windows_stable(windows, limit, expected):
    assert windows_stable(windows, 3, 0.10, limit) is expected


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ([(100, 250.0, 0), (100, 400.0, 0), (90, 900.0, 0)], True),
        ([(100, 150.0, 0), (100, 400.0, 0), (90, 900.0, 0)], False),
        ([(100, None, 5)] * 3, True),
        ([(100, 300.0, 0)] * 2, False),
    ],
)
def test_windows_broken(windows, expected):
    assert windows_broken(windows, 3, 200.0) is expected


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], 10.0),
        ([(10, True)], 20.0),
        ([(10, True), (20, True), (40, True)], 80.0),
        ([(10, True), (20, True), (40, True), (80, True)], 100.0),     # capped at max
        ([(10, True), (20, True), (40, True), (80, True), (100, True)], None),
        ([(10, True), (20, True), (40, False)], 30.0),                  # bisect
        ([(10, True), (20, True), (40, False), (30, True)], 35.0),
        ([(10, True), (20, True), (40, False), (30, False)], 25.0),
        ([(10, True), (20, True), (40, False), (30, False), (25, True), (27.5, True), (28.75, True)], None),
        ([(10, False)], None),                                          # the start already breaks
        ([(10, True), (20, False), (15, True), (17.5, False), (16.25, True)], 16.875),  # 1.25 apart: > 5%
        ([(10, True), (5, False), (20, False)], 15.0),                 # a bad rate below the best is noise
    ],
)
def test_next_search_rate(history, expected):
    result = next_search_rate(history, 10.0, 2.0, 100.0, 0.05)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    ("start", "factor", "top", "precision"),
    [(0, 2, 10, 0.05), (-1, 2, 10, 0.05), (10, 1, 100, 0.05), (10, 2, 5, 0.05), (10, 2, 100, 0), (10, 2, 100, 1)],
)
def test_next_search_rate_rejects(start, factor, top, precision):
    with pytest.raises(ValueError):
        next_search_rate([], start, factor, top, precision)


@pytest.mark.parametrize("capacity", [37.0, 100.0, 123.0, 999.0])
def test_search_converges_within_precision_on_a_known_knee(capacity):
    history: list[tuple[float, bool]] = []
    while (rate := next_search_rate(history, 10.0, 2.0, 2000.0, 0.05)) is not None:
        history.append((rate, rate <= capacity))
        assert len(history) < 40
    best = max(r for r, ok in history if ok)
    assert capacity * 0.95 <= best <= capacity


def stage(rate, sustained, limited=False, warmup=False):
    return {"offered_rps": rate, "warmup": warmup, "objective": {"sustained": sustained},
            "generator": {"limited": limited}}


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([stage(10, True), stage(20, True), stage(40, False)], (20, 40, False, "model")),
        ([stage(10, True), stage(20, True)], (20, None, True, "schedule")),
        ([stage(10, True), stage(20, False, limited=True)], (10, 20, True, "generator")),
        ([stage(10, False)], (0.0, 10, False, "model")),
        ([stage(10, True), stage(40, False), stage(20, True), stage(30, False)], (20, 30, False, "model")),
        ([stage(5, True, warmup=True)], (None, None, False, None)),
        ([], (None, None, False, None)),
    ],
)
def test_capacity_summary(stages, expected):
    for s in stages:
        if s["warmup"]:
            del s["objective"]
    c = capacity_summary(stages)
    assert (c["max_sustained_rps"], c["first_unsustained_rps"], c["lower_bound"], c["limited_by"]) == expected


def window_stage(offered, windows, p99=50.0, error_rate=0.0):
    return {"offered_rps": offered, "achieved_rps": offered, "error_rate": error_rate,
            "latency_ms": {"p99": p99}, "windows": [{"rps": r, "latency_ms": lat, "errors": 0} for r, lat in windows]}


@pytest.mark.parametrize(
    ("s", "sustained", "reason"),
    [
        (window_stage(100, [(100, 40.0)] * 3), True, None),
        (window_stage(100, [(100, 40.0)] * 2), False, "only 2 measurement windows"),
        (window_stage(100, [(100, 40.0), (60, 40.0), (100, 40.0)]), False, "not stable"),
        (window_stage(100, [(80, 40.0)] * 3), False, "steady 80.0 rps"),
        (window_stage(100, [(100, 40.0)] * 3, p99=250.0), False, "p99 250.0 ms > 200 ms"),
        (window_stage(100, [(100, 40.0)] * 3, error_rate=0.5), False, "error rate 0.5"),
    ],
)
def test_judge_window_stage(s, sustained, reason):
    verdict = judge_window_stage(s, 99.0, 200.0, 0.01)
    assert verdict["sustained"] is sustained
    if reason:
        assert any(reason in r for r in verdict["reasons"]), verdict["reasons"]
