"""The predecessor of a run: find it in the run history (SQLite or MLflow, one rule) or take the one the user
named (a run id or a report file), and load its evidence. History reads only.

Called before the load, so a bad baseline (unknown id, another hold-out set, a broken history file)
fails the run before any request is sent. A shared history (MLflow) that cannot be reached does not:
the run goes on without a predecessor, and the lookup's failure is returned for the report and the
exit code (the run is still saved to the local file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from profiler.config import Config
from profiler.core.errors import ConfigError, StoreError
from profiler.judge.comparability import choose_predecessor
from profiler.judge.significance import Baseline, Evidence
from profiler.judge.verdict import Predecessor
from profiler.record.backend import RunHistory, open_history, reads_mlflow
from profiler.record.store import Store
from profiler.record.tracking import check_available


def find_baseline(config: Config, holdout_sha256: str, run_id: str,
                  context: Mapping[str, Any] | None = None) -> tuple[Baseline, str | None]:
    """The run to compare with, and the reason the shared history could not be read (else None).

    baseline.run (a run id in the history, or the path of a report file), else the predecessor rule:
    the newest passing run of the same model on the same hold-out set with a comparable `context`
    (judge.comparability.choose_predecessor). An empty Baseline on a first run. StoreError for a
    broken SQLite history, ConfigError for an unusable baseline.run.
    """
    check_available(config)
    wanted = config.baseline.run
    if wanted and _is_report_file(wanted):
        return _from_report_file(Path(wanted), holdout_sha256), None
    try:
        history = open_history(config)
    except StoreError as exc:
        if reads_mlflow(config) and not wanted:
            return Baseline(), str(exc)
        raise
    if history is None:
        if wanted:
            raise ConfigError(f"baseline.run {wanted!r} needs the run history (history.enabled)")
        return Baseline(), None
    try:
        return _lookup(history, config, holdout_sha256, run_id, context), None
    except StoreError as exc:
        if reads_mlflow(config) and not wanted:  # a named baseline that cannot be read stops the run
            return Baseline(), str(exc)
        raise
    finally:
        history.close()


def _lookup(history: RunHistory, config: Config, holdout_sha256: str, run_id: str,
            context: Mapping[str, Any] | None) -> Baseline:
    wanted = config.baseline.run
    if wanted:
        found = history.require_run(wanted)
        if found["holdout_sha256"] != holdout_sha256:
            raise ConfigError(
                f"baseline.run {wanted!r} used another hold-out set (sha256 {str(found['holdout_sha256'])[:12]}"
                f", this run {holdout_sha256[:12]}); runs on different hold-out sets are never compared")
    else:
        chosen = choose_predecessor(history.passing_runs(config.target.model, holdout_sha256, exclude=run_id),
                                    context)
        if chosen is None:
            return Baseline()
        found = history.require_run(chosen.run_id)
    report = found.get("report") or {}
    predecessor = Predecessor(found["id"], found["metrics"], explicit=bool(wanted), context=report.get("context"),
                              capacity=report.get("capacity"), source=history.where)
    return Baseline(predecessor, history.evidence(found["id"]))


def _is_report_file(name: str) -> bool:
    return name.endswith(".json") or "/" in name


def _from_report_file(path: Path, holdout_sha256: str) -> Baseline:
    """A predecessor named by its report file: its figures (no per-sample evidence: change checks that
    require significance are inconclusive)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        run_id = str(report["run"]["id"])
        metrics = report["metrics"]
        sha = report["dataset"]["sha256"]
    except OSError as exc:
        raise ConfigError(f"baseline.run {str(path)!r}: cannot read the report: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"baseline.run {str(path)!r}: not a profiler report ({type(exc).__name__}: "
                          f"{str(exc)[:80]})") from None
    if sha != holdout_sha256:
        raise ConfigError(f"baseline.run {str(path)!r} used another hold-out set (sha256 {str(sha)[:12]}, this run "
                          f"{holdout_sha256[:12]}); runs on different hold-out sets are never compared")
    return Baseline(Predecessor(run_id, metrics, explicit=True, context=report.get("context"),
                                capacity=report.get("capacity"), source=f"report file {path}"), None)


def load_evidence(store: Store, run_id: str) -> Evidence:
    """A stored run's labels, predictions and measured (not warm-up) latency histograms."""
    return store.evidence(run_id)
