"""The run's history without a model: find_baseline, build_report and record against real SQLite (and MLflow)
files; the pure pieces (assess, requirements_section, resources_report's artifact) with tables."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

from profiler.config import Config, ResourcesConfig, parse_config
from profiler.core.errors import ConfigError
from profiler.core.results import OK, Result, StageAccount
from profiler.dataset import load_dataset
from profiler.judge.significance import Baseline, Evidence
from profiler.judge.verdict import Predecessor
from profiler.measure.accuracy import PredictionLog
from profiler.measure.latency import StageRecorder
from profiler.measure.resources.series import BoundedSeries
from profiler.record.assess import assess, candidate_evidence
from profiler.record.baseline import find_baseline
from profiler.record.compare import compare_runs
from profiler.record.history import record
from profiler.record.render import comparison_text, history_table
from profiler.record.report import build_report, requirements_section, resources_report
from profiler.record.store import Store
from profiler.state import ArtifactSize, new_state
from tests.test_store import record as stored_run

PROFILE = """\
target: {{url: "http://127.0.0.1:9", model: toy}}
dataset: {{path: data.jsonl, id: id}}
load: {{stages: [{{rate_rps: 1, duration_s: 1}}]}}
gates: [{{metric: accuracy, min: 0.5, change: {{max_worse: 0.0}}}}]
{extra}
"""


def served_stage(stage, latency_ms: float = 2.0) -> StageRecorder:
    """A stage that answered every request of its timetable within `latency_ms`: the objective is met."""
    recorder = StageRecorder(stage)
    start_ns, gap_ns = 1_000_000_000, int(1e9 / stage.rate_rps)
    recorder.open(start_ns)
    count = stage.expected_requests
    for i in range(count):
        intended = start_ns + i * gap_ns
        recorder.add(Result(stage.index, 0, 1, intended, intended, intended + int(latency_ms * 1e6), OK, [0]))
    recorder.close(StageAccount(start_ns, start_ns + count * gap_ns, count, 0, 0, False, 0.001))
    return recorder


def finished_state(tmp_path: Path, predictions: list[str | None], extra: str = ""):
    rows = [{"id": f"s{i}", "inputs": [i], "label": i % 2} for i in range(len(predictions))]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = parse_config(PROFILE.format(extra=extra), tmp_path / "profile.yaml")
    state = new_state(config)
    state.dataset = load_dataset(config.dataset.path, inputs="inputs", label="label", id_field="id")
    state.baseline, state.baseline_problem = find_baseline(config, state.dataset.sha256, state.run_id)
    state.predictions = PredictionLog(len(predictions))
    state.predictions.reference = list(predictions)
    state.recorders.extend(served_stage(stage) for stage in config.load.planned_stages())
    report = build_report(state, "completed", "2024-01-01T00:00:00+00:00", 1.0)
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
    gates = [g.to_gate() for g in state.config.gates]
    verdict, section = assess(report, gates, None, candidate_evidence(state))
    assert verdict.status == "pass" and section is None


def test_compare_refuses_different_holdout_sets_and_tables_runs(tmp_path: Path):
    with Store(tmp_path / "h.sqlite") as store:
        store.save_run(stored_run("a", sha="1" * 64))
        store.save_run(stored_run("b", "fail", sha="2" * 64, predecessor="a"))
        store.save_run(stored_run("c", sha="1" * 64))
        with pytest.raises(ConfigError, match=r"runs a and b used different hold-out sets .*refusing to compare"):
            compare_runs(store, "a", "b")
        text = comparison_text(compare_runs(store, "a", "c"))
        table = history_table(store.list_runs())
    assert "accuracy" in text and "f1[3]" in text and "B vs A: no measured difference" in text
    assert "untested" in text     # f1[3]: class 3 is not among the stored samples, so no test
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "started", "model"]
    assert [line.split()[0] for line in lines[2:]] == ["c", "b", "a"]
    assert "FAIL" in lines[3] and lines[3].rstrip().endswith("a")
    assert history_table([]) == "no runs recorded yet\n"


def test_build_report_takes_its_clock_and_artifact_from_the_caller(tmp_path: Path):
    # The artifact path does not exist: the report uses the figure on the state and reads no file.
    state, _ = finished_state(tmp_path, ["0", "1"], "history: {enabled: false}\n"
                                                    "resources: {artifact_path: no-such-model/}")
    state.artifact = ArtifactSize(tmp_path / "no-such-model", 4096, 3)
    first = build_report(state, "aborted", "2030-01-02T03:04:05+00:00", 2.5)
    again = build_report(state, "aborted", "2030-01-02T03:04:05+00:00", 2.5)
    assert first == again
    assert first["run"]["finished_at"] == "2030-01-02T03:04:05+00:00" and first["run"]["duration_s"] == 2.5
    assert first["resources"]["artifact"]["bytes"] == 4096 and first["resources"]["footprint"]["artifact_bytes"] == 4096
    assert first["verdict"]["status"] == "inconclusive"  # gates pass, but the run did not finish


def _config(tmp_path: Path, extra: str) -> Config:
    (tmp_path / "data.jsonl").write_text('{"id": "s0", "inputs": [0], "label": 0}\n', encoding="utf-8")
    return parse_config(PROFILE.format(extra=extra), tmp_path / "profile.yaml")


@pytest.mark.parametrize(("extra", "expected"), [
    ("", None),
    ("requirements: {requests_per_day: 864000, peak_factor: 2}",
     {"required_rps": 20.0, "replica_rps": 10.0, "replicas_needed": 2, "currency": None}),
    ("requirements: {peak_rps: 25, min_replicas: 4, utilisation: 0.5, replica_memory_bytes: 1Gi}",
     {"required_rps": 25.0, "replica_rps": 5.0, "replicas_needed": 5, "replica_memory_bytes": 2**30}),
    ("node: {allocatable_memory_bytes: 16Gi, price_per_hour: 2.0, currency: EUR}",
     {"required_rps": None, "replica_rps": 10.0, "replicas_needed": None, "currency": "EUR"}),
])
def test_requirements_section_maps_the_config_to_the_plan(tmp_path: Path, extra: str, expected):
    report = {"objective": {"percentile": 99.0, "latency_ms": 100.0}, "capacity": {"max_sustained_rps": 10.0},
              "stages": [], "resources": {}}
    section = requirements_section(_config(tmp_path, extra), report)
    if expected is None:
        assert section is None
    else:
        assert {k: section[k] for k in expected} == expected


NOTHING_WATCHED = "nothing to watch is configured (resources.pid, cmdline, pod, cgroup_path or metrics_url)"


@pytest.mark.parametrize(("artifact", "section", "artifact_bytes", "problems"), [
    (None, None, None, [NOTHING_WATCHED]),
    (ArtifactSize(Path("model"), 1000, 2), {"path": "model", "bytes": 1000, "files": 2}, 1000, [NOTHING_WATCHED]),
    (ArtifactSize(Path("model"), problem="model artifact: cannot read model: not found"), None, None,
     [NOTHING_WATCHED, "model artifact: cannot read model: not found"]),
])
def test_resources_report_takes_the_measured_artifact(artifact, section, artifact_bytes, problems):
    out = resources_report(BoundedSeries(), None, ResourcesConfig(), None, artifact)
    assert out.get("artifact") == section
    assert out["footprint"]["artifact_bytes"] == artifact_bytes
    assert out["problems"] == problems


def _evidence(predictions: list[str | None]) -> Evidence:
    return Evidence(["0", "1", "0", "1"], predictions, [])


@pytest.mark.parametrize(("baseline", "candidate", "status", "predecessor_id", "tested"), [
    (None, _evidence(["0", "1", "0", "1"]), "pass", None, False),
    (Baseline(Predecessor("p", {"accuracy": 1.0})), None, "pass", "p", False),
    (Baseline(Predecessor("p", {"accuracy": 1.0}), _evidence(["0", "1", "0", "1"])),
     _evidence(["0", "1", "0", "1"]), "pass", "p", True),
    (Baseline(Predecessor("p", {"accuracy": 1.0}), _evidence(["0", "1", "0", "1"])),
     _evidence(["0", "1", "0", "0"]), "fail", "p", True),
])
def test_assess_against_the_predecessor(tmp_path: Path, baseline, candidate, status, predecessor_id, tested):
    config = _config(tmp_path, "")   # gate: accuracy >= 0.5 and no worse than the predecessor
    accuracy = 0.75 if status == "fail" else 1.0
    verdict, section = assess({"metrics": {"accuracy": accuracy}}, [g.to_gate() for g in config.gates],
                              baseline, candidate)
    assert verdict.status == status
    assert (section or {}).get("id") == predecessor_id
    change = next(c for c in verdict.as_dict()["checks"] if c["kind"] == "change")
    assert (change.get("significance") is not None) == tested
