"""Memory at rest before and after the load, read at each phase boundary; and a leak check that says why it
could not decide.

A reading on the interval grid lands in a rest window by luck (none does when settle_s is shorter than
interval_s), so the run reads the model at the start and end of the rest before the load, at the end of
the load and at the end of the rest after it; the series keeps those readings whatever its resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from profiler.app.run import execute
from profiler.config import parse_config
from profiler.examples.holdout import write_holdout
from profiler.judge.verdict import INCONCLUSIVE, Gate, judge
from profiler.measure.resources.series import AFTER, BEFORE, LOAD, BoundedSeries, ResourcePoint, summarise
from profiler.state import new_state

MIB = 2**20


def test_boundary_readings_survive_every_halving() -> None:
    series = BoundedSeries(capacity=16)
    marks = {3: BEFORE, 4: BEFORE, 700: LOAD, 999: AFTER}
    for i in range(1000):
        phase = marks.get(i, LOAD if i < 900 else "idle")
        series.add(ResourcePoint(float(i), 100 * MIB + i, None, 1, phase, i, 100 * MIB + i, boundary=i in marks))
    assert series.stride >= 64 and len(series.points) < 16 + len(marks)
    assert [p.t_s for p in series.points if p.boundary] == [3.0, 4.0, 700.0, 999.0]
    memory = summarise(series, "test", [])["memory"]
    assert memory["before_bytes"] == 100 * MIB + 3.5 and memory["after_bytes"] == 100 * MIB + 999


LEAK_GATE = Gate("memory_leak", max=0.0)


def _report(leak: dict[str, Any], complete: bool = True) -> dict[str, Any]:
    return {"objective": {}, "resources": {"complete": complete, "incomplete": None if complete else "pid 7 exited",
                                           "leak": leak, "memory": {}, "cpu": {}, "footprint": {}}}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (_report({"status": "inconclusive", "reason": "growth of up to 2,914 B per request cannot be ruled out "
                  "(threshold 256); run longer", "bytes_per_request": 1204.4, "bytes_per_request_low": -410.2,
                  "bytes_per_request_high": 2914.0, "window_requests": [120.0, 720.0], "points": 14}),
         "memory_leak: leak test inconclusive: growth of up to 2,914 B per request cannot be ruled out (threshold "
         "256); run longer (growth 1,204 B per request, 95% interval -410 to 2,914, over 600 requests after "
         "warm-up, 14 readings)"),
        (_report({"status": "inconclusive", "reason": "only 3 readings after warm-up; the test needs 10",
                  "window_requests": [40.0, 190.0], "points": 3}),
         "memory_leak: leak test inconclusive: only 3 readings after warm-up; the test needs 10 (over 150 requests "
         "after warm-up, 3 readings)"),
        (_report({"status": "inconclusive", "reason": "no memory reading was taken under load"}),
         "memory_leak: leak test inconclusive: no memory reading was taken under load"),
        (_report({"status": "leaked", "reason": "x"}, complete=False),
         "memory_leak was not measured: the model's resources were not read over the whole run (pid 7 exited)"),
        ({"objective": {}}, "memory_leak was not measured"),
    ],
)
def test_an_undecided_leak_check_says_what_it_found(report: dict[str, Any], expected: str) -> None:
    verdict = judge(report, [LEAK_GATE])
    (check,) = [c for c in verdict.checks if c.metric == "memory_leak"]
    assert (check.status, check.reason) == (INCONCLUSIVE, expected)
    assert verdict.status == INCONCLUSIVE and verdict.reason == expected


PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  accuracy_pass: false
  stages: [{{rate_rps: 100, duration_s: 2}}]
objective: {{latency_ms: 1000}}
gates: [{{metric: memory_leak, max: 0}}, {{metric: memory_growth_bytes, max: 1000000000000}}]
resources: {{pid: {pid}, {resources}}}
history: {{enabled: false}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("resources", [
    "interval_s: 1",                    # the README's settings, with the default settle_s (1 s)
    "interval_s: 30, settle_s: 0.3",    # rests far shorter than the interval: no grid reading lands in them
])
async def test_rest_readings_exist_whatever_the_interval(tmp_path: Path, example_server: tuple[Any, str],
                                                         resources: str) -> None:
    proc, url = example_server
    write_holdout(tmp_path / "holdout.jsonl")
    config = parse_config(PROFILE.format(url=url, pid=proc.pid, resources=resources), tmp_path / "p.yaml")
    report = await execute(new_state(config))
    section = report["resources"]
    assert section["complete"], section["incomplete"]
    memory = section["memory"]
    assert memory["before_bytes"] is not None and memory["after_bytes"] is not None, section["series"]
    assert memory["before_bytes"] > 10 * MIB and memory["growth_bytes"] is not None
    phases = [p["phase"] for p in section["series"]]
    assert phases.count(BEFORE) >= 2 and phases.count(AFTER) >= 1 and LOAD in phases
    # Too short a load for the leak test to decide: the check says what it found and why, not "not measured".
    assert section["leak"]["status"] == "inconclusive"
    (check,) = [c for c in report["verdict"]["checks"] if c["metric"] == "memory_leak"]
    assert check["status"] == "inconclusive"
    assert check["reason"].startswith(f"memory_leak: leak test inconclusive: {section['leak']['reason']}")
    assert "reading" in check["reason"] and "not measured" not in check["reason"]
    growth = [c for c in report["verdict"]["checks"] if c["metric"] == "memory_growth_bytes"]
    assert [c["status"] for c in growth] == ["pass"]
