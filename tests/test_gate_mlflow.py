"""The shared run history against a real MLflow tracking server (its own SQLite backend and artifact folder on
127.0.0.1, started from .venv-mlflow, which `make test` builds): two CI jobs in two clean folders with only
the server's URL in common gate a release, the server being down, two jobs racing to record.

The command lines are real `python -m profiler` processes (forked from one import, tests/cli_forkserver.py),
against the bundled example model (good and weak variants) on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.app.demo import start_example_server, stop_process
from profiler.config import parse_config
from profiler.examples.holdout import write_holdout
from profiler.record.tracking import MlflowHistory, log_run
from tests.conftest import require
from tests.forked_cli import ForkedCli, Outcome

ROOT = Path(__file__).resolve().parent.parent
MLFLOW = ROOT / ".venv-mlflow" / "bin" / "mlflow"

PROFILE = """\
target: {url: "${MODEL_URL}", protocol: v2-rest, model: digits, timeout_s: 5, ready_timeout_s: 60}
dataset: {path: holdout.jsonl, inputs: pixels, label: label, id: id}
load:
  stages: [{rate_rps: 40, duration_s: 2}]
objective: {percentile: 99, latency_ms: 500}
gates:
  - {metric: f1_macro, min: 0.5, change: {max_worse: 0.01, significant: true}}
  - {metric: latency_p99_ms, change: {max_worse: 100}}
