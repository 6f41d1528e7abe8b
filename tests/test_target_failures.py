"""A real target that misbehaves mid-run: errors are classified, counted, and the run goes on or stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from profiler.app.run import execute
from profiler.config import parse_config
from profiler.examples.holdout import write_holdout
from profiler.state import new_state

REPLY = {"model_name": "digits", "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [3]}]}

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 0.3, ready_timeout_s: 5}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  accuracy_pass: false
  on_error: {on_error}
  stages: [{{rate_rps: 40, duration_s: 1}}, {{rate_rps: 40, duration_s: 0.5}}]
resources: {{settle_s: 0}}
gates: [{{metric: error_rate, max: 0.01}}]
"""


async def start_target(mode: str, healthy_requests: int) -> tuple[web.AppRunner, str]:
    """A V2 target that answers `healthy_requests` inferences, then fails in the given way."""
    served = {"n": 0}

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def infer(request: web.Request) -> web.StreamResponse:
        await request.read()
        served["n"] += 1
        if served["n"] <= healthy_requests:
            return web.json_response(REPLY)
        if mode == "hang":
            await asyncio.sleep(30)
        if mode == "status":
            return web.json_response({"error": "overloaded"}, status=503)
        if mode == "garbage":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        raise AssertionError(mode)

    async def metadata(_: web.Request) -> web.Response:
        return web.json_response({"name": "digits", "versions": ["1"], "platform": "test",
                                  "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 64]}],
                                  "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]})

    app = web.Application()
    app.router.add_get("/v2/models/digits", metadata)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/digits/ready", ready)
    app.router.add_post("/v2/models/digits/infer", infer)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.mark.parametrize(
    ("mode", "on_error", "kind", "stages_run", "status"),
    [
        ("hang", "stop", "timeout", 1, "stopped"),
        ("hang", "continue", "timeout", 2, "completed"),
        ("status", "continue", "http_status", 2, "completed"),
        ("garbage", "stop", "decode", 1, "stopped"),
    ],
)
async def test_target_that_stops_answering_mid_stage(tmp_path: Path, mode, on_error, kind, stages_run, status):
    runner, url = await start_target(mode, healthy_requests=10)
    try:
        write_holdout(tmp_path / "holdout.jsonl")
        config = parse_config(PROFILE.format(url=url, on_error=on_error), tmp_path / "p.yaml")
        report = await execute(new_state(config))
    finally:
        await runner.cleanup()
    assert report["run"]["status"] == status
    assert len(report["stages"]) == stages_run
    first = report["stages"][0]
    # Nothing measured is lost: the ten good answers and every failure are in the first stage.
    assert first["completed"] == 10
    assert first["scheduled"] == 40 == first["sent"] + first["unsent"]
    assert first["errors_by_kind"] == {kind: first["errors"]}
    assert first["errors"] + first["unsent"] == 30
    assert first["latency_ms"]["p50"] is not None
    assert report["verdict"]["status"] == "fail"
