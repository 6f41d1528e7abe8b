"""Sidecar mode: an aiohttp server that runs the profile and serves /report, /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from profiler.config import Config
from profiler.errors import ProfilerError
from profiler.metrics import RunCollector
from profiler.report import render_text, write_json
from profiler.run import RunState, execute, new_state

log = logging.getLogger("profiler.server")


class Sidecar:
    """Holds the current run and serves it; the run itself executes as a background task."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state: RunState = new_state(config)
        self.error: str | None = None
        self.stop = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(RunCollector(lambda: self.state))

    def start_run(self) -> None:
        """Start the configured profile in the background."""
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            report = await execute(self.state, self.stop)
            write_json(report, self.config.report.path)
            log.info("run %s finished: %s", self.state.run_id, report["verdict"]["status"])
        except ProfilerError as exc:
            self.error = str(exc)
            self.state.phase = "error"
            log.error("run %s could not run: %s", self.state.run_id, exc)

    async def report(self, request: web.Request) -> web.Response:
        """The latest report (JSON, or ?format=text), or the progress while the run is under way."""
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "text"):
            return web.json_response({"error": f"unknown format {fmt!r}; use json or text"}, status=400)
        report = self.state.report
        if report is None:
            body = {"status": "error" if self.error else "running", "error": self.error,
                    "progress": self.state.progress()}
            if fmt == "text":
                text = f"run {self.state.run_id}: {body['status']} ({self.state.phase})\n"
                if self.error:
                    text += f"error: {self.error}\n"
                return web.Response(text=text, status=200)
            return web.json_response(body)
        if fmt == "text":
            return web.Response(text=render_text(report))
        return web.json_response(report)

    async def metrics(self, _: web.Request) -> web.Response:
        """Prometheus text exposition of the live state."""
        payload = generate_latest(self.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, _: web.Request) -> web.Response:
        """Alive: the event loop answers."""
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        """Ready: config loaded and the run did not fail to start."""
        if self.error:
            return web.json_response({"status": "error", "error": self.error}, status=503)
        return web.json_response({"status": "ready", "phase": self.state.phase})


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """404 and 405 as JSON, like every other answer of this server."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status >= 400:
            return web.json_response({"error": exc.reason, "path": request.path}, status=exc.status,
                                     headers={k: v for k, v in exc.headers.items() if k == "Allow"})
        raise


def make_app(sidecar: Sidecar) -> web.Application:
    """Routes of the sidecar."""
    app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024)
    app.router.add_get("/report", sidecar.report)
    app.router.add_get("/metrics", sidecar.metrics)
    app.router.add_get("/healthz", sidecar.healthz)
    app.router.add_get("/readyz", sidecar.readyz)
    return app


async def serve(config: Config, *, once: bool = False) -> int:
    """Serve until SIGTERM/SIGINT (or, with once=True, until the run ends). Returns the exit code."""
    from profiler.cli import exit_code_for

    sidecar = Sidecar(config)
    runner = web.AppRunner(make_app(sidecar), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"profiler serving on http://{host}:{port}  (curl http://{host}:{port}/report)", flush=True)
    terminated = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminated.set)
    sidecar.start_run()
    assert sidecar.task is not None
    try:
        if once:
            waiter = asyncio.create_task(terminated.wait())
            await asyncio.wait({sidecar.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        else:
            await terminated.wait()
        if not sidecar.task.done():
            sidecar.stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await sidecar.task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    if sidecar.state.report is not None:
        return exit_code_for(sidecar.state.report)
    return 3
