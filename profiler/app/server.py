"""Sidecar mode: an aiohttp server that runs the profile and serves its report, metrics and run history.

Endpoints (docs/sidecar.md has the full contract):
  GET  /                      the report page of the current run (charts), redrawn live while a run is under way
  GET  /report[?format=text|view]  the latest report, or the progress of the run under way
  GET  /runs/{id}/report.html  a stored run's self-contained report page
  GET  /runs, GET /runs/{id}   finished runs of the history (and the one under way)
  POST /runs                   start a run (bearer token; 409 while one runs)
  GET  /metrics                Prometheus text exposition of the live state
  GET  /healthz, GET /readyz   alive; config loaded and target ready

Wiring and I/O only: the run is `profiler.app.run.execute` in a background task on the same event loop.
No endpoint takes a target from the request: the target comes from the config alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from profiler.app.auth import bearer_matches, load_token
from profiler.app.limits import BODY_TIMEOUT_S, KEEPALIVE_S, Listener, listen, raise_fd_limit
from profiler.app.progress import log_progress
from profiler.app.run import conclude_and_record, execute
from profiler.codecs.base import Codec
from profiler.codecs.factory import codec_from_config
from profiler.config import Config
from profiler.core import aio, logs
from profiler.core.errors import ConfigError, ProfilerError, ReportError, StoreError
from profiler.core.heap import freeze_baseline
from profiler.core.redact import redact_text, redact_url
from profiler.judge.verdict import EXIT_ERROR, EXIT_PASS, exit_code_for
from profiler.measure.latency import StageRecorder
from profiler.record.exporter import RunCollector
from profiler.record.html import encode_json, page_title, page_view, render_page
from profiler.record.page import RunLookup, predecessor_of, write_html
from profiler.record.recent_runs import MemoryRuns, RunSource, StoreRuns
from profiler.record.render import render_text
from profiler.record.report import write_json
from profiler.state import RunState, RunView, new_state
from profiler.transports.factory import make_transport

log = logging.getLogger("profiler.app.server")

MAX_BODY_BYTES = 4096
"""POST /runs takes no parameters; anything bigger than this is refused with 413 before it is read."""
READY_PROBE_TIMEOUT_S = 0.5
"""How long /readyz waits for the target's readiness endpoint (Kubernetes' probe default is 1 s)."""
READY_CACHE_S = 2.0
"""How long one probe of the target answers /readyz, so probes do not add load to the target."""
HISTORY_RUNS = 20
STOP_SLACK_S = 0.75
"""On shutdown a run ends by itself within shutdown_grace_s (see app.run.execute) and then builds and saves
its report; past the grace period plus this, the sidecar cancels it."""
CANCEL_WAIT_S = 0.25
"""After cancelling an overdue run, how long the shutdown waits for its report before the process exits."""
HTTP_CLOSE_S = 0.5
"""On exit, how long answers still being sent (a client reading /report slowly) may take before their
connections are closed; aiohttp's default is 60 s, past any pod's termination grace period."""
MAX_RUNS_LISTED = 1000


LIVE_PAGE_INTERVAL_MS = 2000
"""How often the live page (GET /) polls /report: each poll is one small progress document."""


def encode_report(report: dict[str, Any], fmt: str, lookup: RunLookup | None = None) -> bytes:
    """A finished report as the bytes /report serves: JSON, the text table (fmt "text"), the view the report
    page draws (fmt "view"), or the page itself (fmt "html": the file, "page": the live page at GET /), the
    predecessor found through `lookup`. Blocking (call it in a thread): a capacity search's report takes tens
    of milliseconds."""
    if fmt == "text":
        return render_text(report).encode("utf-8")
    if fmt in ("view", "html", "page"):
        view = page_view(report, predecessor_of(report, lookup))
        if fmt == "view":
            return encode_json(view).encode("utf-8")
        interval = LIVE_PAGE_INTERVAL_MS if fmt == "page" else None
        return render_page(view, title=page_title(report), live_interval_ms=interval).encode("utf-8")
    return json.dumps(report, allow_nan=False, default=str).encode("utf-8")


def readiness_codec(config: Config) -> Codec:
    """The configured protocol's codec, built as the run builds it; /readyz needs only its ready_paths."""
    return codec_from_config(config.target, config.dataset.inputs, config.load.batch_size)


