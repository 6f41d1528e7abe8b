"""End to end: the CLI against the real example model server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sidecar_helpers import Child
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from profiler.examples.holdout import write_holdout
from profiler.examples.model import split, train

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: {ready}}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  warmup_s: 0.5
  stages:
    - {{rate_rps: 40, duration_s: 1}}
    - {{rate_rps: 80, duration_s: 1}}
objective: {{percentile: 99, latency_ms: 500}}
gates:
  - {{metric: f1_macro, min: {min_f1}}}
  - {{metric: latency_p99_ms, max: 500}}
  - {{metric: error_rate, max: 0.01}}
resources: {{pid: {pid}, interval_s: 0.2, settle_s: 0.3}}
server: {{port: 0}}
"""


def profile(tmp_path: Path, url: str, pid: int, min_f1: float = 0.9, ready: float = 30) -> Path:
    write_holdout(tmp_path / "holdout.jsonl")
    path = tmp_path / "profile.yaml"
    path.write_text(PROFILE.format(url=url, pid=pid, min_f1=min_f1, ready=ready))
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_run_reports_what_scikit_learn_computes(tmp_path: Path, example_server) -> None:
    proc, url = example_server
    done = cli("run", "--config", str(profile(tmp_path, url, proc.pid)))
    assert done.returncode == 0, done.stderr
    assert "verdict  PASS" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())

    _, x_test, _, y_test = split()
    expected = train("good").predict(x_test / 16.0)
    acc = report["accuracy"]
    assert acc["coverage"] == 1.0 and acc["scored"] == len(y_test) == 360
    assert acc["accuracy"] == pytest.approx(accuracy_score(y_test, expected))
    assert acc["f1_macro"] == pytest.approx(f1_score(y_test, expected, average="macro"))
    assert acc["precision_macro"] == pytest.approx(precision_score(y_test, expected, average="macro"))
    assert acc["recall_weighted"] == pytest.approx(recall_score(y_test, expected, average="weighted"))
    assert acc["consistency"]["inconsistent"] == 0

    assert [s["name"] for s in report["stages"]] == ["warmup", "stage-1", "stage-2"]
    for stage in report["stages"]:
        assert stage["scheduled"] == stage["sent"] + stage["unsent"]
        assert stage["sent"] == stage["completed"] + stage["errors"]
        assert stage["scheduled"] == round(stage["offered_rps"] * stage["duration_s"])
        spectrum = [stage["latency_ms"][k] for k in ("p50", "p90", "p95", "p99", "p999", "max")]
        assert spectrum == sorted(spectrum) and spectrum[0] > 0
        assert stage["service_time_ms"]["p50"] <= stage["latency_ms"]["p50"] * 1.01
    assert report["dataset"]["sha256"] and report["dataset"]["samples"] == 360
    assert f"pid {proc.pid}" in report["resources"]["source"]
    memory = report["resources"]["memory"]
    assert memory["before_bytes"] > 10 * 2**20 and memory["peak_bytes"] >= memory["before_bytes"]
    assert {c["metric"]: c["status"] for c in report["verdict"]["checks"]} == {
        "f1_macro": "pass", "latency_p99_ms": "pass", "error_rate": "pass", "error_budget": "pass",
        "objective": "pass"}


def test_failed_gate_exits_1_with_the_reason(tmp_path: Path, example_server) -> None:
    proc, url = example_server
    done = cli("run", "--config", str(profile(tmp_path, url, proc.pid, min_f1=0.999)), "--quiet")
    assert done.returncode == 1, done.stderr
    assert "verdict FAIL: f1_macro 0.96" in done.stdout and "below the minimum 0.999" in done.stdout


def test_target_never_ready_exits_3_naming_the_url(tmp_path: Path) -> None:
    done = cli("run", "--config", str(profile(tmp_path, "http://127.0.0.1:9", 1, ready=0.5)))
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1, done.stderr
    assert "target never became ready" in done.stderr and "http://127.0.0.1:9/v2/health/ready" in done.stderr


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.write_text(p.read_text().replace("rate_rps: 40", "rate_rps: -1")),
         "profile.yaml:6: load.stages.0.rate_rps"),
        (lambda p: (p.parent / "holdout.jsonl").write_text('{"pixels": [1], "label": 1, "id": "a"}\n{oops\n'),
         "holdout.jsonl:2: not valid JSON"),
        (lambda p: (p.parent / "holdout.jsonl").write_text('{"pixels": [1], "id": "a"}\n'),
         "holdout.jsonl:1: label field 'label' is missing"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, example_server, mutate, message: str) -> None:
    proc, url = example_server
    path = profile(tmp_path, url, proc.pid)
    mutate(path)
    done = cli("run", "--config", str(path))
    assert done.returncode == 3
    assert message in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_serve_mode_answers_report_metrics_healthz(tmp_path: Path, example_server) -> None:
    proc, url = example_server
    path = profile(tmp_path, url, proc.pid)
    sidecar = Child([sys.executable, "-m", "profiler.cli", "serve", "--config", str(path)])
    try:
        line = sidecar.first_line(60)
        assert line.startswith("profiler serving on http://127.0.0.1:"), line
        base = line.split()[3]
        assert get(base + "/healthz") == (200, '{"status": "ok"}')
        status, body = get(base + "/report")
        first = json.loads(body)
        assert status == 200 and ("verdict" in first or first["status"] == "running"), first
        deadline = time.monotonic() + 60
        report = {}
        while time.monotonic() < deadline:
            report = json.loads(get(base + "/report")[1])
            if "verdict" in report:
                break
            assert report["progress"]["phase"] != "error", report
            time.sleep(0.3)
        assert report["verdict"]["status"] == "pass"
        _, metrics = get(base + "/metrics")
        sent = sum(s["sent"] for s in report["stages"] if s["name"] == "stage-1")
        assert f'profiler_requests_total{{model="digits",outcome="ok",stage="stage-1"}} {float(sent)}' in metrics
        assert "profiler_request_latency_seconds_bucket" in metrics
        assert "profiler_target_memory_rss_bytes" in metrics
        assert 'profiler_verdict{model="digits"} 1.0' in metrics
        _, text = get(base + "/report?format=text")
        assert "verdict  PASS" in text
    finally:
        sidecar.terminate()
        sidecar.communicate(timeout=20)
