"""The run's history wiring without a model: record() against real SQLite (and MLflow) files."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

from profiler.config import parse_config
from profiler.dataset import load_dataset
from profiler.measure.accuracy import PredictionLog
from profiler.record.history import assess, find_baseline, record
from profiler.record.report import build_report
from profiler.record.store import Store
from profiler.state import new_state

PROFILE = """\
target: {{url: "http://127.0.0.1:9", model: toy}}
dataset: {{path: data.jsonl, id: id}}
load: {{stages: [{{rate_rps: 1, duration_s: 1}}]}}
gates: [{{metric: accuracy, min: 0.5, change: {{max_worse: 0.0}}}}]
{extra}
"""


def finished_state(tmp_path: Path, predictions: list[str | None], extra: str = ""):
    rows = [{"id": f"s{i}", "inputs": [i], "label": i % 2} for i in range(len(predictions))]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = parse_config(PROFILE.format(extra=extra), tmp_path / "profile.yaml")
    state = new_state(config)
    state.dataset = load_dataset(config.dataset.path, inputs="inputs", label="label", id_field="id")
    state.baseline = find_baseline(config, state.dataset.sha256, state.run_id)
    state.predictions = PredictionLog(len(predictions))
    state.predictions.reference = list(predictions)
    report = build_report(state, "completed", 1.0)
    record(state, report)
    return state, report


def test_record_then_compare_with_the_predecessor(tmp_path: Path):
    _, first = finished_state(tmp_path, ["0", "1", "0", "1", "0", "1"])
    assert first["verdict"]["status"] == "pass" and first["history"]["saved"]
    _, second = finished_state(tmp_path, ["0", "1", "0", "1", "1", None])
    assert second["predecessor"]["id"] == first["run"]["id"]
    change = next(c for c in second["verdict"]["checks"] if c["kind"] == "change")
    assert change["status"] == "fail" and change["predecessor"] == 1.0
    assert change["significance"]["method"] == "McNemar exact" and not change["significance"]["significant"]
    assert second["verdict"]["status"] == "fail"
    with Store(tmp_path / "profiler-history.sqlite") as store:
        runs = store.list_runs()
        assert [r["predecessor_id"] for r in runs] == [first["run"]["id"], None]
        assert store.predictions(second["run"]["id"]) == (["0", "1", "0", "1", "0", "1"],
                                                           ["0", "1", "0", "1", "1", None])


def test_a_locked_history_keeps_the_report(tmp_path: Path):
    finished_state(tmp_path, ["0", "1"])
    holder = sqlite3.connect(tmp_path / "profiler-history.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        _, report = finished_state(tmp_path, ["0", "1"], "history: {lock_timeout_s: 0.2}")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert report["history"]["saved"] is False
    assert "locked by another process" in report["history"]["error"]
    assert report["verdict"]["status"] == "pass"
    with Store(tmp_path / "profiler-history.sqlite") as store:
        assert len(store.list_runs()) == 1


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                    reason="mlflow is not installed: pip install -e '.[mlflow]'")
def test_record_logs_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    _, report = finished_state(tmp_path, ["0", "1"], f'tracking: {{mlflow_uri: "{uri}"}}')
    run = MlflowClient(tracking_uri=uri).get_run(report["tracking"]["mlflow_run_id"])
    assert run.data.metrics["accuracy"] == 1.0 and run.data.tags["verdict"] == "pass"


def test_assess_without_history(tmp_path: Path):
    state, report = finished_state(tmp_path, ["0", "1"], "history: {enabled: false}")
    assert "history" not in report and report["predecessor"] is None
    verdict, section = assess(state, report, None)
    assert verdict.status == "pass" and section is None


def test_compare_refuses_different_holdout_sets_and_tables_runs(tmp_path: Path):
    from profiler.core.errors import ConfigError
    from profiler.record.history import compare_runs, history_table
    from tests.test_store import record

    with Store(tmp_path / "h.sqlite") as store:
        store.save_run(record("a", sha="1" * 64))
        store.save_run(record("b", "fail", sha="2" * 64, predecessor="a"))
        store.save_run(record("c", sha="1" * 64))
        with pytest.raises(ConfigError, match=r"runs a and b used different hold-out sets .*refusing to compare"):
            compare_runs(store, "a", "b")
        text = compare_runs(store, "a", "c")
        table = history_table(store.list_runs())
    assert "accuracy" in text and "f1[3]" in text and "B vs A: no measured difference" in text
    assert "untested" in text     # f1[3]: class 3 is not among the stored samples, so no test
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "started", "model"]
    assert [line.split()[0] for line in lines[2:]] == ["c", "b", "a"]
    assert "FAIL" in lines[3] and lines[3].rstrip().endswith("a")
    assert history_table([]) == "no runs recorded yet\n"
