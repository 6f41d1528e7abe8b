"""MLflow tracking against a real local MLflow file store (needs the 'mlflow' extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from profiler.config import parse_config
from profiler.record.tracking import flat_params, log_run, mlflow_metric_name

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow is not installed: pip install -e '.[mlflow]'")

PROFILE = """\
target: {{url: "http://127.0.0.1:1", model: digits, version: "7"}}
dataset: {{path: data.jsonl}}
load: {{stages: [{{rate_rps: 1, duration_s: 1}}]}}
tracking: {{mlflow_uri: "{uri}", experiment: profiler-test}}
"""

REPORT = {
    "profiler_version": "0.1.0",
    "run": {"id": "20260101T000000Z-abc123"},
    "target": {"model": "digits", "version": "7"},
    "dataset": {"sha256": "feed"},
    "verdict": {"status": "fail"},
    "metrics": {"accuracy": 0.9, "f1[3]": 0.8, "latency_p99_ms@100rps": 12.5, "cpu_cores": None,
                "memory_growth_pct": float("nan"), "replicas_needed": 2},
}


@pytest.mark.parametrize(("name", "expected"), [
    ("accuracy", "accuracy"), ("f1[3]", "f1.class.3"), ("recall[cat dog]", "recall.class.cat dog"),
    ("latency_p99_ms@12.5rps", "latency_p99_ms.at.12.5rps"), ("f1[a+b]", "f1.class.a_b"),
])
def test_metric_names(name, expected):
    assert mlflow_metric_name(name) == expected


def test_flat_params():
    assert flat_params({"a": {"b": 1, "c": [1, 2]}, "d": "x" * 600, "e": None}) == {
        "a.b": "1", "a.c": "[1, 2]", "d": "x" * 500, "e": "null"}


@needs_mlflow
def test_logs_params_metrics_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mlflow.tracking import MlflowClient

    # MLflow 3 keeps the file store for local use behind this switch; a team points the URI at its server.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    config = parse_config(PROFILE.format(uri=uri), tmp_path / "profile.yaml")
    result = log_run(REPORT, config)
    assert "error" not in result, result
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.metrics == {"accuracy": 0.9, "f1.class.3": 0.8, "latency_p99_ms.at.100rps": 12.5,
                                "replicas_needed": 2.0, "verdict_code": 1.0}
    assert run.data.params["target.model"] == "digits"
    assert run.data.params["load.stages"] == '[{"rate_rps": 1.0, "duration_s": 1.0}]'
    assert run.data.tags["verdict"] == "fail" and run.data.tags["holdout_sha256"] == "feed"
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.json"]
    again = log_run(REPORT, config)   # the experiment exists now: reused, a second run
    assert again["experiment_id"] == result["experiment_id"] and again["mlflow_run_id"] != result["mlflow_run_id"]


@needs_mlflow
def test_unreachable_tracking_server_is_noted_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = parse_config(PROFILE.format(uri="http://127.0.0.1:9/"), tmp_path / "profile.yaml")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = log_run(REPORT, config)
    assert result["error"].startswith("MLflow at http://127.0.0.1:9/")
