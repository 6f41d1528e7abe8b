"""The sidecar and its run history: only /runs depends on it, /runs fills what docs/sidecar.md promises,
and a report file it cannot write is logged while the report is still served."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sidecar_helpers import write_profile

from profiler.app.server import Sidecar, make_app
from profiler.config import Config, load_config
from profiler.examples.holdout import write_holdout
from profiler.record.recent_runs import StoreRuns
from profiler.record.store import RunRecord, Store

Client = TestClient[Any, Any]


@pytest.fixture
def make_config(tmp_path: Path, example_server: tuple[Any, str]) -> Callable[..., Config]:
    proc, url = example_server
    holdout = tmp_path / "holdout.jsonl"
    write_holdout(holdout)

    def make(**options: Any) -> Config:
        return load_config(write_profile(tmp_path, url, proc.pid, holdout, settle_s=0, **options))

    return make


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Sidecar], Any]]:
    started: list[tuple[Client, Sidecar]] = []

    async def start(sidecar: Sidecar) -> Client:
        client: Client = TestClient(TestServer(make_app(sidecar), host="127.0.0.1"))
        await client.start_server()
        started.append((client, sidecar))
        return client

    yield start
    for client, sidecar in started:
        await sidecar.shutdown(5.0)
        await sidecar.probe.close()
        await client.close()


async def _run(sidecar: Sidecar) -> None:
    sidecar.start_run()
    await asyncio.wait_for(sidecar.finished.wait(), 60)


@pytest.mark.slow
async def test_a_corrupt_history_fails_only_runs(make_config: Callable[..., Config], serve: Any) -> None:
    config = make_config()
    assert config.history.path is not None
    sidecar = Sidecar(config)
    client = await serve(sidecar)
    await _run(sidecar)
    assert sidecar.state is not None and sidecar.state.report is not None
    first = sidecar.state.report["run"]["id"]
    config.history.path.write_bytes(b"this is not a SQLite database" * 100)
    for suffix in ("-wal", "-shm"):
        config.history.path.with_name(config.history.path.name + suffix).unlink(missing_ok=True)
    # The next run cannot start (its predecessor is looked up in the history): /report says why, with 200.
    await _run(sidecar)
    response = await client.get("/report")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "error" and "not a readable SQLite database" in body["error"]
    assert body["latest_run_id"] == first  # the history cannot say: this process's own last run
    text = await client.get("/report", params={"format": "text"})
    assert text.status == 200 and "not a readable SQLite database" in await text.text()
    for path in ("/runs", f"/runs/{first}"):
        response = await client.get(path)
        assert response.status == 503 and "not a readable SQLite database" in (await response.json())["error"]
    assert (await client.get("/metrics")).status == 200 and (await client.get("/healthz")).status == 200


@pytest.mark.slow
async def test_runs_of_this_process_have_duration_and_reason(make_config: Callable[..., Config], serve: Any) -> None:
    config = make_config()
    assert config.history.path is not None
    sidecar = Sidecar(config)
    assert isinstance(sidecar.history, StoreRuns)
    client = await serve(sidecar)
    await _run(sidecar)
    assert sidecar.state is not None and sidecar.state.report is not None
    report = sidecar.state.report
    # A run of another process, saved in the same history: the store has no duration or reason for it.
    other = {**report, "run": {**report["run"], "id": "another-process-run"}}
    with Store(config.history.path) as store:
        store.save_run(RunRecord("another-process-run", other, {}, [], []))
    runs = (await (await client.get("/runs")).json())["runs"]
    assert [r["id"] for r in runs] == ["another-process-run", report["run"]["id"]]
    ours = runs[1]
    assert ours["duration_s"] == report["run"]["duration_s"] > 0
    assert ours["reason"] == report["verdict"]["reason"] and ours["reason"]
    assert (runs[0]["duration_s"], runs[0]["reason"]) == (None, None)


@pytest.mark.slow
async def test_a_report_file_that_cannot_be_written_is_logged_and_still_served(
        make_config: Callable[..., Config], serve: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config()
    folder = tmp_path / "a-folder"
    folder.mkdir()
    config = config.model_copy(update={"report": config.report.model_copy(update={"path": folder})})
    sidecar = Sidecar(config)
    client = await serve(sidecar)
    with caplog.at_level(logging.INFO, logger="profiler.app.server"):
        await _run(sidecar)
    body = await (await client.get("/report")).json()
    assert body.get("schema_version") == 1 and body["verdict"]["status"] == "pass", body
    assert sidecar.problems == [f"cannot write the report to {folder}: Is a directory"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"cannot write the report to {folder}: Is a directory" in errors[0], errors
    assert not list(folder.iterdir()) and not list(tmp_path.glob(".report-*"))
