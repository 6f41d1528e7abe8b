"""The in-memory run history behind GET /runs: bounded, newest first."""

from __future__ import annotations

from typing import Any

import pytest

from profiler.record.recent_runs import MemoryRuns, run_summary


def _report(run_id: str, verdict: str = "pass") -> dict[str, Any]:
    return {"run": {"id": run_id, "status": "completed", "started_at": "s", "finished_at": "f", "duration_s": 1.0},
            "target": {"model": "digits"}, "verdict": {"status": verdict, "reason": "why"}}


def test_newest_first_and_bounded() -> None:
    history = MemoryRuns(capacity=3)
    for i in range(5):
        history.add(_report(f"r{i}"))
    assert [r["id"] for r in history.list_runs()] == ["r4", "r3", "r2"]
    assert history.get_run("r1") is None
    assert history.get_run("r3") == _report("r3")
    assert [r["id"] for r in history.list_runs(limit=2)] == ["r4", "r3"]


def test_same_id_twice_keeps_the_newer() -> None:
    history = MemoryRuns()
    history.add(_report("a", "fail"))
    history.add(_report("b"))
    history.add(_report("a", "pass"))
    assert [(r["id"], r["verdict"]) for r in history.list_runs()] == [("a", "pass"), ("b", "pass")]


@pytest.mark.parametrize("limit", [0, -1])
def test_non_positive_limit_lists_nothing(limit: int) -> None:
    history = MemoryRuns()
    history.add(_report("a"))
    assert history.list_runs(limit) == []


@pytest.mark.parametrize("capacity", [0, -5])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        MemoryRuns(capacity)


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (_report("x", "fail"), {"id": "x", "status": "completed", "verdict": "fail", "model": "digits"}),
        ({}, {"id": None, "status": None, "verdict": None, "model": None}),
        ({"run": {"id": "y"}}, {"id": "y", "status": None, "verdict": None, "model": None}),
    ],
)
def test_run_summary(report: dict[str, Any], expected: dict[str, Any]) -> None:
    summary = run_summary(report)
    assert {k: summary[k] for k in expected} == expected
