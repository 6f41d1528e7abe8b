"""The load engine: the only loop that sleeps. Sends on a timetable, never waiting for responses."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

from profiler.core.errors import DecodeError, IdMismatchError, TransportError
from profiler.core.heap import young_collections_only
from profiler.core.results import DECODE, ID_MISMATCH, OK, Consumer, Result, StageTally
from profiler.core.units import NS_PER_S
from profiler.load.timer import MONOTONIC, Clock, Waker
from profiler.measure.latency import StageRecorder
from profiler.schedule import LAG_BUDGET_NS, Pacing, Stage, arrival_gap_ns, pacing
from profiler.transports.base import Transport

Decoder = Callable[..., list[Any]]
"""decode(answer body, sample count) -> predictions; with the engine's `ids`, decode(body, count, request id)."""


class Engine:
    """Open-loop dispatcher for one target.

    Each request is sent at its intended time whether or not earlier ones have answered.
    Latency is taken from the intended time, so a stalled model cannot hide its queue.
    At most `max_in_flight` requests are outstanding; a request that cannot get a slot within
    `timeout_s` of its intended time is counted as unsent instead of being sent (later ones are
    sent late, and their latency shows it). Requests still open `timeout_s` + 1 s after the
    stage's last send are cancelled and counted as timeouts, so a stage always ends.
    `lag_budget_ns` bounds how late a send may be made to share a wake (see schedule.LAG_BUDGET_NS;
    the engine follows schedule.pacing). `clock` is its time, sleeps included (see timer.Clock): the
    dispatch is the same code on the real clock and on a test's fake one. `ids` (one per body, the id that
    body carries) are handed to `decode` with each answer, which checks the answer's echo of it; an answer
    under another id is an `id_mismatch`, its own outcome.
    """

    def __init__(
        self,
        transport: Transport,
        path: str,
        bodies: Sequence[bytes],
        decode: Decoder,
        *,
        batch: int = 1,
        sample_count: int,
        max_in_flight: int = 512,
        timeout_s: float = 10.0,
        consumers: Iterable[Consumer] = (),
        clock: Clock = MONOTONIC,
        cpu_clock: Callable[[], float] = time.process_time,
        lag_budget_ns: int = LAG_BUDGET_NS,
        ids: Sequence[str | None] | None = None,
    ) -> None:
        if not bodies:
            raise ValueError("the engine needs at least one request body")
        if ids is not None and len(ids) != len(bodies):
            raise ValueError("the engine needs one request id per body")
        self._ids = ids
        self._transport = transport
        self._path = path
        self._bodies = bodies
        self._decode = decode
        self._batch = batch
        self._sample_count = sample_count
        self.sample_count = sample_count
        self._max_in_flight = max_in_flight
        self._stale_ns = int(timeout_s * NS_PER_S)
        self._consumers = list(consumers)
        self._time = clock
        self._clock = clock.now_ns  # bound once: read twice per request
        self._cpu_clock = cpu_clock
        self._in_flight = 0
        self._budget_ns = lag_budget_ns
        self._slot_waiter: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._polled = False
        self._stopping = False
        self._cursor = 0
        self._tally = StageTally(0, clock.now_ns, cpu_clock, 0.0)
        """The stage under way's running count (a fresh one per stage); _launch counts its sends into it."""

    def stop(self) -> None:
        """Stop sending; requests already in flight are still awaited and recorded."""
        self._stopping = True
        waiter = self._slot_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def ids(self) -> Sequence[str | None] | None:
        """The id each body carries (None: answers are not checked against one)."""
        return self._ids

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stopping

    async def run_stage(self, stage: Stage, offsets_ns: Iterable[int], recorder: StageRecorder,
                        until: Callable[[], bool] | None = None, start_ns: int | None = None,
                        gap_ns: float | None = None, even: bool = False) -> None:
        """Send the stage's timetable, then wait for its requests to finish (bounded by the timeout).

        Accounting: every offset taken from the timetable is `scheduled` and then either sent
        (ending as a result: completed or an error) or `unsent`; after stop() or `until()` (asked
        before each send) no further offset is taken. `start_ns` (monotonic, shared by every
        process on the machine) lets worker processes start a stage together. The lag histogram
        gets how late the dispatcher woke for each send, measured from when it could have sent
        (a wait for an in-flight slot is the model's doing and shows as `late` and in the latency).
        `gap_ns` is the mean gap between this engine's arrivals (default: the stage's rate; a worker
        that gets every Nth arrival has N times that), and `even` says they are evenly spaced (the
        constant process), which lets the wake grid sit on them. The recorder is opened at the start
        (its windows count from it) with the stage's StageTally, the live count it reads while the stage
        runs, and gets the stage's StageAccount in one piece at the end.
        """
        sinks: list[Consumer] = [recorder, *self._consumers]
        clock = self._clock
        if start_ns is None:
            start_ns = clock()
        tally = self._tally = StageTally(start_ns, clock, self._cpu_clock, self._cpu_clock())
        recorder.open(start_ns, tally)
        # No full collection mid-stage: it would walk every object alive that the process has not frozen (the
        # dataset, the recorders; see core.heap), a pause that lands in the latency of whatever is in flight.
        # Nothing is frozen here: frozen objects are never collected, and a stage's HDR histograms are cyclic.
        with young_collections_only():
            waker = self._time.waker()
            offsets: Iterator[int] = iter(offsets_ns)
            first = next(offsets, None)
            wakes = Pacing(self._budget_ns)
            if first is not None:
                offsets = itertools.chain((first,), offsets)
                gap = gap_ns or arrival_gap_ns(stage.rate_rps, "constant" if even else "poisson")
                wakes = self._lay_grid(waker, pacing(self._budget_ns, gap, even, start_ns + first))
            try:
                cut_short = await self._dispatch(stage.index, start_ns, offsets, sinks, until, waker, wakes,
                                                 recorder.record_lag, tally)
            finally:
                waker.close()
                self._use_polled(False)
            ended_ns = clock()
            await self.drain()
        recorder.close(tally.account(ended_ns, cut_short))

    def _lay_grid(self, waker: Waker, wakes: Pacing) -> Pacing:
        """Arm the policy's grid, if it has one, and read answers at its wakes; the policy the dispatch follows.

        Polled mode: the event loop no longer wakes for each answer; the dispatcher drains them at its
        own wakes. The kernel's receive times keep their latency exact; they are only read later.
        A sleeper that cannot tick leaves a wake per send (shared within the budget).
        """
        if not wakes.polled:
            return wakes
        if not waker.tick(wakes.origin_ns, wakes.period_ns):
            return wakes.own_wakes()
        self._use_polled(True)
        return wakes

    async def _dispatch(self, stage_index: int, start_ns: int, offsets_ns: Iterable[int], sinks: list[Consumer],
                        until: Callable[[], bool] | None, waker: Waker, wakes: Pacing,
                        record_lag: Callable[[int], None], tally: StageTally) -> bool:
        """The hot loop: sleep to each intended time, take a slot, launch.

        Counts into `tally` as it goes (the live view of the stage); returns whether the stage was cut short.
        """
        clock = self._clock
        stale_ns = self._stale_ns
        free_ns = 0  # when the dispatcher last came out of a wait for a slot
        woke_ns = 0
        deadline_ns = wakes.deadline_ns
        for offset in offsets_ns:
            if self._stopping or (until is not None and until()):
                return True
            intended = start_ns + offset
            now = clock()
            if intended > now:
                await waker.until(deadline_ns(woke_ns, intended))
                if self._polled:
                    self._transport.poll()
                if self._stopping:
                    return True
                now = woke_ns = clock()
            tally.scheduled += 1
            if now - intended > stale_ns:
                tally.unsent += 1
                continue
            if self._polled and self._in_flight >= self._max_in_flight:
                self._transport.poll()  # answers already in may free a slot
            if self._in_flight >= self._max_in_flight:
                if not await self._wait_slot(intended + stale_ns):
                    tally.unsent += 1
                    continue
                free_ns = clock()
                tally.late += 1
            else:
                record_lag(now - (intended if intended > free_ns else free_ns))
            self._launch(stage_index, intended, sinks)
        return False

    async def _wait_slot(self, deadline_ns: int) -> bool:
        """Wait for an in-flight slot until `deadline_ns`; False if none came (or the engine stops).

        One bare future and one timer per wait (no Event, no timeout context): when the target is
        the limit this runs once per request.
        """
        self._use_polled(False)  # the target is the limit now: wake for its answers for the rest of the stage
        loop = asyncio.get_running_loop()
        while self._in_flight >= self._max_in_flight and not self._stopping:
            left_ns = deadline_ns - self._clock()
            if left_ns <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._slot_waiter = waiter
            timer = loop.call_later(left_ns / NS_PER_S, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._slot_waiter = None
        return not self._stopping

    def _use_polled(self, polled: bool) -> None:
        if polled != self._polled:
            self._polled = self._transport.set_polled(polled)

    def _launch(self, stage_index: int, intended_ns: int, sinks: list[Consumer]) -> None:
        index = self._cursor
        self._cursor = (index + 1) % len(self._bodies)
        self._in_flight += 1
        self._tally.sent += 1
        # The transport calls back on the answer: no task, coroutine or future per request.
        self._transport.submit(self._path, self._bodies[index],
                               partial(self._finished, stage_index, index, intended_ns, self._clock(), sinks))

    def _finished(self, stage_index: int, index: int, intended_ns: int, sent_ns: int, sinks: list[Consumer],
                  payload: bytes, error: TransportError | None, received_ns: int) -> None:
        """The end of one request: its Result goes to every sink.

        The answer's time is the kernel's receive time when the transport read one (0: none) and it
        lies between the send and now on the engine's clock (see timer.Clock), else now.
        """
        done_ns = self._clock()
        if sent_ns <= received_ns <= done_ns and received_ns:
            done_ns = received_ns
        predictions = None
        detail = None
        status = 0
        if error is None:
            ids = self._ids
            try:
                predictions = (self._decode(payload, self._batch) if ids is None
                               else self._decode(payload, self._batch, ids[index]))
                outcome = OK
            except IdMismatchError as exc:
                outcome, detail = ID_MISMATCH, str(exc)
            except DecodeError as exc:
                outcome, detail = DECODE, str(exc)
        else:
            outcome, detail, status = error.kind, str(error), error.status
        self._in_flight -= 1
        waiter = self._slot_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._in_flight == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        result = Result(stage_index, (index * self._batch) % self._sample_count, self._batch, intended_ns, sent_ns,
                        done_ns, outcome, predictions, detail, status)
        for sink in sinks:
            sink.add(result)

    async def drain(self) -> None:
        """Wait for every request in flight, at most the timeout plus a grace second.

        Each transport ends its own requests at the same timeout, so the wait ends with them; a request
        still open after it is recorded when it ends, in its own stage.
        """
        if self._in_flight == 0:
            return
        self._idle = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._idle), self._stale_ns / NS_PER_S + 1.0)
        except TimeoutError:
            pass
        finally:
            self._idle = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def build_bodies(samples: Sequence[Any], batch: int, encode: Callable[[Sequence[Any]], bytes]) -> list[bytes]:
    """Pre-encode every request once: request j carries samples j*batch .. j*batch+batch-1, wrapping."""
    return [encode(chunk) for chunk in _chunks(samples, batch)]


def build_ids(samples: Sequence[Any], batch: int, request_id: Callable[[Sequence[Any]], str | None]
              ) -> list[str | None] | None:
    """The id each of build_bodies' requests carries, in the same order; None when the protocol has none."""
    ids = [request_id(chunk) for chunk in _chunks(samples, batch)]
    return ids if any(i is not None for i in ids) else None


def _chunks(samples: Sequence[Any], batch: int) -> Iterator[list[Any]]:
    n = len(samples)
    for j in range(-(-n // batch)):
        yield [samples[(j * batch + k) % n] for k in range(batch)]
