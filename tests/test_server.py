"""The sidecar's HTTP API, in process on 127.0.0.1, profiling the real example model."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sidecar_helpers import write_profile

from profiler.app import run as run_module
from profiler.app import server
from profiler.app.run import conclude
from profiler.app.server import MAX_BODY_BYTES, READY_CACHE_S, Sidecar, TargetProbe, make_app
from profiler.config import Config, load_config
from profiler.core.results import StageAccount
from profiler.examples.holdout import write_holdout
from profiler.measure.latency import StageRecorder
from profiler.record.history import record
from profiler.record.recent_runs import MemoryRuns
from profiler.record.report import REPORT_SCHEMA_VERSION, report_schema
from profiler.schedule import Stage
from profiler.state import new_state

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def holdout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("holdout") / "holdout.jsonl"
    write_holdout(path)
    return path


@pytest.fixture
def make_config(tmp_path: Path, example_server: tuple[Any, str], holdout: Path) -> Callable[..., Config]:
    proc, url = example_server

    def make(**options: Any) -> Config:
        options.setdefault("url", url)
        return load_config(write_profile(tmp_path, pid=proc.pid, holdout=holdout, **options))

    return make


Client = TestClient[Any, Any]


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[Sidecar], Any]]:
    clients: list[tuple[Client, Sidecar]] = []

    async def start(sidecar: Sidecar) -> Client:
        client: Client = TestClient(TestServer(make_app(sidecar), host="127.0.0.1"))
        await client.start_server()
        clients.append((client, sidecar))
        return client

    yield start
    for client, sidecar in clients:
        await sidecar.shutdown(5.0)
        await sidecar.probe.close()
        await client.close()


def _validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    schema = report_schema()
    if definition is not None:
        schema = {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema)


async def _finish(client: Client, timeout_s: float = 60) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        response = await client.get("/report")
        body = await response.json()
        if "schema_version" in body:
            return dict(body)
        assert body["status"] in ("running", "idle"), body
        await asyncio.sleep(0.1)
    raise AssertionError("the run did not finish")


def test_schema_is_valid_and_versioned() -> None:
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == REPORT_SCHEMA_VERSION


async def test_a_run_from_progress_to_report(make_config: Callable[..., Config], serve_app: Any) -> None:
    config = make_config(stages="{rate_rps: 40, duration_s: 1}, {rate_rps: 60, duration_s: 1}")
    sidecar = Sidecar(config)
    client = await serve_app(sidecar)
    idle = await (await client.get("/report")).json()
    assert idle["status"] == "idle" and idle["progress"] is None
    _validator("progress").validate(idle)
    assert (await (await client.get("/runs")).json()) == {"runs": []}
    assert "profiler_run_info" not in await (await client.get("/metrics")).text()

    state = sidecar.start_run()
    progress_seen = []
    while state.report is None:
        body = await (await client.get("/report")).json()
        if body.get("status") == "running":
            _validator("progress").validate(body)
            progress_seen.append(body["progress"]["phase"])
        await asyncio.sleep(0.05)
    assert "load" in progress_seen
    report = await _finish(client)
    _validator().validate(report)
    assert report["run"]["id"] == state.run_id and report["run"]["status"] == "completed"
    assert [s["name"] for s in report["stages"]] == ["stage-1", "stage-2"]
    assert [s["sent"] for s in report["stages"]] == [40, 60]
    assert report["verdict"]["status"] == "pass", report["verdict"]
    assert json.loads(config.report.path.read_text()) == report

    text = await (await client.get("/report", params={"format": "text"})).text()
    assert "verdict  PASS" in text and "stage-2" in text
    runs = (await (await client.get("/runs")).json())["runs"]
    assert [(r["id"], r["status"], r["verdict"]) for r in runs] == [(state.run_id, "completed", "pass")]
    stored = await (await client.get(f"/runs/{state.run_id}")).json()
    # From the SQLite history, which keeps the report as it was just before the save was noted in it.
    assert stored["history"]["saved"] is False and report["history"]["saved"] is True
    assert {k: v for k, v in stored.items() if k != "history"} == {k: v for k, v in report.items() if k != "history"}
    metrics = await (await client.get("/metrics")).text()
    assert 'profiler_verdict{model="digits"} 1.0' in metrics
    assert 'profiler_requests_total{model="digits",outcome="ok",stage="stage-2"} 60.0' in metrics


async def test_post_runs_needs_the_token(make_config: Callable[..., Config], serve_app: Any) -> None:
    sidecar = Sidecar(make_config(), token=TOKEN)
    client = await serve_app(sidecar)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        response = await client.post("/runs", headers=headers)
        assert response.status == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in await response.text()
    assert sidecar.state is None and (await (await client.get("/runs")).json()) == {"runs": []}

    too_big = b"{" + b" " * MAX_BODY_BYTES + b"}"
    assert (await client.post("/runs", headers=AUTH, data=too_big)).status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 1024

    response = await client.post("/runs", headers=AUTH, data=chunks())
    assert response.status == 413 and "error" in await response.json()
    response = await client.post("/runs", headers=AUTH, json={"target": {"url": "http://169.254.169.254/"}})
    assert response.status == 400
    assert sidecar.state is None

    response = await client.post("/runs", headers=AUTH, data=b"{}")
    assert response.status == 202
    started = await response.json()
    assert response.headers["Location"] == f"/runs/{started['run_id']}"
    conflict = await client.post("/runs", headers=AUTH)
    assert conflict.status == 409 and (await conflict.json())["run_id"] == started["run_id"]
    live = await (await client.get(f"/runs/{started['run_id']}")).json()
    assert live["status"] == "running" and live["progress"]["run_id"] == started["run_id"]
    listed = (await (await client.get("/runs")).json())["runs"]
    assert [(r["id"], r["status"]) for r in listed] == [(started["run_id"], "running")]
    first = await _finish(client)
    assert first["run"]["id"] == started["run_id"]

    second = await (await client.post("/runs", headers=AUTH)).json()
    assert second["run_id"] != first["run"]["id"]
    running = await (await client.get("/report")).json()
    assert running["latest_run_id"] == first["run"]["id"]
    await _finish(client)
    runs = (await (await client.get("/runs")).json())["runs"]
    assert [r["id"] for r in runs] == [second["run_id"], first["run"]["id"]]
    assert (await (await client.get("/runs", params={"limit": "1"})).json())["runs"][0]["id"] == second["run_id"]
    assert (await (await client.get(f"/runs/{first['run']['id']}")).json())["run"]["id"] == first["run"]["id"]


async def test_triggering_is_off_without_a_token(make_config: Callable[..., Config], serve_app: Any) -> None:
    sidecar = Sidecar(make_config(), token=None)
    client = await serve_app(sidecar)
    response = await client.post("/runs", headers={"Authorization": "Bearer anything"})
    assert response.status == 403 and sidecar.state is None


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/runs/no-such-run", 404),
        ("GET", "/report/extra", 404),
        ("POST", "/report", 405),
        ("DELETE", "/runs", 405),
        ("PUT", "/metrics", 405),
        ("POST", "/healthz", 405),
        ("GET", "/report?format=xml", 400),
        ("GET", "/runs?limit=0", 400),
        ("GET", "/runs?limit=lots", 400),
        ("GET", "/runs?limit=1001", 400),
    ],
)
async def test_bad_requests_answer_json(make_config: Callable[..., Config], serve_app: Any, method: str, path: str,
                                        status: int) -> None:
    client = await serve_app(Sidecar(make_config(), history=MemoryRuns()))
    response = await client.request(method, path)
    assert response.status == status
    assert response.content_type == "application/json"
    assert "error" in await response.json()
    if status == 405:
        assert response.headers["Allow"]


async def test_healthz_and_readyz(make_config: Callable[..., Config], serve_app: Any) -> None:
    client = await serve_app(Sidecar(make_config()))
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready" and body["config"] == "loaded" and body["phase"] == "idle"


async def test_readyz_names_an_unreachable_target_without_its_secrets(
        make_config: Callable[..., Config], serve_app: Any, unused_tcp_port: int) -> None:
    sidecar = Sidecar(make_config(url=f"http://user:hunter2@127.0.0.1:{unused_tcp_port}/?key=abc"))
    client = await serve_app(sidecar)
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert body["status"] == "not ready"
    assert f"127.0.0.1:{unused_tcp_port}" in body["target"] and "no answer" in body["target"]
    assert "hunter2" not in json.dumps(body) and "abc" not in json.dumps(body)
    assert (await client.get("/healthz")).status == 200


async def test_readiness_is_cached_and_refreshed_in_the_background(make_config: Callable[..., Config]) -> None:
    status = {"code": 200}
    hits: list[str] = []

    async def ready(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({}, status=status["code"])

    app = web.Application()
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/{name}/ready", ready)
    target = TestServer(app, host="127.0.0.1")
    await target.start_server()
    now = [100.0]
    probe = TargetProbe(make_config(url=str(target.make_url("")).rstrip("/")), clock=lambda: now[0])
    try:
        assert await probe.check() == (True, "ready")
        assert hits == ["/v2/health/ready", "/v2/models/digits/ready"]
        now[0] += READY_CACHE_S / 2
        assert await probe.check() == (True, "ready")
        assert len(hits) == 2  # cached
        status["code"] = 503
        now[0] += READY_CACHE_S
        assert await probe.check() == (True, "ready")  # the last answer, at once; a probe starts behind it
        for _ in range(100):
            if len(hits) == 4:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        ready_now, detail = await probe.check()
        assert not ready_now and "/v2/health/ready -> 503" in detail
        assert len(hits) == 4
    finally:
        await probe.close()
        await target.close()


async def test_shutdown_past_the_grace_period_still_writes_an_aborted_report(
        make_config: Callable[..., Config], unused_tcp_port: int) -> None:
    # The target never answers, so the run is still waiting for it when the grace period ends.
    config = make_config(url=f"http://127.0.0.1:{unused_tcp_port}")
    sidecar = Sidecar(config)
    state = sidecar.start_run()
    while state.phase != "waiting for target":
        await asyncio.sleep(0.02)
    await sidecar.shutdown(grace_s=0.2)
    await sidecar.probe.close()
    assert sidecar.finished.is_set() and not sidecar.running
    report = json.loads(config.report.path.read_text())
    assert report["run"]["id"] == state.run_id and report["run"]["status"] == "aborted"
    assert report["stages"] == [] and report["verdict"]["status"] != "pass"
    assert report["history"]["saved"] is True  # the cancelled run was saved by the sidecar
    stored = sidecar.history.get_run(state.run_id)
    assert stored is not None and stored["run"] == report["run"] and stored["stages"] == []
    _validator().validate(report)


async def test_the_aborted_report_is_built_and_saved_off_the_event_loop(
        make_config: Callable[..., Config], unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(url=f"http://127.0.0.1:{unused_tcp_port}")
    loop_thread = threading.get_ident()
    threads: dict[str, list[int]] = {"conclude": [], "record": []}

    def spy_conclude(*args: Any) -> dict[str, Any]:
        threads["conclude"].append(threading.get_ident())
        return conclude(*args)

    def spy_record(*args: Any) -> None:
        threads["record"].append(threading.get_ident())
        record(*args)

    monkeypatch.setattr(run_module, "conclude", spy_conclude)
    monkeypatch.setattr(run_module, "record", spy_record)
    sidecar = Sidecar(config)
    state = sidecar.start_run()
    while state.phase != "waiting for target":
        await asyncio.sleep(0.02)
    await sidecar.shutdown(grace_s=0.1)
    await sidecar.probe.close()
    assert [len(t) for t in threads.values()] == [1, 1], threads
    assert loop_thread not in threads["conclude"] + threads["record"]
    assert state.report is not None and state.report["run"]["status"] == "aborted"
    assert state.report["run"]["stopped_in"] == "waiting for target"
    assert state.phase == "done"


async def test_an_unreadable_history_is_a_503_not_a_crash(make_config: Callable[..., Config], serve_app: Any) -> None:
    config = make_config()
    assert config.history.path is not None
    config.history.path.write_bytes(b"this is not a SQLite database" * 100)
    client = await serve_app(Sidecar(config))
    response = await client.get("/runs")
    body = await response.json()
    assert response.status == 503 and "not a readable SQLite database" in body["error"]
    assert (await client.get("/runs/some-id")).status == 503
    assert (await client.get("/healthz")).status == 200


async def test_a_run_reads_its_data_and_writes_its_report_off_the_event_loop(
        make_config: Callable[..., Config], serve_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything that blocks for a time growing with the hold-out set or the report: reading and hashing the set,
    encoding the bodies, building the report, writing its file, encoding it for /report (JSON and text)."""
    loop_thread = threading.get_ident()
    calls: dict[str, list[int]] = {}

    def spy(module: Any, name: str) -> None:
        real = getattr(module, name, None)
        if real is None:
            return  # not there to spy on: the assertions below say what was not called

        def called(*args: Any, **kwargs: Any) -> Any:
            calls.setdefault(name, []).append(threading.get_ident())
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, called)

    for name in ("load_dataset", "build_bodies", "conclude"):
        spy(run_module, name)
    for name in ("write_json", "encode_report"):
        spy(server, name)
    config = make_config(stages="{rate_rps: 40, duration_s: 0.5}")
    sidecar = Sidecar(config, history=MemoryRuns())
    client = await serve_app(sidecar)
    state = sidecar.start_run()
    report = await _finish(client)
    # Whoever sees the report at /report finds it in the file and in the run history already.
    assert json.loads(config.report.path.read_text()) == report
    assert [r["id"] for r in (await (await client.get("/runs")).json())["runs"]] == [state.run_id]
    assert "verdict" in await (await client.get("/report", params={"format": "text"})).text()
    assert (await client.get(f"/runs/{state.run_id}")).status == 200
    assert set(calls) == {"load_dataset", "build_bodies", "conclude", "write_json", "encode_report"}, calls
    assert all(thread != loop_thread for threads in calls.values() for thread in threads), calls
    assert len(calls["encode_report"]) == 2  # JSON and text, each encoded once for the run


