"""Headers and bearer tokens from environment variables and files; never in the report, output or logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from profiler.app.demo import read_grpc_url
from profiler.config import parse_config
from profiler.core.errors import ConfigError
from profiler.examples.holdout import write_holdout
from profiler.transports.secrets import resolve_headers

BASE = """
dataset: {path: data.jsonl}
load: {stages: [{rate_rps: 1, duration_s: 1}]}
"""


def target(text: str) -> Any:
    return parse_config("target: " + text + BASE, Path("/cfg/p.yaml")).target


def files(contents: dict[str, str]) -> Any:
    def read(path: Path) -> str:
        if str(path) not in contents:
            raise FileNotFoundError(2, "No such file or directory")
        return contents[str(path)]
    return read


@pytest.mark.parametrize(("text", "environ", "file_map", "expected"), [
    ("{url: 'http://h', model: m}", {}, {}, {}),
    ("{url: 'http://h', model: m, bearer_token: {env: TOK}}", {"TOK": "abc"}, {}, {"Authorization": "Bearer abc"}),
    ("{url: 'http://h', model: m, bearer_token: {file: tok}}", {}, {"/cfg/tok": "abc\n"},
     {"Authorization": "Bearer abc"}),
    ("{url: 'http://h', model: m, headers: {X-Key: {env: K}, X-Team: blue, X-F: {file: /run/f}}}",
     {"K": " k1 "}, {"/run/f": "f1"}, {"X-Key": "k1", "X-Team": "blue", "X-F": "f1"}),
])
def test_resolve_headers(text: str, environ: dict[str, str], file_map: dict[str, str],
                         expected: dict[str, str]) -> None:
    assert resolve_headers(target(text), environ, files(file_map)) == expected


@pytest.mark.parametrize(("text", "environ", "file_map", "message"), [
    ("{url: 'http://h', model: m, bearer_token: {env: TOK}}", {}, {},
     "target.bearer_token: environment variable TOK is not set or empty"),
    ("{url: 'http://h', model: m, bearer_token: {env: TOK}}", {"TOK": ""}, {}, "TOK is not set or empty"),
    ("{url: 'http://h', model: m, bearer_token: {file: tok}}", {}, {},
     "target.bearer_token: cannot read secret file /cfg/tok: No such file or directory"),
    ("{url: 'http://h', model: m, bearer_token: {file: tok}}", {}, {"/cfg/tok": "  \n"},
     "target.bearer_token: secret file /cfg/tok is empty"),
    ("{url: 'http://h', model: m, bearer_token: {file: tok}}", {}, {"/cfg/tok": "a\nb"}, "cannot hold a line break"),
    ("{url: 'http://h', model: m, headers: {X-K: {env: K}}}", {"K": "a\r\nX-Evil: 1"}, {},
     "target.headers.X-K: a header value cannot hold a line break"),
])
def test_resolve_headers_errors_name_the_source_never_the_value(text: str, environ: dict[str, str],
                                                                 file_map: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        resolve_headers(target(text), environ, files(file_map))
    for value in list(environ.values()) + list(file_map.values()):
        if value.strip():
            assert value.strip() not in str(error.value)


TOKEN = "tok-9f1c2e7d-never-print-me"
PROFILE = """
target:
  url: {url}
  protocol: {protocol}
  model: digits
  timeout_s: 5
  ready_timeout_s: 30
  bearer_token: {{env: PROFILER_TEST_TOKEN}}
  headers: {{X-Api-Key: {{file: api-key.txt}}}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load: {{stages: [{{rate_rps: 20, duration_s: 1}}]}}
gates: [{{metric: error_rate, max: 0}}]
resources: {{settle_s: 0}}
report: {{path: report.json}}
"""


@pytest.fixture(scope="module")
def guarded_server() -> Any:
    """One example model that requires the bearer token, over REST and gRPC."""
    from profiler.app.demo import start_example_server, stop_process

    os.environ["PROFILER_TEST_TOKEN"] = TOKEN  # inherited by the server process only for its start
    try:
        proc, url = start_example_server(["--grpc-port", "0", "--require-bearer-env", "PROFILER_TEST_TOKEN"])
    finally:
        del os.environ["PROFILER_TEST_TOKEN"]
    try:
        yield url, read_grpc_url(proc)
    finally:
        stop_process(proc)


@pytest.mark.parametrize("protocol", ["v2-rest", "v2-grpc"])
def test_a_run_with_a_token_never_writes_it(guarded_server: Any, tmp_path: Path, protocol: str) -> None:
    url, grpc_url = guarded_server
    write_holdout(tmp_path / "holdout.jsonl")
    (tmp_path / "api-key.txt").write_text("key-5b3a-also-secret\n")
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE.format(url=grpc_url if protocol == "v2-grpc" else url, protocol=protocol))
    env = {**os.environ, "PROFILER_TEST_TOKEN": TOKEN}
    done = subprocess.run([sys.executable, "-m", "profiler.cli", "run", "-c", str(profile)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr  # the server accepted the token: no errors, gate passes
    report_text = (tmp_path / "report.json").read_text()
    report = json.loads(report_text)
    assert report["stages"][-1]["errors"] == 0 and report["accuracy"]["coverage"] == 1.0
    for secret in (TOKEN, "key-5b3a-also-secret"):
        assert secret not in report_text
        assert secret not in done.stdout and secret not in done.stderr
        assert secret not in profile.read_text()


def test_a_wrong_token_stops_the_run_without_printing_it(guarded_server: Any, tmp_path: Path) -> None:
    url, _ = guarded_server
    write_holdout(tmp_path / "holdout.jsonl")
    (tmp_path / "api-key.txt").write_text("k")
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE.format(url=url, protocol="v2-rest").replace("ready_timeout_s: 30",
                                                                           "ready_timeout_s: 0.5"))
    env = {**os.environ, "PROFILER_TEST_TOKEN": "a-wrong-token-123"}
    done = subprocess.run([sys.executable, "-m", "profiler.cli", "run", "-c", str(profile)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    # The readiness endpoints answer 401 to a wrong token, so the run stops before load: exit 3, one line.
    assert done.returncode == 3
    assert "target never became ready" in done.stderr and "401" in done.stderr
    assert "a-wrong-token-123" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


async def test_grpc_bearer_token_goes_in_the_call_metadata(guarded_server: Any) -> None:
    from profiler.codecs.v2_grpc import INFER_METHOD, V2GrpcCodec
    from profiler.core.errors import TransportError
    from profiler.dataset import Sample
    from profiler.transports.grpc import GrpcTransport

    _, grpc_url = guarded_server
    codec = V2GrpcCodec("digits")
    body = codec.encode([Sample("z", [0] * 64, 0)])
    good = GrpcTransport(grpc_url, model="digits", timeout_s=5, headers={"Authorization": f"Bearer {TOKEN}"})
    assert len(codec.decode(await good.send(INFER_METHOD, body), 1)) == 1
    await good.close()
    bad = GrpcTransport(grpc_url, model="digits", timeout_s=5, headers={"Authorization": "Bearer guess-xyz"})
    with pytest.raises(TransportError) as denied:
        await bad.send(INFER_METHOD, body)
    assert denied.value.kind == "grpc_status" and "UNAUTHENTICATED" in str(denied.value)
    assert "guess-xyz" not in str(denied.value)
    await bad.close()
