"""Planted secrets never leave: a password and a user in the URL, a query key, a bearer token and a header
value, through `profiler run` and `profiler serve`, on the failing paths (metadata check fails, target
never ready, unresolvable host, bad TLS CA file, 401 from the model) and the happy path. Every channel
is searched: stdout, stderr and the log, /report (JSON and text), /runs, /runs/{id}, /metrics,
/readyz, the report file, every table of the SQLite history, the MLflow store (params included) and
any other file a run leaves behind.

The command lines run as `python -m profiler` forked from one import (tests/cli_forkserver.py).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from profiler.examples.holdout import write_holdout
from tests.conftest import ExampleServer
from tests.forked_cli import ForkedCli

USER, PASSWORD, QUERY_KEY = "user-PLANTED-u", "pw-PLANTED-p", "key-PLANTED-q"
TOKEN, HEADER = "tok-PLANTED-b", "hdr-PLANTED-h"
SECRETS = [USER, PASSWORD, QUERY_KEY, TOKEN, HEADER, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None

PROFILE = """\
target:
  url: "{url}"
  protocol: {protocol}
  model: digits
  timeout_s: 2
  ready_timeout_s: {ready_s}
  headers: {{X-Api-Key: {{file: api-key.txt}}}}
{auth}{ca}dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load: {{stages: [{{rate_rps: 50, requests: 20}}], accuracy_pass: true}}
gates: [{{metric: error_rate, max: 0}}]
resources: {{settle_s: 0}}
report: {{path: report.json}}
server: {{host: 127.0.0.1, port: 0}}
{tracking}"""


def basic(url: str) -> str:
    """`url` with the planted user and password in it and the planted query key after it."""
    scheme, _, rest = url.partition("://")
    query = f"/?key={QUERY_KEY}" if scheme.startswith("http") else ""  # gRPC takes no query string
    return f"{scheme}://{USER}:{PASSWORD}@{rest}{query}"


def keyed(url: str) -> str:
    """`url` with only the planted query key (the bearer token carries the credentials)."""
    return f"{url}/?key={QUERY_KEY}"


def write_case(folder: Path, url: str, *, bearer: bool = False, protocol: str = "v2-rest", ready_s: float = 0.5,
               bad_ca: bool = False, tracking: bool = False) -> None:
    """The profile, its hold-out and the header's secret file in `folder`."""
    folder.mkdir()
    write_holdout(folder / "holdout.jsonl")
    (folder / "api-key.txt").write_text(HEADER + "\n")
    if bad_ca:
        (folder / "ca.pem").write_text(f"not a certificate {PASSWORD}\n")
    uri = (folder / "mlruns").as_uri()
    (folder / "p.yaml").write_text(PROFILE.format(
        url=url, protocol=protocol, ready_s=ready_s,
        auth="  bearer_token: {env: PLANTED_TOKEN}\n" if bearer else "",
        ca="  tls_ca_file: ca.pem\n" if bad_ca else "",
        tracking=f'tracking: {{mlflow_uri: "{uri}", experiment: secrets}}\n' if tracking and HAS_MLFLOW else ""))


def files_left(folder: Path) -> dict[str, str]:
    """Every file in `folder` but the inputs that hold the secrets by design, as text; SQLite files also as
    the rows of every table."""
    inputs = {"p.yaml", "api-key.txt", "ca.pem", "holdout.jsonl"}
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in inputs:
            found[str(path.relative_to(folder))] = path.read_bytes().decode("utf-8", errors="replace")
            if path.suffix == ".sqlite":
                found[f"{path.name} (tables)"] = sqlite_rows(path)
    return found


def sqlite_rows(path: Path) -> str:
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "runs" in tables
        return "\n".join(f"{table}: {row!r}" for table in tables for row in db.execute(f'SELECT * FROM "{table}"'))


def assert_no_secret(channels: dict[str, str]) -> None:
    leaks = [(name, secret) for name, text in channels.items() for secret in SECRETS if secret in text]
    assert not leaks, f"planted secrets found: {leaks}"


def env() -> dict[str, str]:
    return {"PLANTED_TOKEN": TOKEN, "MLFLOW_ALLOW_FILE_STORE": "true"}