resources: {settle_s: 0}
tracking: {mlflow_uri: "${MLFLOW_URI}", experiment: "${EXPERIMENT}"}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], ForkedCli]]:
    """A real `mlflow server` (SQLite backend, local artifact folder) on a free 127.0.0.1 port, the example
    model (good and weak), and the forked CLI; the models and the CLI start while the server boots."""
    require(MLFLOW.is_file(), "the MLflow server (.venv-mlflow)", "make .venv-mlflow/.installed (make test does)")
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (folder / "server.log").open("w")
    # Its own session: the server starts uvicorn workers, and the whole group is ended after the module.
    proc = subprocess.Popen([str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    started: list[subprocess.Popen[str]] = []
    cli: ForkedCli | None = None
    try:
        good, good_url = start_example_server([])
        started.append(good)
        weak, weak_url = start_example_server(["--variant", "weak"])
        started.append(weak)
        cli = ForkedCli()
        _wait_healthy(proc, url, folder / "server.log")
        yield url, {"good": good_url, "weak": weak_url}, cli
    finally:
        if cli is not None:
            cli.close()
        for model in started:
            stop_process(model)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:  # a test server's state is thrown away: no need to wait for it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the MLflow server did not answer within 180 s"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def mlflow_server(parts: tuple[str, dict[str, str], ForkedCli]) -> str:
    return parts[0]


@pytest.fixture(scope="module")
def models(parts: tuple[str, dict[str, str], ForkedCli]) -> dict[str, str]:
    return parts[1]


@pytest.fixture(scope="module")
def cli(parts: tuple[str, dict[str, str], ForkedCli]) -> ForkedCli:
    return parts[2]


def _folder(root: Path, name: str) -> Path:
    """A clean CI workspace: the profile and the hold-out set, nothing else (no history file)."""
    folder = root / name
    folder.mkdir()
    (folder / "profile.yaml").write_text(PROFILE)
    write_holdout(folder / "holdout.jsonl")
    return folder


def _run(cli: ForkedCli, folder: Path, env: dict[str, str], *argv: str) -> Outcome:
    outcome = cli.run(folder, ["run", "-c", "profile.yaml", *argv], env=env)
    print(f"\n$ profiler run -c profile.yaml {' '.join(argv)}   (exit {outcome.rc})\n{outcome.stdout}{outcome.stderr}")
    return outcome


def _report(folder: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return report


def test_pass_then_fail_against_the_predecessor_from_mlflow(cli: ForkedCli, mlflow_server: str,
                                                            models: dict[str, str], tmp_path: Path) -> None:
    shared = {"MLFLOW_URI": mlflow_server, "EXPERIMENT": "gate-e2e"}
    first, second, third, elsewhere = (_folder(tmp_path, n) for n in ("job-1", "job-2", "job-3", "job-4"))

    passed = _run(cli, first, {**shared, "MODEL_URL": models["good"]}, "--junit", "junit.xml")
    assert passed.rc == 0, passed.stdout + passed.stderr
    first_id = _report(first)["run"]["id"]
    assert "verdict  PASS" in passed.stdout and _report(first)["tracking"]["mlflow_run_id"]

    failed = _run(cli, second, {**shared, "MODEL_URL": models["weak"]}, "--junit", "junit.xml",
                  "--summary-md", "summary.md")
    assert failed.rc == 1, failed.stdout + failed.stderr
    report = _report(second)
    assert report["predecessor"]["id"] == first_id  # found in MLflow: job-2's folder has no history of job-1
    assert report["predecessor"]["source"] == f"MLflow at {mlflow_server} (experiment 'gate-e2e')"
    assert f"compared with {first_id} (from MLflow at {mlflow_server}" in failed.stdout
    check = next(c for c in report["verdict"]["checks"] if c["metric"] == "f1_macro" and c["kind"] == "change")
    assert check["status"] == "fail" and check["significance"]["significant"] is True
    assert f"in {first_id}: worse by" in check["reason"] and "significant (paired bootstrap 95% CI" in check["reason"]
    junit = (second / "junit.xml").read_text()
    assert '<testcase name="change: f1_macro worse by &lt;= 0.01 (higher is better), significant"' in junit
    assert f'<failure message="f1_macro {check["value"]:.6g} vs' in junit
    summary = (second / "summary.md").read_text()
    assert summary.startswith("## ❌ profiler: FAIL — digits")
    assert any(line.startswith("| f1_macro (change) | ❌ fail") for line in summary.splitlines())
    print(f"\n--- job-2 junit.xml ---\n{junit}\n--- job-2 summary.md ---\n{summary}")

    # The same model through the library client, compared with job-1 by name (its profiler run id, looked up in
    # MLflow): the latency of another client is not the model's change.
    apart = _run(cli, third, {**shared, "MODEL_URL": models["good"]}, "--set", "load.client=library",
                 "--baseline", first_id)
    assert apart.rc == 2, apart.stdout + apart.stderr
    report = _report(third)
    assert report["predecessor"]["id"] == first_id and report["predecessor"]["comparable"] is False
    assert report["predecessor"]["context_differences"] == ["client library vs lean"]
    latency = next(c for c in report["verdict"]["checks"] if c["metric"] == "latency_p99_ms")
    assert latency["status"] == "inconclusive" and latency["required"] is True
    assert f"verdict  INCONCLUSIVE: latency_p99_ms vs {first_id}: not comparable: client library vs lean" \
        in apart.stdout
    assert latency["reason"] == f"latency_p99_ms vs {first_id}: not comparable: client library vs lean"
    f1 = next(c for c in report["verdict"]["checks"] if c["metric"] == "f1_macro" and c["kind"] == "change")
    assert f1["status"] == "pass"  # accuracy does not depend on the client: still compared

    # history and compare read MLflow from a folder that never ran anything.
    env = {**shared, "MODEL_URL": "http://127.0.0.1:1"}
    listed = cli.run(elsewhere, ["history", "-c", "profile.yaml", "--json"], env=env)
    assert listed.rc == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [r["verdict"] for r in runs] == ["inconclusive", "fail", "pass"]
    compared = cli.run(elsewhere, ["compare", first_id, runs[0]["id"], "-c", "profile.yaml", "--json"], env=env)
    assert compared.rc == 0, compared.stderr
    document = json.loads(compared.stdout)
    assert document["context_differences"] == ["client library vs lean"]
    assert {"field": "client", "a": "lean", "b": "library", "differs": True} in document["context"]
    rows = {row["metric"]: row for row in document["metrics"]}
    assert rows["latency_p99_ms"]["not_comparable"] == "not comparable: client library vs lean"
    assert rows["accuracy"]["not_comparable"] is None


def test_a_server_that_is_down_is_an_error_and_the_run_is_kept_locally(cli: ForkedCli, models: dict[str, str],
                                                                        tmp_path: Path) -> None:
    folder = _folder(tmp_path, "job")
    dead = f"http://127.0.0.1:{_free_port()}"
    env = {"MLFLOW_URI": dead, "EXPERIMENT": "x", "MODEL_URL": models["good"], "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    outcome = _run(cli, folder, env, "-q")
    assert outcome.rc == 3, outcome.stdout + outcome.stderr
    assert "Traceback" not in outcome.stderr
    history = folder / "profiler-history.sqlite"
    assert outcome.stderr.splitlines() == [
        f"profiler: error: MLflow at {dead}: cannot connect: Connection refused (the predecessor was not read and "
        f"the run was not logged); the run is saved locally in {history}"]
    report = _report(folder)
    assert report["history"]["saved"] is True and report["tracking"]["error"].startswith(f"MLflow at {dead}")
    with sqlite3.connect(history) as db:
        assert db.execute("SELECT id FROM runs").fetchall() == [(report["run"]["id"],)]


def test_two_jobs_racing_to_record(mlflow_server: str, tmp_path: Path) -> None:
    """Two jobs that find no experiment yet both create it: the loser reads the winner's, both runs are kept."""
    config = parse_config(PROFILE.replace("${MODEL_URL}", "http://127.0.0.1:1").replace(
        "${MLFLOW_URI}", mlflow_server).replace("${EXPERIMENT}", "gate-race"), tmp_path / "profile.yaml")
    results: list[dict[str, Any]] = []
    start = threading.Barrier(2)

    def job(index: int) -> None:
        report = {"profiler_version": "0.1.0", "run": {"id": f"race-{index}", "status": "completed"},
                  "target": {"model": "digits", "version": None}, "dataset": {"sha256": "feed"},
                  "verdict": {"status": "pass"}, "metrics": {"f1_macro": 0.9}, "context": {"client": "lean"}}
        start.wait()
        results.append(log_run(report, config))

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and all("error" not in r for r in results), results
    assert results[0]["experiment_id"] == results[1]["experiment_id"]
    assert config.tracking is not None
    with MlflowHistory(config.tracking) as history:
        assert sorted(c.run_id for c in history.passing_runs("digits", "feed")) == ["race-0", "race-1"]
