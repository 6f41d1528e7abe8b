"""The live state of one run: what it has measured so far, read by /report and /metrics while it runs.

The run (profiler.app.run) fills it in phase by phase; the report assembly, the history and the
Prometheus exporter only read it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from profiler.config import Config
from profiler.core.results import Prediction
from profiler.dataset import Dataset
from profiler.judge.significance import Baseline
from profiler.measure.accuracy import PredictionLog
from profiler.measure.latency import StageRecorder
from profiler.measure.resources.sampler import ResourceSampler
from profiler.measure.resources.series import BoundedSeries
from profiler.schedule import Stage


@dataclass
class RunState:
    """What a run has measured so far; read by /report and /metrics while it runs."""

    run_id: str
    config: Config
    phase: str = "starting"
    started_at: str = ""
    stages: list[Stage] = field(default_factory=list)
    recorders: list[StageRecorder] = field(default_factory=list)
    predictions: PredictionLog | None = None
    dataset: Dataset | None = None
    series: BoundedSeries = field(default_factory=BoundedSeries)
    sampler: ResourceSampler | None = None
    accuracy_errors: int = 0
    baseline: Baseline | None = None
    report: dict[str, Any] | None = None
    requests_done: int = 0

    def add(self, prediction: Prediction) -> None:
        """Count every finished request, from the engine or a worker (the resource series plots memory
        against requests)."""
        self.requests_done += 1

    @property
    def current_stage(self) -> str | None:
        """The stage being sent: the last one started, while the load runs."""
        return self.recorders[-1].stage.name if self.recorders and self.phase == "load" else None

    def progress(self) -> dict[str, Any]:
        """A small document for /report while the run is under way."""
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "started_at": self.started_at,
            "current_stage": self.current_stage,
            "stages_done": sum(1 for r in self.recorders if r.ended_ns),
            "stages_total": len(self.stages),
            "requests_done": self.requests_done,
            "stages": [r.summary() for r in self.recorders],
        }


def new_state(config: Config) -> RunState:
    """A fresh state with a sortable, unique run id."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return RunState(run_id=f"{stamp}-{uuid.uuid4().hex[:6]}", config=config)