class Trap:
    """A hostile model server on 127.0.0.1, in a thread: under /meta-fails it is ready but its metadata
    fails; under /unauthorized everything is 401. Every answer echoes the request's path, query and headers,
    as a careless server would."""

    def __init__(self) -> None:
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._started.wait(30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self._app(), access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._started.set()
        self._loop.run_forever()

    @staticmethod
    def _app() -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            echo = f"{request.path_qs} {dict(request.headers)}"
            if request.path.startswith("/meta-fails/") and request.path.endswith("/ready"):
                return web.json_response({"ready": True, "echo": echo})
            return web.json_response({"error": "no", "echo": echo}, status=401 if "unauthorized" in request.path
                                     else 500)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    server = Trap()
    yield server
    server.close()


@pytest.fixture(scope="module")
def cli() -> Iterator[ForkedCli]:
    forked = ForkedCli()
    yield forked
    forked.close()


FAILING: dict[str, tuple[Callable[[Trap], str], dict[str, Any], str]] = {
    # name: (url, case options, what the one line says)
    "metadata-fails": (lambda trap: basic(f"{trap.url}/meta-fails"), {},
                       "/meta-fails/v2/models/digits?key=REDACTED: model metadata answered HTTP 500"),
    "never-ready": (lambda trap: basic("http://127.0.0.1:9"), {}, "target never became ready"),
    "unresolvable": (lambda trap: basic("http://no-such-host.invalid:8000"), {},
                     "cannot resolve host no-such-host.invalid"),
    "bad-tls-ca": (lambda trap: basic("grpcs://127.0.0.1:9"), {"protocol": "v2-grpc", "bad_ca": True},
                   "target.tls_ca_file:"),
    "model-says-401": (lambda trap: keyed(f"{trap.url}/unauthorized"), {"bearer": True}, "-> 401"),
}


@pytest.mark.parametrize("name", list(FAILING))
def test_failing_runs_print_and_keep_no_secret(cli: ForkedCli, trap: Trap, tmp_path: Path, name: str) -> None:
    make_url, options, expected = FAILING[name]
    write_case(tmp_path / name, make_url(trap), **options)
    outcome = cli.run(tmp_path / name, ["run", "-c", "p.yaml"], env=env())
    assert outcome.rc == 3, outcome.stderr
    assert outcome.stderr.startswith("profiler: error: ") and expected in outcome.stderr, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert_no_secret({"stdout": outcome.stdout, "stderr": outcome.stderr, **files_left(tmp_path / name)})


def test_a_happy_run_prints_and_keeps_no_secret(cli: ForkedCli, example_server: ExampleServer,
                                                 tmp_path: Path) -> None:
    folder = tmp_path / "happy"
    write_case(folder, basic(example_server[1]), ready_s=30, tracking=True)
    outcome = cli.run(folder, ["run", "-c", "p.yaml"], env=env())
    assert outcome.rc == 0, outcome.stdout + outcome.stderr  # the model answered every request
    report = json.loads((folder / "report.json").read_text())
    assert report["target"]["url"].startswith("http://REDACTED@127.0.0.1:")
    assert report["target"]["url"].endswith("/?key=REDACTED")
    assert report["history"]["saved"] is True
    channels = {"stdout": outcome.stdout, "stderr": outcome.stderr, **files_left(folder)}
    if HAS_MLFLOW:
        assert report["tracking"].get("mlflow_run_id"), report["tracking"]
        assert any("params" in name for name in channels), "MLflow wrote no params"
    assert_no_secret(channels)


def get(base: str, path: str) -> str:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return str(response.read().decode("utf-8", errors="replace"))
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode("utf-8", errors="replace"))


def serving_url(folder: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in (folder / ".stdout").read_text().splitlines() if (folder / ".stdout").exists() else []:
            if line.startswith("profiler serving on "):
                return line.split()[3]
        time.sleep(0.05)
    raise AssertionError((folder / ".stderr").read_text())


def sidecar_channels(base: str, until: str) -> dict[str, str]:
    """Every endpoint of a sidecar, once /report shows `until` (a finished report, or the run's error)."""
    deadline = time.monotonic() + 60
    while until not in get(base, "/report") and time.monotonic() < deadline:
        time.sleep(0.1)
    channels = {path: get(base, path) for path in ("/report", "/report?format=text", "/runs", "/metrics", "/readyz",
                                                   "/healthz")}
    assert until in channels["/report"], channels["/report"]
    for run in json.loads(channels["/runs"]).get("runs", []):
        channels[f"/runs/{run['id']}"] = get(base, f"/runs/{run['id']}")
    return channels


def test_the_sidecar_serves_and_keeps_no_secret(cli: ForkedCli, example_server: ExampleServer, trap: Trap,
                                                tmp_path: Path) -> None:
    """Two sidecars side by side: one profiles the model (bearer token, query key, header), the other meets a
    model that answers 401 to the URL's Basic credentials."""
    happy, failing = tmp_path / "serve-happy", tmp_path / "serve-failing"
    write_case(happy, keyed(example_server[1]), bearer=True, ready_s=30)
    write_case(failing, basic(f"{trap.url}/unauthorized"), ready_s=0.5)
    pids = {happy: cli.spawn(happy, ["serve", "-c", "p.yaml"], env=env()),
            failing: cli.spawn(failing, ["serve", "-c", "p.yaml"], env=env())}
    try:
        served = {happy: sidecar_channels(serving_url(happy), '"verdict"'),
                  failing: sidecar_channels(serving_url(failing), "target never became ready")}
    finally:
        ended = {folder: cli.finish(folder, pid) for folder, pid in pids.items()}
    assert "REDACTED" in served[failing]["/report"] and "-> 401" in served[failing]["/report"]
    assert "REDACTED" in served[failing]["/readyz"]
    assert json.loads(served[happy]["/report"])["target"]["url"].endswith("/?key=REDACTED")
    for folder, outcome in ended.items():
        assert "Traceback" not in outcome.stderr, outcome.stderr
        assert_no_secret({**{f"{folder.name} {k}": v for k, v in served[folder].items()},
                          f"{folder.name} stdout": outcome.stdout, f"{folder.name} log": outcome.stderr,
                          **files_left(folder)})


def test_the_search_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The search above can fail: a planted secret in any channel is found."""
    (tmp_path / "history.sqlite").unlink(missing_ok=True)
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        db.execute("CREATE TABLE runs (config TEXT)")
        db.execute("INSERT INTO runs VALUES (?)", (json.dumps({"url": f"http://u:{PASSWORD}@h"}),))
    with pytest.raises(AssertionError, match="planted secrets found"):
        assert_no_secret(files_left(tmp_path))
    with pytest.raises(AssertionError, match="planted secrets found"):
        assert_no_secret({"stderr": f"Authorization: Basic {SECRETS[-1]}"})
