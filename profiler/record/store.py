"""The run history: an embedded SQLite file of runs, their reports, histograms and predictions.

Write-ahead log and one transaction per run, so a crash or a second writer never loses a stored
run; a locked, corrupt or newer-schema file is a StoreError naming the file. I/O shell.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.core.errors import StoreError
from profiler.core.redact import redact
from profiler.judge.comparability import Candidate
from profiler.judge.significance import Evidence, StageLatency

SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 5.0
"""How long a write waits for another writer before giving up with a clear error."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    started_at TEXT,
    finished_at TEXT,
    model TEXT NOT NULL,
    model_version TEXT,
    holdout_sha256 TEXT,
    run_status TEXT NOT NULL,
    verdict TEXT NOT NULL,
    predecessor_id TEXT,
    config_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    report_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_lineage ON runs (model, holdout_sha256, verdict, seq);
CREATE TABLE IF NOT EXISTS histograms (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    kind TEXT NOT NULL,
    offered_rps REAL NOT NULL,
    warmup INTEGER NOT NULL,
    encoded TEXT NOT NULL,
    PRIMARY KEY (run_id, stage, kind)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    sample_index INTEGER NOT NULL,
    sample_id TEXT,
    label TEXT,
    prediction TEXT,
    PRIMARY KEY (run_id, sample_index)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class StageHistogram:
    """One stage's encoded HDR histogram (microseconds) of one kind ('latency' or 'service')."""

    stage: str
    kind: str
    offered_rps: float
    warmup: bool
    encoded: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Everything stored about one run."""

    run_id: str
    report: dict[str, Any]
    config: dict[str, Any]
    histograms: list[StageHistogram]
    predictions: list[tuple[int, str | None, str | None, str | None]]
    """(sample index, sample id, label, prediction) per hold-out sample."""
    predecessor_id: str | None = None


class Store:
    """One SQLite history file. Use as a context manager; every method raises StoreError, never sqlite3's."""

    def __init__(self, path: Path, *, create: bool = True, timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.timeout_s = timeout_s
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no run history here (it is written by `profiler run`)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the run history: {exc}") from None
        self._db.row_factory = sqlite3.Row
        with self._guard("open"):
            self._db.execute("PRAGMA foreign_keys = ON")
            mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                self._db.execute("PRAGMA journal_mode = WAL")
            version = self._version()
            if version is None:
                # Only a new file takes the write lock here, so opening never waits on another writer.
                with self._transaction():
                    # executescript would commit the open transaction, so the statements go one by one.
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        self._db.execute(statement)
                    if self._version() is None:
                        self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: the run history has schema version {version}, newer than "
                                 f"this profiler's {SCHEMA_VERSION}; upgrade the profiler")

    def _version(self) -> int | None:
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
                                  ).fetchone()
        if exists is None:
            return None
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        return None if row[0] is None else int(row[0])

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._db.close()

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Turn sqlite3 errors into one-line StoreErrors that name the file."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"{self.path}: the run history is locked by another process (waited "
                                 f"{self.timeout_s:g} s to {doing}); nothing was changed") from None
            raise StoreError(f"{self.path}: cannot {doing} the run history: {exc}") from None
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"{self.path}: cannot {doing} the run history: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: the run history is not a readable SQLite database ({exc}); "
                             "move it aside or set history.path") from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def save_run(self, record: RunRecord) -> None:
        """Store a run in one transaction: either all of it is written or nothing is."""
        report = record.report
        run = report.get("run", {})
        target = report.get("target", {})
        with self._guard("save a run to"), self._transaction():
            self._db.execute(
                "INSERT INTO runs (id, started_at, finished_at, model, model_version, holdout_sha256, run_status,"
                " verdict, predecessor_id, config_json, metrics_json, report_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.run_id, run.get("started_at"), run.get("finished_at"), target.get("model", ""),
                 target.get("version"), (report.get("dataset") or {}).get("sha256"), run.get("status", ""),
                 (report.get("verdict") or {}).get("status", ""), record.predecessor_id,
                 json.dumps(redact(record.config), default=str), json.dumps(report.get("metrics") or {}),
                 json.dumps(report, default=str)),
            )
            self._db.executemany(
                "INSERT INTO histograms (run_id, stage, kind, offered_rps, warmup, encoded) VALUES (?, ?, ?, ?, ?, ?)",
                [(record.run_id, h.stage, h.kind, h.offered_rps, int(h.warmup), h.encoded) for h in record.histograms],
            )
            self._db.executemany(
                "INSERT INTO predictions (run_id, sample_index, sample_id, label, prediction) VALUES (?, ?, ?, ?, ?)",
                ((record.run_id, *row) for row in record.predictions),
            )

    def list_runs(self, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Runs newest first: id, times, model, version, hold-out hash, status, verdict, predecessor, metrics."""
        query = ("SELECT id, started_at, finished_at, model, model_version, holdout_sha256, run_status, verdict,"
                 " predecessor_id, metrics_json FROM runs")
        params: list[Any] = []
        if model is not None:
            query += " WHERE model = ?"
            params.append(model)
        query += " ORDER BY seq DESC"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        with self._guard("read"):
            rows = self._db.execute(query, params).fetchall()
        return [_summary(row) for row in rows]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run's summary plus its config and full report, or None if there is no such run."""
        with self._guard("read"):
            row = self._db.execute(
                "SELECT id, started_at, finished_at, model, model_version, holdout_sha256, run_status, verdict,"
                " predecessor_id, metrics_json, config_json, report_json FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
        if row is None:
            return None
        out = _summary(row)
        out["config"] = json.loads(row["config_json"])
        out["report"] = json.loads(row["report_json"])
        return out

    def require_run(self, run_id: str) -> dict[str, Any]:
        """get_run, or a StoreError naming the run and the file."""
        found = self.get_run(run_id)
        if found is None:
            raise StoreError(f"{self.path}: no run {run_id!r} in the run history (see `profiler history`)")
        return found

    def last_passing(self, model: str, holdout_sha256: str, exclude: str | None = None) -> str | None:
        """The id of the newest passing run of `model` on the hold-out set with this hash."""
        with self._guard("read"):
            row = self._db.execute(
                "SELECT id FROM runs WHERE model = ? AND holdout_sha256 = ? AND verdict = 'pass' AND id != ?"
                " ORDER BY seq DESC LIMIT 1", (model, holdout_sha256, exclude or "")
            ).fetchone()
        return None if row is None else str(row["id"])

    def passing_runs(self, model: str, holdout_sha256: str, exclude: str | None = None,
                     limit: int = 50) -> list[Candidate]:
        """The passing runs of `model` on this hold-out set, newest first, with their recorded contexts."""
        with self._guard("read"):
            rows = self._db.execute(
                "SELECT id, json_extract(report_json, '$.context') AS context FROM runs WHERE model = ? AND"
                " holdout_sha256 = ? AND verdict = 'pass' AND id != ? ORDER BY seq DESC LIMIT ?",
                (model, holdout_sha256, exclude or "", limit)).fetchall()
        return [Candidate(str(r["id"]), json.loads(r["context"]) if r["context"] else None) for r in rows]

    def evidence(self, run_id: str) -> Evidence:
        """A stored run's labels, predictions and measured (not warm-up) latency histograms."""
        labels, predictions = self.predictions(run_id)
        latency = [StageLatency(h.stage, h.offered_rps, h.encoded) for h in self.histograms(run_id)
                   if h.kind == "latency" and not h.warmup]
        return Evidence(labels, predictions, latency)

    def histograms(self, run_id: str) -> list[StageHistogram]:
        """The run's encoded histograms, in stage order."""
        with self._guard("read"):
            rows = self._db.execute(
                "SELECT stage, kind, offered_rps, warmup, encoded FROM histograms WHERE run_id = ? ORDER BY rowid",
                (run_id,)).fetchall()
        return [StageHistogram(r["stage"], r["kind"], r["offered_rps"], bool(r["warmup"]), r["encoded"])
                for r in rows]

    def predictions(self, run_id: str) -> tuple[list[str | None], list[str | None]]:
        """(labels, predictions) by sample index; None where a sample got no prediction."""
        with self._guard("read"):
            rows = self._db.execute("SELECT label, prediction FROM predictions WHERE run_id = ? ORDER BY sample_index",
                                    (run_id,)).fetchall()
        return [r["label"] for r in rows], [r["prediction"] for r in rows]


def _summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"], "started_at": row["started_at"], "finished_at": row["finished_at"], "model": row["model"],
        "model_version": row["model_version"], "holdout_sha256": row["holdout_sha256"],
        "run_status": row["run_status"], "verdict": row["verdict"], "predecessor_id": row["predecessor_id"],
        "metrics": json.loads(row["metrics_json"]),
    }

