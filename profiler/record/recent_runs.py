"""The runs a sidecar serves at GET /runs and GET /runs/{id}.

`RunSource` is what the server needs from a run history. `StoreRuns` reads the SQLite run history
(profiler.record.store) that every run writes when history is enabled (the default); `MemoryRuns` keeps
the last few reports of this process when it is not.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from profiler.record.store import Store


class RunSource(Protocol):
    """Finished runs: add a report, list summaries newest first, fetch one report by run id."""

    def add(self, report: dict[str, Any]) -> None:
        """Keep a finished (completed or aborted) run's report."""
        ...

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Summaries of the newest `limit` runs, newest first."""
        ...

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The full report of one run, or None when it is unknown."""
        ...


def run_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The line of GET /runs for one report: id, status, times, model, verdict."""
    run = report.get("run") or {}
    verdict = report.get("verdict") or {}
    target = report.get("target") or {}
    return {
        "id": run.get("id"),
        "status": run.get("status"),
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "duration_s": run.get("duration_s"),
        "model": target.get("model"),
        "verdict": verdict.get("status"),
        "reason": verdict.get("reason"),
    }


class MemoryRuns:
    """The newest `capacity` reports of this process, in memory (bounded, whatever the uptime)."""

    def __init__(self, capacity: int = 20) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._reports: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add(self, report: dict[str, Any]) -> None:
        """Keep the report; the oldest is dropped past capacity."""
        run_id = str(report["run"]["id"])
        self._reports.pop(run_id, None)
        self._reports[run_id] = report
        while len(self._reports) > self._capacity:
            self._reports.popitem(last=False)

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Summaries, newest first."""
        if limit <= 0:
            return []
        return [run_summary(r) for r in reversed(self._reports.values())][:limit]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The report, or None."""
        return self._reports.get(run_id)


class StoreRuns:
    """The SQLite run history (profiler.record.store) as a RunSource. A run saves itself there when it ends
    (profiler.record.history.record); reads open the file for each call.

    The store's rows carry no duration or verdict reason, so `add` keeps those two of this process's own
    runs (the newest `capacity`, a few numbers and a line each) and the list fills them in for its runs.
    """

    def __init__(self, path: Path, timeout_s: float = 5.0, capacity: int = 1000) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._capacity = capacity
        self._own: OrderedDict[str, tuple[float | None, str | None]] = OrderedDict()

    def add(self, report: dict[str, Any]) -> None:
        """The run recorded itself; keep its duration and the verdict's reason for the list."""
        summary = run_summary(report)
        run_id = str(summary["id"])
        duration_s, reason = summary["duration_s"], summary["reason"]
        self._own.pop(run_id, None)
        self._own[run_id] = (None if duration_s is None else float(duration_s), None if reason is None else str(reason))
        while len(self._own) > self._capacity:
            self._own.popitem(last=False)

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Summaries, newest first; none before the first run created the file. StoreError when unreadable.
        `duration_s` and `reason` are filled for runs of this process, None for the others."""
        if limit <= 0 or not self._path.exists():
            return []
        with Store(self._path, create=False, timeout_s=self._timeout_s) as store:
            rows = store.list_runs(limit)
        summaries = []
        for row in rows:
            duration_s, reason = self._own.get(str(row["id"]), (None, None))
            summaries.append({"id": row["id"], "status": row["run_status"], "started_at": row["started_at"],
                              "finished_at": row["finished_at"], "duration_s": duration_s, "model": row["model"],
                              "verdict": row["verdict"], "reason": reason})
        return summaries

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The report of one run, or None."""
        if not self._path.exists():
            return None
        with Store(self._path, create=False, timeout_s=self._timeout_s) as store:
            found = store.get_run(run_id)
        if found is None:
            return None
        report: dict[str, Any] = found["report"]
        return report