def _ended(index: int) -> StageRecorder:
    """A recorder of a stage that ran and ended (nothing answered)."""
    recorder = StageRecorder(Stage(index, 10.0, 1.0))
    recorder.close(StageAccount(started_ns=1, ended_ns=2, scheduled=0, unsent=0, late=0, cut_short=False,
                                cpu_s=0.0, first_sent_ns=0))
    return recorder


def test_the_progress_document_builds_a_finished_stage_once(make_config: Callable[..., Config]) -> None:
    """After a long capacity search, /report must not rebuild every stage's summary (three HDR histograms
    encoded, percentiles) at each GET: stages run one after another, so all but the last have ended; the
    sidecar builds their summaries off the loop (unsettled), once, and the state keeps them (settle)."""
    state = new_state(make_config())
    state.recorders.extend(_ended(i) for i in (1, 2, 3))
    pending = state.unsettled()
    assert [r.stage.name for r in pending] == ["stage-1", "stage-2"]  # the last may still be under way
    state.settle(pending, [r.summary() for r in pending])
    assert state.unsettled() == []
    first, again = state.progress()["stages"], state.progress()["stages"]
    assert [s["name"] for s in first] == ["stage-1", "stage-2", "stage-3"] == [s["name"] for s in again]
    assert first[0] is again[0] and first[1] is again[1]  # ended and settled: built once
    assert first[2] is not again[2]  # the stage under way: built at every GET
    state.recorders.append(StageRecorder(Stage(4, 10.0, 1.0)))
    assert [r.stage.name for r in state.unsettled()] == ["stage-3"]
    stale = [_ended(9)]
    state.settle(stale, [stale[0].summary()])  # not the next stage without a summary: ignored
    later = state.progress()["stages"]
    assert [s["name"] for s in later] == ["stage-1", "stage-2", "stage-3", "stage-4"] and later[0] is first[0]
