"""`Result`: what happened to one request. Every consumer takes results one at a time."""

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
class Result:
    """One request: when it was meant to go, when it went, when it ended, and what came back.

    Times are monotonic nanoseconds. `first_sample` indexes the hold-out set; a request carries
    `batch` consecutive samples (wrapping around). `predictions` is None unless outcome is ok.
    """

    stage: int
    first_sample: int
    batch: int
    intended_ns: int
    sent_ns: int
    done_ns: int
    outcome: str
    predictions: list[Any] | None = None
    error: str | None = None
    status: int = 0

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


class Consumer(Protocol):
    """Anything that takes the result stream: recorders, the store, exporters."""

    def add(self, result: Result) -> None:
        """Take one result."""
        ...