class TargetProbe:
    """Whether the target answers its readiness endpoints, probed with a short timeout and cached briefly."""

    def __init__(self, config: Config, clock: Any = time.monotonic) -> None:
        short = config.target.model_copy(update={"timeout_s": READY_PROBE_TIMEOUT_S})
        probe_config = config.model_copy(update={"target": short})
        codec = readiness_codec(config)
        self._paths = codec.ready_paths
        self._transport = make_transport(probe_config, codec)
        self._endpoint = config.target.endpoint
        self._clock = clock
        self._lock = asyncio.Lock()
        self._checked_at: float | None = None
        self._result: tuple[bool, str] = (False, "not probed yet")
        self._refreshing: asyncio.Task[None] | None = None

    async def check(self) -> tuple[bool, str]:
        """(ready, detail). The first call waits for a probe; later calls answer from the last probe at once
        and, when it is older than READY_CACHE_S, start one fresh probe in the background, so /readyz stays
        fast while a loaded target answers slowly."""
        if self._checked_at is None:
            await self._refresh()
        elif self._clock() - self._checked_at >= READY_CACHE_S and (self._refreshing is None
                                                                     or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh())
        return self._result

    async def _refresh(self) -> None:
        async with self._lock:
            if self._checked_at is not None and self._clock() - self._checked_at < READY_CACHE_S:
                return  # another caller probed while this one waited for the lock
            statuses = {path: await self._transport.probe(path) for path in self._paths}
            bad = {p: s for p, s in statuses.items() if s != 200}
            if bad:
                detail = ", ".join(f"{self._endpoint.redacted(p)} -> {s or 'no answer'}" for p, s in bad.items())
                self._result = (False, detail)
            else:
                self._result = (True, "ready")
            self._checked_at = self._clock()

    async def close(self) -> None:
        """Stop a probe under way and release the connections."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        await self._transport.close()


def default_runs(config: Config) -> RunSource:
    """The run history the config keeps (SQLite, where runs record themselves), else this process' runs."""
    if config.history.enabled and config.history.path is not None:
        return StoreRuns(config.history.path, config.history.lock_timeout_s)
    return MemoryRuns(HISTORY_RUNS)


def _summaries(recorders: list[StageRecorder]) -> list[dict[str, Any]]:
    """The summaries of ended stages (blocking: numpy and zlib over each histogram)."""
    return [recorder.summary() for recorder in recorders]


