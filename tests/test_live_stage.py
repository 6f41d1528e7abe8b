"""A stage's figures while it runs: what /report's progress and /metrics show mid-stage.

`achieved_rps` is completions over the time elapsed so far (not over the planned duration, which made a
stage on schedule at 100 rps read 18 -> 56 as it went), `scheduled` the arrivals taken from the
timetable so far, `sent` the requests sent (`in_flight` of them unanswered), `generator_cpu_s` the CPU
so far; the same through the worker pool's partial figures.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientSession, web

from profiler.app.server import Sidecar, make_app
from profiler.config import parse_config
from profiler.core.results import OK, Result, StageTally
from profiler.examples.holdout import write_holdout
from profiler.measure.latency import StageRecorder
from profiler.record.report import report_schema
from profiler.schedule import make_stage

pytestmark = pytest.mark.serial  # timing bounds: run alone after the parallel part (Makefile)

SCHEMA = report_schema()
MS = 1_000_000
S = 1_000_000_000


class Clocks:
    """The engine's two clocks, set by hand (pure logic: no engine, no sleep)."""

    def __init__(self) -> None:
        self.now_ns = 0
        self.cpu_s = 10.0

    def tally(self, started_ns: int) -> StageTally:
        return StageTally(started_ns, lambda: self.now_ns, lambda: self.cpu_s, self.cpu_s)


def _answer(recorder: StageRecorder, intended_ns: int, latency_ns: int = 5 * MS) -> None:
    recorder.add(Result(1, 0, 1, intended_ns, intended_ns, intended_ns + latency_ns, OK, [0]))


def test_live_figures_count_from_the_elapsed_time_not_the_planned_one() -> None:
    clocks = Clocks()
    stage = make_stage(1, 100.0, 10.0)  # 10 s planned
    recorder = StageRecorder(stage)
    tally = clocks.tally(started_ns=S)
    recorder.open(S, tally)
    # 2 s in, on schedule: 200 arrivals taken, 199 sent and answered, 1 in flight; 0.3 s of CPU.
    for i in range(200):
        tally.scheduled += 1
        tally.sent += 1
        if i < 199:
            _answer(recorder, S + i * 10 * MS)
    clocks.now_ns, clocks.cpu_s = 3 * S, 10.3
    live = recorder.summary()
    assert live["achieved_rps"] == pytest.approx(199 / 2.0)
    assert (live["scheduled"], live["sent"], live["in_flight"], live["completed"]) == (200, 200, 1, 199)
    assert live["generator_cpu_s"] == pytest.approx(0.3)
    assert live["generator"]["cpu_share"] == pytest.approx(0.15)
    assert live["error_rate"] == 0.0
    assert recorder.running
    # Ended: the account decides, and the rate is over the planned duration again.
    _answer(recorder, S + 199 * 10 * MS)
    clocks.now_ns, clocks.cpu_s = 11 * S, 11.0
    recorder.close(tally.account(11 * S, cut_short=False))
    final = recorder.summary()
    assert not recorder.running and "in_flight" not in final
    assert (final["scheduled"], final["sent"], final["completed"]) == (200, 200, 200)
    assert final["achieved_rps"] == pytest.approx(200 / 10.0)
    assert final["generator_cpu_s"] == pytest.approx(1.0)


def test_worker_partials_carry_the_live_figures_to_the_parent() -> None:
    stage = make_stage(1, 100.0, 10.0)
    parts = []
    for index in range(2):
        clocks = Clocks()
        part = StageRecorder(stage)
        tally = clocks.tally(S)
        part.open(S, tally)
        for i in range(100):  # each worker takes every other arrival: 50 rps each
            tally.scheduled += 1
            tally.sent += 1
            if i < 98:
                _answer(part, S + (2 * i + index) * 10 * MS)
        clocks.now_ns, clocks.cpu_s = 3 * S + index * 100 * MS, 10.2
        parts.append(part.to_wire())
    parent = StageRecorder(stage)
    parent.open(S)  # the pool's recorder: no tally, figures as of the workers' partials
    assert parent.summary()["achieved_rps"] is None  # nothing is known yet: no fake zero
    parent.rebuild(parts)
    live = parent.summary()
    assert (live["scheduled"], live["sent"], live["in_flight"], live["completed"]) == (200, 200, 4, 196)
    assert live["achieved_rps"] == pytest.approx(196 / 2.1)  # as of the later partial
    assert live["generator_cpu_s"] == pytest.approx(0.4)


PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  accuracy_pass: false
  workers: {workers}
  stages: [{{rate_rps: 100, duration_s: 5}}]
objective: {{latency_ms: 1000}}
resources: {{settle_s: 0}}
history: {{enabled: false}}
report: {{path: report.json}}
"""


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf'^{name}{{model="digits",stage="stage-1"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_live_figures_mid_stage(tmp_path: Path, example_server: tuple[Any, str], workers: int) -> None:
    _, url = example_server
    write_holdout(tmp_path / "holdout.jsonl")
    config = parse_config(PROFILE.format(url=url, workers=workers), tmp_path / "p.yaml")
    sidecar = Sidecar(config)
    runner = web.AppRunner(make_app(sidecar), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    seen: dict[str, Any] = {}
    try:
        sidecar.start_run()
        async with ClientSession() as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            # Two seconds into a five-second stage: the old figures read about 40 rps here.
            while loop.time() < deadline and not sidecar.finished.is_set():
                async with session.get(f"{base}/report") as response:
                    body = await response.json()
                progress = body.get("progress") or {}
                stages = progress.get("stages") or []
                if stages and stages[0]["sent"] >= 200 and progress["stages_done"] == 0:
                    jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": "#/$defs/progress"}
                                                    ).validate(body)
                    seen = stages[0]
                    async with session.get(f"{base}/metrics") as response:
                        seen["metrics"] = await response.text()
                    break
                await asyncio.sleep(0.1)
    finally:
        await sidecar.shutdown(5.0)
        await sidecar.probe.close()
        await runner.cleanup()
    assert seen, "the stage was never seen running past 200 requests"
    assert 65 <= seen["achieved_rps"] <= 135, seen["achieved_rps"]
    assert seen["scheduled"] >= seen["sent"] > 0 and seen["scheduled"] - seen["sent"] - seen["unsent"] <= workers
    assert seen["sent"] >= seen["completed"] + seen["errors"]
    assert seen["generator_cpu_s"] > 0
    exported = _metric(seen["metrics"], "profiler_achieved_rate_requests_per_second")
    assert exported is not None and 65 <= exported <= 135, exported
