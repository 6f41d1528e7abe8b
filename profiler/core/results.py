"""What the engine hands on: a `Prediction` per request, a `Result` (a prediction with its times) per
request sent under load, and a `StageAccount` per stage (with a `StageTally`, its live view, while the
stage runs). Every consumer takes them one at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

OK = "ok"
TIMEOUT = "timeout"
CONNECTION = "connection"
HTTP_STATUS = "http_status"
GRPC_STATUS = "grpc_status"
DECODE = "decode"
ID_MISMATCH = "id_mismatch"
"""An answer whose `id` is not the one its request carried (V2): the server mixed up answers."""
OUTCOMES = (OK, TIMEOUT, CONNECTION, HTTP_STATUS, GRPC_STATUS, DECODE, ID_MISMATCH)


@dataclass(slots=True)
class Prediction:
    """What one request predicted: `batch` consecutive hold-out samples from `first_sample` (wrapping), how
    it ended, and the predictions (None unless outcome is ok).

    All that the accuracy log and the request count need. The worker processes' stream and the accuracy
    pass have nothing more (no times), so they hand these on, never a Result with made-up times.
    """

    first_sample: int
    batch: int
    outcome: str
    predictions: list[Any] | None


@dataclass(slots=True, init=False)
class Result(Prediction):
    """One request sent under load: its Prediction plus when it was meant to go, when it went, when it ended.

    Times are monotonic nanoseconds. A Result is a Prediction, so the engine hands its one object per
    request to the prediction consumers too (no second object on the hot path).
    """

    stage: int
    intended_ns: int
    sent_ns: int
    done_ns: int
    error: str | None
    status: int

    def __init__(self, stage: int, first_sample: int, batch: int, intended_ns: int, sent_ns: int, done_ns: int,
                 outcome: str, predictions: list[Any] | None = None, error: str | None = None,
                 status: int = 0) -> None:
        self.stage = stage
        self.first_sample = first_sample
        self.batch = batch
        self.intended_ns = intended_ns
        self.sent_ns = sent_ns
        self.done_ns = done_ns
        self.outcome = outcome
        self.predictions = predictions
        self.error = error
        self.status = status

    @property
    def latency_ns(self) -> int:
        """From the intended send time: includes any wait the generator or the model caused."""
        return self.done_ns - self.intended_ns

    @property
    def service_ns(self) -> int:
        """From the actual send: what a closed-loop tool would report."""
        return self.done_ns - self.sent_ns

    @property
    def lag_ns(self) -> int:
        """How late the generator sent it."""
        return self.sent_ns - self.intended_ns


@dataclass(frozen=True, slots=True)
class StageAccount:
    """What became of one stage's timetable, handed to its recorder in one piece when the stage ends.

    `started_ns` and `ended_ns` (monotonic) bound the dispatch: its shared start and its last send.
    Every arrival taken from the timetable was `scheduled`; each was sent or is `unsent` (no in-flight
    slot within the timeout of its intended time); `late` ones were sent after waiting for a slot.
    `cut_short`: the stage ended before its timetable did (stop, or a search stage that settled).
    `cpu_s` is the generator process's CPU seconds over the stage, its drain included.
    """

    started_ns: int
    ended_ns: int
    scheduled: int
    unsent: int
    late: int
    cut_short: bool
    cpu_s: float


@dataclass(slots=True)
class StageTally:
    """The dispatcher's running count of the stage under way: the live view of its StageAccount.

    The engine counts into it as it goes (one attribute increment where it counted into a local, no copy
    per request); the stage's recorder reads it when asked for figures while the stage runs (/report,
    /metrics, a worker's partial figures). Readers share the engine's event loop, so they see it between
    two of its steps. `now_ns` and `cpu_s` read the engine's own clocks (injected: a fake clock in tests).
    """

    started_ns: int
    clock_ns: Callable[[], int]
    """The engine's monotonic clock, nanoseconds."""
    cpu_clock_s: Callable[[], float]
    """The generator process's CPU clock, seconds."""
    cpu_start_s: float
    scheduled: int = 0
    """Arrivals taken from the timetable so far."""
    sent: int = 0
    """Requests sent so far (each scheduled arrival is sent or counted unsent)."""
    unsent: int = 0
    late: int = 0

    def now_ns(self) -> int:
        """Now, on the engine's clock (monotonic ns)."""
        return self.clock_ns()

    def cpu_s(self) -> float:
        """The generator's CPU seconds since the stage started."""
        return self.cpu_clock_s() - self.cpu_start_s

    def account(self, ended_ns: int, cut_short: bool) -> StageAccount:
        """The stage's account once its dispatch has ended and its requests drained."""
        return StageAccount(self.started_ns, ended_ns, self.scheduled, self.unsent, self.late, cut_short,
                            self.cpu_s())


class PredictionConsumer(Protocol):
    """Anything that needs only what requests predicted: the accuracy log, the run's request count."""

    def add(self, prediction: Prediction) -> None:
        """Take one request's prediction record."""
        ...


class Consumer(Protocol):
    """Anything that takes the engine's result stream: recorders, test sinks. Every PredictionConsumer is
    one too (a Result is a Prediction), so the engine fans one list out with one call per sink."""

    def add(self, result: Result) -> None:
        """Take one result."""
        ...
