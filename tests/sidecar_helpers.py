"""Helpers for the sidecar tests: a short profile of the example model, and waiting on HTTP answers."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}
dataset: {{path: {holdout}, inputs: pixels, label: label, id: id}}
load:
  stages: [{stages}]
objective: {{latency_ms: {objective_ms}}}
gates:
  - {{metric: f1_macro, min: {f1_min}}}
  - {{metric: error_rate, max: 0.05}}
  - {{metric: memory_growth_bytes, max: {growth_max}}}
resources: {{pid: {pid}, interval_s: 0.2, settle_s: {settle_s}{resources}}}
report: {{path: {report}}}
server: {{port: 0{server}}}
"""


def write_profile(directory: Path, url: str, pid: int, holdout: Path, *, stages: str = "{rate_rps: 40, duration_s: 1}",
                  f1_min: float = 0.9, growth_max: float = 1e12, settle_s: float = 0.6, server: str = "",
                  objective_ms: float = 200, resources: str = "") -> Path:
    """A profile of the example model: short, gated on F1, error rate and memory growth; `resources` adds
    entries to its resources section (", gpu: {...}")."""
    path = directory / "profile.yaml"
    path.write_text(PROFILE.format(url=url, pid=pid, holdout=holdout, stages=stages, f1_min=f1_min,
                                   growth_max=growth_max, settle_s=settle_s, objective_ms=objective_ms,
                                   report=directory / "report.json",
                                   server=server, resources=resources), encoding="utf-8")
    return path


def get_json(url: str, timeout_s: float = 5.0) -> tuple[int, Any]:
    """GET a JSON document; (status, body) for any status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for_report(base: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll GET /report until it holds a finished run's report."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = get_json(f"{base}/report")
        if status == 200 and "schema_version" in body:
            return dict(body)
        assert body.get("status") != "error", body
        time.sleep(0.2)
    raise AssertionError(f"no report from {base} within {timeout_s} s")

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Child:
    """A child process whose stdout and stderr are read as they come, line by line, by two threads.

    A pipe nobody reads blocks its writer once full, and a full stderr freezes a sidecar's event loop
    in its next log line. Pipes can be as small as 8 KiB (a uid past fs.pipe-user-pages-soft, as on
    a shared CI host), so no child is left writing into an undrained pipe. The sidecars' pipes are
    shrunk to one page on purpose (Linux), so that a reader that falls behind fails every run, not
    only on such a host.
    """

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 pipe_bytes: int | None = None) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        if pipe_bytes is not None and sys.platform.startswith("linux"):
            for pipe in (self.proc.stdout, self.proc.stderr):
                with contextlib.suppress(OSError):
                    fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, pipe_bytes)  # type: ignore[union-attr]
        self._out: list[str] = []
        self._err: list[str] = []
        self._first_line = threading.Event()
        self._readers = [threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True),
                         threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream: Any, lines: list[str]) -> None:
        with contextlib.suppress(ValueError, OSError):  # the pipe was closed under us
            for line in stream:
                lines.append(line)
                if lines is self._out:
                    self._first_line.set()
            stream.close()
        self._first_line.set()  # end of output: a waiter for the first line stops waiting

    def first_line(self, timeout_s: float) -> str:
        """The first line of stdout ("" if there is none within the time or the child closed stdout)."""
        self._first_line.wait(timeout_s)
        return self._out[0] if self._out else ""

    def stderr_lines(self) -> list[str]:
        """What the child has written to stderr so far, line by line."""
        return list(self._err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        self.proc.kill()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the exit (subprocess.TimeoutExpired past `timeout`); everything it wrote to stdout and stderr."""
        self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return "".join(self._out), "".join(self._err)

    def stop(self) -> tuple[str, str]:
        """SIGTERM, then SIGKILL after 10 s; everything it wrote."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.communicate(10)


def start_sidecar(profile: Path, env: dict[str, str], *flags: str) -> tuple[Child, str]:
    """Start `profiler serve`; returns the process and its base URL (read from its first line)."""
    child = Child([sys.executable, "-m", "profiler.cli", "serve", "-c", str(profile), *flags],
                  env={**os.environ, **env}, pipe_bytes=4096)
    line = child.first_line(60)
    if not line.startswith("profiler serving on "):
        child.kill()
        out, err = child.communicate(timeout=10)
        raise AssertionError(f"the sidecar did not start: {out} {err}")
    return child, line.split()[3]


def probe_healthz(host: str, port: int, every_s: float, stop: Any, out: Any,
                  witness: tuple[str, int, str] | None = None) -> None:
    """A prober process (tests/test_control_plane.py): GET /healthz on a new connection every `every_s` until
    `stop` is set and, at the same moment, the same GET of `witness` (host, port, path), another server on this
    machine. Sends None once the first answer came, then every (sent at, seconds, status or 0, late by, the
    witness's seconds or 0)."""
    asyncio.run(_probe(host, port, every_s, stop, out, witness))


async def _probe(host: str, port: int, every_s: float, stop: Any, out: Any,
                 witness: tuple[str, int, str] | None) -> None:
    samples: list[tuple[float, float, int, float, float]] = []
    next_s = time.monotonic()
    while not stop.is_set():
        late_s = time.monotonic() - next_s
        sent = time.monotonic()
        asked = [timed_status(host, port, "/healthz")]
        if witness is not None:
            asked.append(timed_status(*witness))
        answers = await asyncio.gather(*asked)
        (status, took_s), witness_s = answers[0], answers[1][1] if witness is not None else 0.0
        samples.append((sent, took_s, status, late_s, witness_s))
        if len(samples) == 1:
            out.send(None)
        next_s = max(next_s + every_s, time.monotonic())
        await asyncio.sleep(max(0.0, next_s - time.monotonic()))
    out.send(samples)
    out.close()


async def timed_status(host: str, port: int, path: str) -> tuple[int, float]:
    """GET on a new connection: (status or 0 when it failed, seconds from connecting to the whole answer)."""
    started = time.monotonic()
    status = 0
    with contextlib.suppress(OSError, ValueError, asyncio.TimeoutError):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(), 10)  # to the close: the whole answer
            fields = answer.split(b" ", 2)
            status = int(fields[1]) if len(fields) > 1 else 0  # closed without an answer: failed
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return status, time.monotonic() - started