class Sidecar:
    """Holds the current run and the history, and serves them; a run executes as a background task."""

    def __init__(self, config: Config, *, history: RunSource | None = None, token: str | None = None) -> None:
        self.config = config
        self.history: RunSource = history if history is not None else default_runs(config)
        self.token = token
        self.state: RunState | None = None
        self.error: str | None = None
        self.stop = asyncio.Event()
        self.finished = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.probe = TargetProbe(config)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(RunCollector(lambda: self.state))
        self._started_mono = 0.0
        self._encoded: dict[tuple[str, str], bytes] = {}
        self.problems: list[str] = []
        """What the profiler could not do for the current run although it has a report (the report file
        could not be written): the run's exit code is then 3 (see judge.verdict.exit_code_for)."""
        self._last_run_id: str | None = None
        self._history_problem: str | None = None

    @property
    def running(self) -> bool:
        """Whether a run is under way."""
        return self.task is not None and not self.task.done()

    def start_run(self) -> RunState:
        """Start the configured profile in the background; the caller checks `running` first."""
        if self.running:
            raise RuntimeError("a run is already under way")
        self.state = new_state(self.config)
        self.error = None
        self.problems = []
        self.stop = asyncio.Event()
        self.finished.clear()
        self._started_mono = time.monotonic()
        log.info("run %s started: model %s at %s", self.state.run_id, self.config.target.model,
                 redact_url(self.config.target.url))
        self.task = asyncio.create_task(self._run(self.state))
        return self.state

    async def _run(self, state: RunState) -> None:
        # The log says how the run goes (app.progress: a line per finished stage, the status every 10 s);
        # it reads the state, the run knows nothing of it.
        watching = asyncio.create_task(log_progress(state, log))
        try:
            report = await execute(state, self.stop, self.config.server.shutdown_grace_s)
            # Writing the report (JSON with indents: the pure-Python encoder, ~10 ms per 100 KB) blocks: in a
            # thread, or /healthz would wait behind it at every run's end.
            await aio.in_thread(self._finish, report, name="profiler-report")
        except ProfilerError as exc:
            self.error = str(exc)
            state.phase = "error"
            log.error("run %s could not run: %s", state.run_id, exc)
        except asyncio.CancelledError:
            # Cancelled after the grace period of a shutdown (the run overran its own bound): keep what was
            # measured, and save it to the history, which the run did not get to do. In a daemon thread, like
            # the run's own end: the report's statistics and the SQLite write must not stall /healthz and
            # /metrics meanwhile, and a write that blocks must not hold the process's exit.
            try:
                report = await aio.in_thread(conclude_and_record, state, "aborted",
                                             time.monotonic() - self._started_mono)
                self._finish(report)
                state.phase = "done"
            except Exception:
                log.exception("run %s: the aborted run's report could not be built", state.run_id)
            raise
        except Exception as exc:
            self.error = redact_text(f"internal error: {type(exc).__name__}: {exc}")
            state.phase = "error"
            log.exception("run %s failed", state.run_id)
        finally:
            watching.cancel()
            self.finished.set()

    def _finish(self, report: dict[str, Any]) -> None:
        """Keep the finished run's report: served on /report at once, written to report.path, kept in the
        history. A report file that cannot be written is one log line and a problem of the run (exit 3 with
        --once); the report is still served and kept."""
        assert self.state is not None
        self.state.report = report
        self._last_run_id = str(report["run"]["id"])
        try:
            write_json(report, self.config.report.path)
        except ReportError as exc:
            self.problems.append(str(exc))
            log.error("run %s: %s (the report is still served on /report)", report["run"]["id"], exc)
        self.history.add(report)
        html_path = self.config.report.html_file()
        if html_path is not None and not (self.problems and html_path.parent == self.config.report.path.parent):
            try:
                write_html(report, html_path, self.history.get_run)
            except ReportError as exc:
                self.problems.append(str(exc))
                log.error("run %s: %s (the page is still served at /)", report["run"]["id"], exc)
        log.info("run %s %s: verdict %s (%s)", report["run"]["id"], report["run"]["status"],
                 report["verdict"]["status"], report["verdict"]["reason"])

    async def shutdown(self, grace_s: float) -> None:
        """Stop the run: it ends by itself within `grace_s` (requests in flight get that long) and writes its
        aborted report; a run still going STOP_SLACK_S later is cancelled, and its report (what was measured)
        gets CANCEL_WAIT_S more. Returns within grace_s + STOP_SLACK_S + CANCEL_WAIT_S in any case."""
        if not self.running:
            return
        assert self.task is not None and self.state is not None
        self.stop.set()
        done, _ = await asyncio.wait({self.task}, timeout=grace_s + STOP_SLACK_S)
        if not done:
            log.warning("run %s: still %s %g s after the stop: cancelling it", self.state.run_id, self.state.phase,
                        grace_s + STOP_SLACK_S)
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=CANCEL_WAIT_S)

    # --- documents -----------------------------------------------------------------------------

    async def _progress(self, state: RunView) -> dict[str, Any]:
        pending = state.unsettled()
        if pending:  # ended stages' summaries: built once, off the loop (RunState.unsettled says why)
            state.settle(pending, await aio.in_thread(_summaries, pending, name="profiler-summaries"))
        return {
            "status": "error" if self.error else "running",
            "error": self.error,
            "progress": state.progress(),
            "latest_run_id": await self._latest_run_id(),
        }

    def _published(self, state: RunView) -> dict[str, Any] | None:
        """The run's report once the run is over, its file written and the run saved; until then None (the run
        is still under way), so whoever sees the report at /report finds it in the file and at /runs too."""
        return None if self.running and state is self.state else state.report

    async def _latest_run_id(self) -> str | None:
        """The newest finished run's id, best effort: from the history, else (a history that cannot be read,
        locked or corrupt) the last run this process finished. Only /runs fails on a broken history."""
        try:
            latest = await self._runs(1)
        except StoreError as exc:
            if str(exc) != self._history_problem:  # once per problem, not once per poll of /report
                log.warning("/report: the run history cannot be read (latest_run_id is this process's own "
                            "last run): %s", exc)
                self._history_problem = str(exc)
            return self._last_run_id
        self._history_problem = None
        return str(latest[0]["id"]) if latest else self._last_run_id

    async def _runs(self, limit: int) -> list[dict[str, Any]]:
        # The history may be a SQLite file another process holds locked: read it off the event loop.
        return await asyncio.to_thread(self.history.list_runs, limit)

    async def _report_bytes(self, report: dict[str, Any], fmt: str = "json") -> bytes:
        """The finished report as JSON or text, serialised once per run (it does not change after the run ends)
        and off the event loop: a capacity search's report is large enough to stall /healthz for its encoding."""
        key = (str(report["run"]["id"]), fmt)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = await asyncio.to_thread(encode_report, report, fmt, self.history.get_run)
            self._encoded = {k: v for k, v in self._encoded.items() if k[0] == key[0]}  # this run's only
            self._encoded[key] = encoded
        return encoded

    # --- handlers ------------------------------------------------------------------------------

    async def report(self, request: web.Request) -> web.Response:
        """The latest report (JSON, or ?format=text), or the progress while a run is under way."""
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "text", "view"):
            return web.json_response({"error": f"unknown format {fmt!r}; use json, text or view"}, status=400)
        state = self.state
        if state is None:
            body = {"status": "idle", "error": None, "progress": None, "latest_run_id": None,
                    "message": "no run yet; POST /runs starts one"}
            if fmt == "text":
                return web.Response(text="no run yet; POST /runs starts one\n")
            return web.json_response(body)
        report = self._published(state)
        if report is None:
            body = await self._progress(state)
            if fmt == "text":
                text = f"run {state.run_id}: {body['status']} ({state.phase})\n"
                if self.error:
                    text += f"error: {self.error}\n"
                return web.Response(text=text)
            return web.json_response(body)
        if fmt == "text":
            return web.Response(body=await self._report_bytes(report, "text"), content_type="text/plain",
                                charset="utf-8")
        return web.Response(body=await self._report_bytes(report, fmt), content_type="application/json")

    async def page(self, _: web.Request) -> web.Response:
        """GET /: the report page of the current run, which polls /report and redraws itself while a run is
        under way (and shows the next run when one starts)."""
        state = self.state
        report = self._published(state) if state is not None else None
        if report is not None:
            body = await self._report_bytes(report, "page")
        else:
            doc = await self._progress(state) if state is not None else {
                "status": "idle", "error": None, "progress": None, "latest_run_id": None}
            title = f"Profile of {self.config.target.model} — {'run ' + state.run_id if state else 'no run yet'}"
            body = await asyncio.to_thread(
                lambda: render_page(doc, title=title, live_interval_ms=LIVE_PAGE_INTERVAL_MS).encode("utf-8"))
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    async def run_page(self, request: web.Request) -> web.Response:
        """GET /runs/{id}/report.html: the self-contained page of a stored run; 404 for an unknown id."""
        run_id = request.match_info["run_id"]
        report = await asyncio.to_thread(self.history.get_run, run_id)
        if report is None:
            return web.json_response({"error": f"no finished run with id {run_id!r}", "path": request.path},
                                     status=404)
        body = await asyncio.to_thread(encode_report, report, "html", self.history.get_run)
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    async def list_runs(self, request: web.Request) -> web.Response:
        """The run under way (if any) and the finished runs, newest first."""
        raw = request.query.get("limit", "50")
        try:
            limit = int(raw)
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_RUNS_LISTED:
            return web.json_response({"error": f"limit must be an integer from 1 to {MAX_RUNS_LISTED}, got {raw!r}"},
                                     status=400)
        runs: list[dict[str, Any]] = []
        state = self.state
        if state is not None and self._published(state) is None:
            runs.append({"id": state.run_id, "status": "error" if self.error else "running",
                         "started_at": state.started_at, "finished_at": None, "duration_s": None,
                         "model": self.config.target.model, "verdict": None, "reason": self.error})
        runs += await self._runs(limit)
        return web.json_response({"runs": runs[:limit]})

    async def get_run(self, request: web.Request) -> web.Response:
        """One finished run's report, or the progress of the run under way; 404 for an unknown id."""
        run_id = request.match_info["run_id"]
        state = self.state
        if state is not None and state.run_id == run_id and self._published(state) is None:
            return web.json_response(await self._progress(state))
        report = await asyncio.to_thread(self.history.get_run, run_id)
        if report is None:
            return web.json_response({"error": f"no run with id {run_id!r}", "path": request.path}, status=404)
        if state is not None and self._published(state) is report:
            body = await self._report_bytes(report)
        else:
            body = await asyncio.to_thread(encode_report, report, "json")
        return web.Response(body=body, content_type="application/json")

    async def post_run(self, request: web.Request) -> web.Response:
        """Start a run: 202, or 401 (token), 403 (triggering off), 409 (one runs), 413 (body), 400 (body)."""
        if self.token is None:
            return web.json_response({"error": "starting runs over HTTP is disabled: the config sets neither "
                                               "server.token_file nor server.token_env"}, status=403)
        if not bearer_matches(request.headers.get("Authorization"), self.token):
            log.warning("POST /runs refused: missing or wrong bearer token (from %s)", request.remote)
            return web.json_response({"error": "a valid bearer token is required (Authorization: Bearer ...)"},
                                     status=401, headers={"WWW-Authenticate": 'Bearer realm="profiler"'})
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.json_response({"error": f"the body is over {MAX_BODY_BYTES} bytes"}, status=413)
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body = await request.read()
        except TimeoutError:
            response = web.json_response({"error": f"the body did not arrive within {BODY_TIMEOUT_S:g} s"}, status=408)
            response.force_close()
            return response
        if body.strip() not in (b"", b"{}"):
            return web.json_response({"error": "POST /runs takes no parameters (an empty body or {}): "
                                               "the target and the load come from the config"}, status=400)
        if self.running:
            assert self.state is not None
            return web.json_response({"error": "a run is already under way", "run_id": self.state.run_id},
                                     status=409)
        state = self.start_run()
        location = f"/runs/{state.run_id}"
        return web.json_response({"run_id": state.run_id, "status": "started", "run": location, "report": "/report"},
                                 status=202, headers={"Location": location})

    async def metrics(self, _: web.Request) -> web.Response:
        """Prometheus text exposition of the live state."""
        payload = generate_latest(self.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, _: web.Request) -> web.Response:
        """Alive: the event loop answers."""
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        """Ready: the config is loaded (it is, or the server would not run) and the target answers ready."""
        ready, detail = await self.probe.check()
        body = {"status": "ready" if ready else "not ready", "config": "loaded", "target": detail,
                "phase": self.state.phase if self.state is not None else "idle"}
        return web.json_response(body, status=200 if ready else 503)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """404, 405, 413 and unexpected errors as JSON, like every other answer of this server."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status >= 400:
            return web.json_response({"error": exc.reason, "path": request.path}, status=exc.status,
                                     headers={k: v for k, v in exc.headers.items() if k == "Allow"})
        raise
    except ProfilerError as exc:
        # The run history could not be read (locked, corrupt): say so, the rest of the sidecar works.
        log.error("%s %s: %s", request.method, request.path, exc)
        return web.json_response({"error": str(exc), "path": request.path}, status=503)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error", "path": request.path}, status=500)


def make_app(sidecar: Sidecar) -> web.Application:
    """Routes of the sidecar."""
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/", sidecar.page)
    app.router.add_get("/report", sidecar.report)
    app.router.add_get("/runs", sidecar.list_runs)
    app.router.add_post("/runs", sidecar.post_run)
    app.router.add_get("/runs/{run_id}", sidecar.get_run)
    app.router.add_get("/runs/{run_id}/report.html", sidecar.run_page)
    app.router.add_get("/metrics", sidecar.metrics)
    app.router.add_get("/healthz", sidecar.healthz)
    app.router.add_get("/readyz", sidecar.readyz)
    return app


async def serve(config: Config, *, once: bool = False, history: RunSource | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or, with once=True, until the first run ends). Returns the exit code.

    server.start on-start runs the profile at once; on-trigger waits for POST /runs. On SIGTERM
    the run stops, in-flight requests get server.shutdown_grace_s, and the aborted run's report
    (with what was measured) is written before the process exits.
    """
    # Log lines go through a queue to a writer thread: a blocked stderr must not freeze the event loop.
    handler = logs.configure()
    try:
        return await _serve(config, once, history)
    finally:
        logs.unconfigure(handler)


