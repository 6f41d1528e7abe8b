"""What the engine hands on: a `Prediction` per request, a `Result` (a prediction with its times) per
request sent under load, and a `StageAccount` per stage. Every consumer takes them one at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

OK = "ok"
TIMEOUT = "timeout"
CONNECTION = "connection"
HTTP_STATUS = "http_status"
GRPC_STATUS = "grpc_status"
DECODE = "decode"
OUTCOMES = (OK, TIMEOUT, CONNECTION, HTTP_STATUS, GRPC_STATUS, DECODE)


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
