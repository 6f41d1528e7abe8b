"""The run history's back ends behind one protocol: the SQLite file (record.store) and an MLflow experiment
(record.tracking). The predecessor rule (judge.comparability.choose_predecessor), `profiler history` and
`profiler compare` ask only these questions, so they work the same against either. I/O shell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from profiler.config import HISTORY_FILE, Config
from profiler.judge.comparability import Candidate
from profiler.judge.significance import Evidence
from profiler.record.store import Store
from profiler.record.tracking import MlflowHistory


class RunHistory(Protocol):
    """What the profiler asks of a run history. Every method raises StoreError naming `where`."""

    where: str
    """The history in words for messages and the report: a file path, or 'MLflow at URL (experiment X)'."""

    def passing_runs(self, model: str, holdout_sha256: str, exclude: str | None = None,
                     limit: int = 50) -> list[Candidate]:
        """Passing runs of `model` on this hold-out set, newest first, with their recorded contexts."""

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run's summary (id, model, holdout_sha256, verdict, metrics, ...) and its `report`, or None."""

    def require_run(self, run_id: str) -> dict[str, Any]:
        """get_run, or StoreError naming the run."""

    def list_runs(self, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Run summaries, newest first."""

    def evidence(self, run_id: str) -> Evidence:
        """Labels, predictions and measured latency histograms for the paired tests."""

    def close(self) -> None:
        """Release the file or connection."""


def reads_mlflow(config: Config) -> bool:
    """Whether the profile keeps its history in MLflow (tracking configured, and `tracking.history` on)."""
    return config.tracking is not None and config.tracking.history


def open_history(config: Config, *, create: bool = True) -> RunHistory | None:
    """The history this profile reads its predecessor from: MLflow when `tracking.history`, else the SQLite
    file (None when the history is off). `create` makes a missing SQLite file."""
    if config.tracking is not None and config.tracking.history:
        return MlflowHistory(config.tracking)
    if not config.history.enabled or config.history.path is None:
        return None
    return Store(config.history.path, create=create)


def open_for_command(db: Path | None, config: Config | None) -> RunHistory:
    """The history `profiler history` and `compare` read: --db (a SQLite file) wins, else the profile's own
    (MLflow when it keeps its history there), else ./profiler-history.sqlite."""
    if db is None and config is not None:
        found = open_history(config, create=False)
        if found is not None:
            return found
        db = config.history.path
    return Store(db or Path(HISTORY_FILE), create=False)
