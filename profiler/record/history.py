"""Save a finished run: to the SQLite run history and, when configured, to MLflow. I/O shell.

The measurements are worth more than the history entry: a locked or broken history file must not
throw away a finished run, so `record` notes in the report what was not saved and why, never raises.
"""

from __future__ import annotations

import os
from typing import Any

from profiler.config import Config
from profiler.core.errors import StoreError
from profiler.measure.accuracy import label_key
from profiler.record.backend import reads_mlflow
from profiler.record.store import RunRecord, StageHistogram, Store
from profiler.record.tracking import log_run
from profiler.state import RunView


def record(run: RunView, report: dict[str, Any]) -> None:
    """Save the run to the history and log it to MLflow; adds report["history"] and report["tracking"]."""
    config = run.config
    predecessor = (report.get("predecessor") or {}).get("id")
    kept = run_record(run, report, predecessor)
    if config.history.enabled and config.history.path is not None:
        report["history"] = {"path": str(config.history.path), "saved": False, "error": None,
                             "predecessor_id": predecessor}
        try:
            with Store(config.history.path, timeout_s=config.history.lock_timeout_s) as store:
                store.save_run(kept)
            report["history"]["saved"] = True
        except StoreError as exc:
            report["history"]["error"] = str(exc)
    if config.tracking is not None:
        tracking = log_run(report, config, kept)
        tracking["history"] = reads_mlflow(config)
        if run.baseline_problem is not None:
            tracking["lookup_error"] = run.baseline_problem
        report["tracking"] = tracking


def history_problems(report: dict[str, Any], config: Config) -> list[str]:
    """What a profile that keeps its history in MLflow could not do there, as one error line (exit 3): the next
    run's predecessor depends on it. It says where the run is kept instead."""
    tracking = report.get("tracking") or {}
    if not reads_mlflow(config) or not (tracking.get("lookup_error") or tracking.get("error")):
        return []
    history = report.get("history") or {}
    local = (f"the run is saved locally in {os.path.abspath(history['path'])}" if history.get("saved")
             else "the run is kept only in its report file")
    if tracking.get("lookup_error") and tracking.get("error"):
        return [f"{tracking['error']} (the predecessor was not read and the run was not logged); {local}"]
    if tracking.get("lookup_error"):
        return [f"{tracking['lookup_error']}: the run was judged without a predecessor; it is logged to MLflow "
                f"run {tracking.get('mlflow_run_id')} and {local.removeprefix('the run is ')}"]
    return [f"{tracking['error']} (the run was not logged); {local}"]


def run_record(run: RunView, report: dict[str, Any], predecessor: str | None) -> RunRecord:
    """What the store keeps of a run: config (secrets out), report, histograms and per-sample predictions."""
    histograms = []
    for recorder in run.recorders:
        stage = recorder.stage
        for kind, histogram in (("latency", recorder.latency), ("service", recorder.service)):
            histograms.append(StageHistogram(stage.name, kind, stage.rate_rps, stage.warmup,
                                             histogram.encode().decode("ascii")))
    samples = run.dataset.samples if run.dataset is not None else []
    reference = run.predictions.reference if run.predictions is not None else [None] * len(samples)
    predictions: list[tuple[int, str | None, str | None, str | None]] = [
        (i, None if s.id is None else str(s.id), label_key(s.label), p)
        for i, (s, p) in enumerate(zip(samples, reference, strict=True))]
    return RunRecord(run.run_id, report, run.config.model_dump(mode="json"), histograms, predictions,
                     predecessor)
