"""The live state of one run: what it has measured so far, read by /report and /metrics while it runs.

Only the code that runs it (profiler.app: the run, and the sidecar ending a run it had to cancel) fills
`RunState`, phase by phase. Its readers (the report assembly, the history, the Prometheus exporter, the
sidecar's progress document) take `RunView`, a read-only face that mypy holds them to: a reader cannot
assign a field or append to a list.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from profiler.config import Config
from profiler.core.results import Prediction
from profiler.dataset import Dataset
from profiler.judge.significance import Baseline
from profiler.measure.accuracy import PredictionLog
from profiler.measure.latency import StageRecorder
from profiler.measure.resources.sampler import ResourceSampler
from profiler.measure.resources.series import BoundedSeries
from profiler.schedule import Stage

PHASES = ("loading dataset", "waiting for target", "checking metadata", "before", "accuracy", "load", "after")
"""The measuring phases of a run, in order. After them the run is "building report", then "saving history",
then "done" (or "error" when it could not run)."""
LIVE_SERIES_POINTS = 300
"""The newest resource readings the progress document carries (the live page's memory and CPU charts)."""
PHASE_RUNNING, PHASE_DONE, PHASE_SKIPPED, PHASE_STOPPED = "running", "done", "skipped", "stopped"
"""How far a phase got (RunState.phases); a phase the run never reached has no entry ("not reached")."""


@dataclass(frozen=True, slots=True)
class ArtifactSize:
    """The model artifact on disk, measured once by the run: total bytes and file count, or why not."""

    path: Path
    size_bytes: int | None = None
    files: int | None = None
    problem: str | None = None
    """Set when the artifact could not be read; size_bytes and files are None then."""


class RunView(Protocol):
    """A run's state as its readers see it: every field read-only (RunState satisfies it)."""

    @property
    def run_id(self) -> str:
        """Sortable, unique id of the run."""

    @property
    def config(self) -> Config:
        """The profile the run executes."""

    @property
    def phase(self) -> str:
        """What the run is doing now ('load', 'after', 'done', ...)."""

    @property
    def started_at(self) -> str:
        """ISO 8601 UTC time stamp of the start, in seconds."""

    @property
    def stages(self) -> Sequence[Stage]:
        """The planned stages."""

    @property
    def recorders(self) -> Sequence[StageRecorder]:
        """One recorder per stage started so far, in order."""

    @property
    def predictions(self) -> PredictionLog | None:
        """The reference predictions of the accuracy pass and the consistency counts."""

    @property
    def dataset(self) -> Dataset | None:
        """The hold-out set, once loaded."""

    @property
    def series(self) -> BoundedSeries:
        """The model's memory and CPU readings over the run."""

    @property
    def sampler(self) -> ResourceSampler | None:
        """What reads the model's resources (its source, problems and cgroup)."""

    @property
    def accuracy_errors(self) -> int:
        """Requests of the accuracy pass that failed (their samples have no prediction)."""

    @property
    def accuracy_unsent(self) -> int:
        """Hold-out samples the accuracy pass never sent (it was stopped or gave up)."""

    @property
    def accuracy_incomplete(self) -> str | None:
        """Why the accuracy pass ended before sending every sample; None when it sent them all."""

    @property
    def phases(self) -> Mapping[str, str]:
        """How far each phase of PHASES got: running, done, skipped or stopped; absent: not reached."""

    @property
    def stopped_in(self) -> str | None:
        """The phase a stop (SIGTERM, SIGINT, shutdown) ended the run in; None when it was not stopped."""

    @property
    def baseline(self) -> Baseline | None:
        """The predecessor and its evidence, found before the load."""

    @property
    def baseline_problem(self) -> str | None:
        """Why the shared history (MLflow) could not be asked for the predecessor; None when it could."""

    @property
    def context(self) -> dict[str, Any] | None:
        """What the run held fixed (protocol, client, plan, host, ...), recorded before the load."""

    @property
    def artifact(self) -> ArtifactSize | None:
        """The model artifact's size, once measured (None when not configured or not yet measured)."""

    @property
    def server_views(self) -> Mapping[str, Mapping[str, Any]]:
        """The model server's own view of each finished stage, by stage name (empty without server_stats)."""

    @property
    def report(self) -> dict[str, Any] | None:
        """The finished report, once the run has one."""

    @property
    def requests_done(self) -> int:
        """Requests finished so far, all stages."""

    def progress(self) -> dict[str, Any]:
        """A small document for /report while the run is under way."""

    def unsettled(self) -> list[StageRecorder]:
        """Ended stages whose summaries `progress` has not kept yet; summarise them off the loop and `settle`."""

    def settle(self, recorders: list[StageRecorder], summaries: list[dict[str, Any]]) -> None:
        """Keep the summaries of `recorders` (as `unsettled` gave them) for every later `progress`."""


@dataclass
class RunState:
    """What a run has measured so far; written by profiler.app only, read by others as a RunView."""

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
    accuracy_unsent: int = 0
    accuracy_incomplete: str | None = None
    phases: dict[str, str] = field(default_factory=dict)
    stopped_in: str | None = None
    baseline: Baseline | None = None
    baseline_problem: str | None = None
    context: dict[str, Any] | None = None
    artifact: ArtifactSize | None = None
    report: dict[str, Any] | None = None
    requests_done: int = 0
    server_views: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The model server's own view of each finished stage, by stage name (app/server_stats.py)."""
    _settled: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False, compare=False)

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
            "stages": self._stage_summaries(),
            # What the live page (GET /) draws while the run is under way, beside the stages.
            "objective": self.config.objective.model_dump(),
            "target": {"model": self.config.target.model, "protocol": self.config.target.protocol},
            "series": [{"t_s": round(p.t_s, 3), "memory_bytes": p.memory_bytes, "cpu_s": p.cpu_s, "phase": p.phase,
                        "requests": p.requests} for p in self.series.points[-LIVE_SERIES_POINTS:]],
        }

    def unsettled(self) -> list[StageRecorder]:
        """Ended stages whose summaries are not kept yet. Stages run one after another, so every stage but the
        last has ended and its summary (three HDR histograms encoded, percentiles) no longer changes: the
        sidecar builds each once, in a thread, and keeps it (`settle`). Built on the loop at a GET /report,
        they cost 25-40 ms when a few 20 ms stages had ended since the last GET while the hold-out set was
        being parsed (every numpy call there hands the GIL over and waits to get it back)."""
        recorders = self.recorders
        return [r for r in recorders[len(self._settled):max(0, len(recorders) - 1)] if r.ended_ns]

    def settle(self, recorders: list[StageRecorder], summaries: list[dict[str, Any]]) -> None:
        """Keep the summaries of `recorders` when they are still the next stages without one."""
        start = len(self._settled)
        following = self.recorders[start:start + len(recorders)]
        if len(following) == len(recorders) and all(a is b for a, b in zip(following, recorders, strict=True)):
            self._settled.extend(summaries)

    def _stage_summaries(self) -> list[dict[str, Any]]:
        """Every stage's summary: the kept ones (`settle`), then the others built now (on a bare `progress()`,
        the stages not settled yet; normally only the live one)."""
        settled = self._settled
        return [*settled, *(r.summary() for r in self.recorders[len(settled):])]


def new_state(config: Config) -> RunState:
    """A fresh state with a sortable, unique run id."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return RunState(run_id=f"{stamp}-{uuid.uuid4().hex[:6]}", config=config)