async def start_control_plane(sidecar: Sidecar) -> tuple[web.AppRunner, Listener]:
    """The sidecar's app behind the control plane's limits (profiler.app.limits), listening on server.host:port.
    Raises ConfigError when the address cannot be bound."""
    server = sidecar.config.server
    fds = raise_fd_limit()  # the run's connections and the control plane's share both come out of it
    runner = web.AppRunner(make_app(sidecar), access_log=None, keepalive_timeout=KEEPALIVE_S,
                           shutdown_timeout=HTTP_CLOSE_S)
    await runner.setup()
    # Modules, libraries and the app, frozen before the first connection: no collection walks them again, so
    # a full collection costs what the runs keep, not 100-250 ms of /healthz (profiler.core.heap).
    freeze_baseline()
    assert runner.server is not None
    try:
        listener = await listen(runner.server, server.host, server.port)
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"server: cannot listen on {server.host}:{server.port}: {exc.strerror or exc}") from None
    log.info("control plane: at most %d connections (of %d file descriptors), request heads within %g s",
             listener.guard.max_connections, fds, listener.guard.head_timeout_s)
    return runner, listener


async def _serve(config: Config, once: bool, history: RunSource | None) -> int:
    token = load_token(config.server)
    sidecar = Sidecar(config, history=history, token=token)
    runner, listener = await start_control_plane(sidecar)
    host, port = listener.address
    print(f"profiler serving on http://{host}:{port}  (curl http://{host}:{port}/report)", flush=True)
    terminated = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminated.set)
    if config.server.start == "on-start":
        sidecar.start_run()
    else:
        log.info("waiting for POST /runs to start a run")
    try:
        waiter = asyncio.create_task(terminated.wait())
        if once:
            # The first run's end, or a signal, whichever comes first.
            ended = asyncio.create_task(sidecar.finished.wait())
            await asyncio.wait({ended, waiter}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
        else:
            await waiter
        waiter.cancel()
        if terminated.is_set():
            log.info("signal received: stopping")
        await sidecar.shutdown(config.server.shutdown_grace_s)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        listener.stop_accepting()
        await sidecar.probe.close()
        await runner.cleanup()
        await listener.wait_closed()
    state = sidecar.state
    if state is not None and state.report is not None:
        return exit_code_for(state.report, sidecar.problems)
    return EXIT_PASS if state is None else EXIT_ERROR

