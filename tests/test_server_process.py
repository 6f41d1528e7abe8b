"""`profiler serve` as a real subprocess: answers while the load runs, SIGTERM aborts cleanly, no secret leaks."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sidecar_helpers import F_SETPIPE_SZ, get_json, start_sidecar, write_profile

from profiler.cli import main
from profiler.examples.holdout import write_holdout

pytestmark = pytest.mark.serial  # timing bounds: run alone after the parallel part (Makefile)

TOKEN = "tok-DO-NOT-LEAK-7f3a"
PASSWORD = "pw-DO-NOT-LEAK-91c2"


def timed_get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, float, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, time.monotonic() - started, body


@pytest.mark.slow
def test_answers_during_load_and_sigterm_aborts_with_a_report(tmp_path: Path, example_server: tuple[Any, str]) -> None:
    proc_model, url = example_server
    holdout = tmp_path / "holdout.jsonl"
    write_holdout(holdout)
    secret_url = url.replace("http://", f"http://user:{PASSWORD}@")
    profile = write_profile(tmp_path, secret_url, proc_model.pid, holdout,
                            stages="{rate_rps: 150, duration_s: 2}, {rate_rps: 40, duration_s: 30}",
                            server=", token_env: PROFILER_TEST_TOKEN, shutdown_grace_s: 5")
    sidecar, base = start_sidecar(profile, {"PROFILER_TEST_TOKEN": TOKEN})
    try:
        # Every endpoint answers, well within a second, while stage 1 runs at 150 rps.
        timings: dict[str, list[float]] = {}
        bodies: list[bytes] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, progress = get_json(f"{base}/report")
            if progress.get("progress") and progress["progress"]["current_stage"] == "stage-2":
                break
            for path in ("/healthz", "/readyz", "/report", "/metrics", "/runs", "/report?format=text"):
                status, took_s, body = timed_get(base + path)
                assert status == 200, (path, body)
                timings.setdefault(path, []).append(took_s)
                bodies.append(body)
            status, _, body = timed_get(f"{base}/runs", {"Authorization": "Bearer wrong"}, "POST")
            assert status == 401
            time.sleep(0.05)
        else:
            raise AssertionError("stage-2 never started")
        assert all(len(times) >= 2 for times in timings.values()), timings
        slowest = {path: max(times) for path, times in timings.items()}
        assert max(slowest.values()) < 1.0, slowest
        status, _, _ = timed_get(f"{base}/runs", {"Authorization": f"Bearer {TOKEN}"}, "POST")
        assert status == 409

        # Let stage 2 measure something, then stop the sidecar as Kubernetes would.
        while get_json(f"{base}/report")[1]["progress"]["stages"][-1]["sent"] < 10:
            time.sleep(0.1)
        bodies.append(timed_get(f"{base}/metrics")[2])
        sidecar.send_signal(signal.SIGTERM)
        out, err = sidecar.communicate(timeout=30)
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.communicate()
    assert sidecar.returncode == 2, err  # an aborted run is inconclusive
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["run"]["status"] == "aborted"
    assert report["verdict"]["status"] == "inconclusive"
    first, second = report["stages"]
    assert first["name"] == "stage-1" and first["sent"] == 300 and first["completed"] == 300
    assert second["name"] == "stage-2" and 10 <= second["sent"] < 40 * 30
    assert second["completed"] == second["sent"]
    assert "aborted" in err and "signal received" in err
    for text in (out, err, (tmp_path / "report.json").read_text(), *(b.decode() for b in bodies)):
        assert TOKEN not in text and PASSWORD not in text
    assert "REDACTED@127.0.0.1" in report["target"]["url"]


@pytest.mark.slow
def test_once_on_trigger_waits_then_exits_with_the_verdict(tmp_path: Path, example_server: tuple[Any, str]) -> None:
    proc_model, url = example_server
    holdout = tmp_path / "holdout.jsonl"
    write_holdout(holdout)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    profile = write_profile(tmp_path, url, proc_model.pid, holdout, f1_min=0.999,
                            server=", start: on-trigger, token_file: token")
    sidecar, base = start_sidecar(profile, {}, "--once")
    try:
        time.sleep(0.5)
        assert get_json(f"{base}/report")[1]["status"] == "idle"
        assert sidecar.poll() is None
        status, _, body = timed_get(f"{base}/runs", {"Authorization": f"Bearer {TOKEN}"}, "POST")
        assert status == 202, body
        _out, err = sidecar.communicate(timeout=60)
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.communicate()
    assert sidecar.returncode == 1, err  # F1 >= 0.999 fails: the exit code carries the verdict
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["run"]["id"] == json.loads(body)["run_id"] and report["verdict"]["status"] == "fail"


@pytest.mark.slow
def test_a_stderr_nobody_reads_does_not_freeze_the_sidecar(tmp_path: Path, example_server: tuple[Any, str]) -> None:
    """A log collector that stops reading: stderr is a one-page pipe left full. Log lines must not block the loop."""
    proc_model, url = example_server
    holdout = tmp_path / "holdout.jsonl"
    write_holdout(holdout)
    profile = write_profile(tmp_path, url, proc_model.pid, holdout,
                            server=", start: on-trigger, token_env: PROFILER_TEST_TOKEN")
    sidecar = subprocess.Popen([sys.executable, "-m", "profiler.cli", "serve", "-c", str(profile)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PROFILER_TEST_TOKEN": TOKEN})
    try:
        assert sidecar.stdout is not None and sidecar.stderr is not None
        fcntl.fcntl(sidecar.stderr.fileno(), F_SETPIPE_SZ, 4096)
        base = sidecar.stdout.readline().split()[3]
        # Each refusal logs a ~110-byte warning: 300 of them are 8 times what the pipe holds.
        for _ in range(300):
            status, took_s, _ = timed_get(f"{base}/runs", {"Authorization": "Bearer wrong"}, "POST")
            assert status == 401 and took_s < 5
        assert timed_get(f"{base}/healthz")[0] == 200
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=30)  # reading stderr now lets the writer thread finish
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.communicate()
    assert sidecar.returncode == 0, err
    assert err.count("POST /runs refused") == 300  # queued while the pipe was full, none lost


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (", token_file: missing-token", "server.token_file: cannot read"),
        (", token_env: PROFILER_UNSET_TOKEN_VAR", "PROFILER_UNSET_TOKEN_VAR is unset or empty"),
        (", start: on-trigger", "on-trigger needs token_file or token_env"),
    ],
)
def test_token_problems_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], server: str,
                                            message: str) -> None:
    profile = write_profile(tmp_path, "http://127.0.0.1:9", 1, tmp_path / "holdout.jsonl", server=server)
    with pytest.raises(SystemExit) as exited:
        main(["serve", "-c", str(profile)])
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
