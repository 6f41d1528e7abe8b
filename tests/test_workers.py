"""Worker processes against the real example model: exact accounting, one result stream, a live control plane."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from profiler.app.server import Sidecar, make_app
from profiler.config import parse_config
from profiler.examples.holdout import write_holdout
from profiler.load.workers import choose_workers

pytestmark = pytest.mark.serial  # timing bounds: run alone after the parallel part (Makefile)

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 2, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  workers: 2
  accuracy_pass: {accuracy}
  max_in_flight: 64
  stages: {stages}
resources: {{settle_s: 0}}
report: {{path: report.json}}
"""


@pytest.mark.parametrize(
    ("configured", "rate", "cores", "expected"),
    [(None, 100, 2, 1), (None, 10_000, 2, 1), (None, 10_001, 2, 2), (None, 1e6, 2, 2), (None, 1e6, 16, 16),
     (3, 10, 2, 3), (None, 0, 4, 1), (None, float("nan"), 4, 1), (None, 50_000, 0, 1)],
)
def test_choose_workers(configured, rate, cores, expected):
    assert choose_workers(configured, rate, cores) == expected


async def serve_sidecar(config):
    sidecar = Sidecar(config)
    runner = web.AppRunner(make_app(sidecar), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return sidecar, runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_workers_merge_exactly_and_the_control_plane_answers(example_server, tmp_path: Path):
    _, url = example_server
    write_holdout(tmp_path / "holdout.jsonl")
    # 3,000 rps offered is more than the example model serves here: the workers run flat out.
    stages = "[{rate_rps: 100, requests: 150}, {rate_rps: 3000, duration_s: 2}]"
    config = parse_config(PROFILE.format(url=url, accuracy="true", stages=stages), tmp_path / "p.yaml")
    sidecar, runner, base = await serve_sidecar(config)
    sidecar.start_run()
    worst_s = {"/healthz": 0.0, "/report": 0.0, "/metrics": 0.0}
    polls = 0
    live_completed = 0
    try:
        async with aiohttp.ClientSession() as client:
            while sidecar.state.report is None and polls < 2000:
                for path in worst_s:
                    t0 = time.perf_counter()
                    async with client.get(base + path) as response:
                        body = await response.read()
                        assert response.status == 200
                    if path == "/report" and sidecar.state.report is None:
                        progress = json.loads(body)["progress"]
                        if progress["current_stage"] == "stage-2" and len(progress["stages"]) == 2:
                            live_completed = max(live_completed, progress["stages"][1]["completed"])
                    worst_s[path] = max(worst_s[path], time.perf_counter() - t0)
                polls += 1
                await asyncio.sleep(0.05)
        assert sidecar.task is not None
        await asyncio.wait_for(sidecar.task, 60)
    finally:
        await runner.cleanup()
    print("control plane worst answer times (s):", worst_s, "polls", polls)
    # A correctness bound that holds on any machine; the real figure is measured in bench/.
    assert max(worst_s.values()) < 1.0, worst_s
    assert polls > 10
    # While workers run a stage, their figures so far reach /report (every 0.5 s).
    assert live_completed > 0
    report = sidecar.state.report
    assert report is not None
    first, flat_out = report["stages"]
    for stage in (first, flat_out):
        assert stage["processes"] == 2
        assert stage["scheduled"] == stage["sent"] + stage["unsent"]
        assert stage["sent"] == stage["completed"] + stage["errors"]
    assert first["scheduled"] == 150
    assert first["completed"] == 150
    assert flat_out["scheduled"] == 6000
    # Predictions streamed back from both workers into one log: each load request was compared.
    consistency = report["accuracy"]["consistency"]
    assert consistency["compared"] == first["completed"] + flat_out["completed"]
    assert consistency["inconsistent"] == 0


async def test_a_full_pipe_holds_a_worker_back_instead_of_killing_it(example_server, tmp_path: Path, monkeypatch):
    """Results outrun a parent that is busy: the workers' pipes fill. A worker must wait, not fail mid-message.

    The pipes are given tiny socket buffers and the parent's event loop is blocked for 1.5 s, past the
    end of the stage, so they fill within milliseconds and each worker's last flush meets a full pipe
    (the event loop's poller makes the pipe non-blocking; a send on a full non-blocking pipe fails
    halfway through a message, and the worker died of it).
    """
    import multiprocessing.connection
    import os
    import socket

    from profiler.app.run import execute
    from profiler.measure.accuracy import PredictionLog
    from profiler.state import new_state

    real_pipe = multiprocessing.connection.Pipe

    def tiny_pipe(duplex: bool = True) -> tuple[multiprocessing.connection.Connection, ...]:
        ends = real_pipe(duplex)
        for end in ends:
            with socket.socket(fileno=os.dup(end.fileno())) as view:
                view.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                view.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return ends

    monkeypatch.setattr(multiprocessing.connection, "Pipe", tiny_pipe)
    real_add = PredictionLog.add
    blocked = [False]

    def add_once_slowly(self: PredictionLog, result: object) -> None:
        if not blocked[0]:
            blocked[0] = True
            time.sleep(1.5)  # the parent's loop reads nothing meanwhile, past the end of the stage
        real_add(self, result)  # type: ignore[arg-type]

    monkeypatch.setattr(PredictionLog, "add", add_once_slowly)
    _, url = example_server
    write_holdout(tmp_path / "holdout.jsonl")
    config = parse_config(PROFILE.format(url=url, accuracy="false", stages="[{rate_rps: 400, duration_s: 0.6}]"),
                          tmp_path / "p.yaml")
    report = await execute(new_state(config))
    assert blocked[0]
    assert report["run"]["status"] == "completed", report["run"]
    [stage] = report["stages"]
    assert stage["processes"] == 2
    assert stage["scheduled"] == 240
    assert stage["sent"] == stage["completed"] + stage["errors"] and stage["completed"] > 0
