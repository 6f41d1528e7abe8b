"""The engine on a fake clock runs its real dispatch: the wake policy, polled mode, slots, kernel times, one account.

The fake clock moves only when the dispatcher sleeps (a sleep until t sets it to t, or to the grid's
first tick at or after t, as a timer that wakes exactly on time would), so every send's lateness is
exactly what the policy (profiler.schedule.pacing) says, with no sleeping and no noise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from profiler.core.errors import TransportError
from profiler.core.results import OK, TIMEOUT, Result, StageAccount
from profiler.core.units import NS_PER_S
from profiler.load.engine import Engine
from profiler.load.timer import Clock, Waker
from profiler.measure.latency import StageRecorder
from profiler.schedule import LAG_BUDGET_NS, Pacing, Stage, arrival_offsets_ns, make_stage, pacing
from profiler.transports.base import Done

START_NS = 5 * NS_PER_S


class FakeClock:
    """Time that moves only when the engine sleeps; its wakers tick on a grid when asked."""

    def __init__(self, can_tick: bool = True) -> None:
        self.now = START_NS
        self.can_tick = can_tick
        self.grid: Pacing | None = None
        self.sleeps: list[int] = []
        self.closed = 0

    def now_ns(self) -> int:
        return self.now

    def waker(self) -> Waker:
        return FakeWaker(self)


class FakeWaker:
    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        clock.grid = None

    def tick(self, first_ns: int, interval_ns: int) -> bool:
        if self._clock.can_tick:
            self._clock.grid = Pacing(0, first_ns, interval_ns)
        return self._clock.can_tick

    async def until(self, deadline_ns: int) -> None:
        clock = self._clock
        clock.sleeps.append(deadline_ns)
        await asyncio.sleep(0)  # while it sleeps the loop takes what is due (answers), then time moves on
        wake_ns = clock.grid.tick_ns(deadline_ns) if clock.grid is not None else deadline_ns
        clock.now = max(clock.now, wake_ns)

    def close(self) -> None:
        self._clock.closed += 1


class FakeTransport:
    """Answers each request on the loop's next turn, `service_ns` of fake time after it was sent, with the
    kernel receive time `received(sent_ns)`; records what the engine asked of it."""

    def __init__(self, clock: FakeClock, service_ns: int = 0, received: Callable[[int], int] = lambda sent: 0,
                 error: TransportError | None = None) -> None:
        self._clock = clock
        self._service_ns = service_ns
        self._received = received
        self._error = error
        self.modes: list[bool] = []
        self.polls = 0

    def submit(self, path: str, body: bytes, done: Done) -> None:
        asyncio.get_running_loop().call_soon(self._answer, self._clock.now, done)

    def _answer(self, sent_ns: int, done: Done) -> None:
        self._clock.now = max(self._clock.now, sent_ns + self._service_ns)
        done(b"" if self._error else b"7", self._error, self._received(sent_ns))

    def set_polled(self, polled: bool) -> bool:
        self.modes.append(polled)
        return polled

    def poll(self) -> None:
        self.polls += 1

    async def send(self, path: str, body: bytes) -> bytes:
        raise AssertionError("the engine only submits")

    async def probe(self, path: str) -> int:
        return 200

    async def close(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.results: list[Result] = []

    def add(self, result: Result) -> None:
        self.results.append(result)


class AccountedRecorder(StageRecorder):
    """A recorder that keeps every account it is handed."""

    def __init__(self, stage: Stage) -> None:
        super().__init__(stage)
        self.accounts: list[StageAccount] = []

    def close(self, account: StageAccount) -> None:
        self.accounts.append(account)
        super().close(account)


def decode(body: bytes, count: int) -> list[int]:
    return [int(body)] * count


def engine_on(clock: Clock, transport: FakeTransport, sink: Sink, budget_ns: int = LAG_BUDGET_NS,
              cap: int = 512, cpu: Callable[[], float] = lambda: 0.0) -> Engine:
    return Engine(transport, "/infer", [b"a", b"b"], decode, sample_count=2, max_in_flight=cap, timeout_s=1.0,
                  consumers=[sink], clock=clock, cpu_clock=cpu, lag_budget_ns=budget_ns)


def policy_lateness(plan: Pacing, intended: list[int]) -> list[int]:
    """What the policy says each send's lateness is, on a timer that wakes exactly on time (the engine's
    first wake of a stage is its own: no earlier wake to share)."""
    now, woke = START_NS, 0
    late = []
    for t in intended:
        if t > now:
            now = woke = plan.tick_ns(plan.deadline_ns(woke, t))
        late.append(now - t)
    return late


MS = 1_000_000


@pytest.mark.parametrize(
    ("rate", "arrival", "budget_ns", "modes", "first_lateness_ms"),
    [
        (500, "constant", LAG_BUDGET_NS, [], [0, 0, 0, 0]),                    # a wake per send, on time
        (800, "constant", LAG_BUDGET_NS, [True, False], [0, 1.25, 0, 1.25]),   # gap == budget: two gaps a wake
        (1000, "constant", LAG_BUDGET_NS, [True, False], [0, 1, 0, 1]),        # grid every 2 ms on the arrivals
        (4000, "constant", LAG_BUDGET_NS, [True, False], [0, 1.25, 1, 0.75, 0.5, 0.25, 0]),  # six gaps a wake
        (1000, "constant", 0, [], [0, 0, 0, 0]),                               # budget 0: own wakes
        (1500, "poisson", LAG_BUDGET_NS, [True, False], None),                 # grid of one budget
        (500, "poisson", LAG_BUDGET_NS, [], None),                             # own wakes, some shared
    ],
)
async def test_each_send_goes_when_the_policy_says(rate, arrival, budget_ns, modes, first_lateness_ms):
    clock = FakeClock()
    transport = FakeTransport(clock)
    sink = Sink()
    engine = engine_on(clock, transport, sink, budget_ns)
    stage = make_stage(1, rate, None, 300)
    offsets = list(arrival_offsets_ns(stage, arrival, seed=2))
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, offsets, recorder, even=arrival == "constant")
    assert transport.modes == modes  # polled on a grid only, and back to events for the drain
    results = sorted(sink.results, key=lambda r: r.intended_ns)
    intended = [START_NS + t for t in offsets]
    assert [r.intended_ns for r in results] == intended
    plan = pacing(budget_ns, NS_PER_S / rate, arrival == "constant", intended[0])
    lateness = [r.sent_ns - r.intended_ns for r in results]
    assert lateness == policy_lateness(plan, intended)
    assert min(lateness) >= 0 and max(lateness) <= budget_ns
    if first_lateness_ms is not None:
        assert lateness[:len(first_lateness_ms)] == [round(x * MS) for x in first_lateness_ms]
    if plan.polled:
        assert transport.polls == len(clock.sleeps)  # answers are read at every wake of the grid
    summary = recorder.summary()
    assert summary["scheduled"] == summary["sent"] == summary["completed"] == 300
    assert summary["schedule_lag_ms"]["p99"] == pytest.approx(sorted(lateness)[296] / MS, abs=0.01)
    assert clock.closed == 1


async def test_a_timer_that_cannot_tick_leaves_a_wake_per_send_shared_within_the_budget():
    clock = FakeClock(can_tick=False)
    transport = FakeTransport(clock)
    sink = Sink()
    stage = make_stage(1, 1000, None, 50)
    offsets = list(arrival_offsets_ns(stage))
    await engine_on(clock, transport, sink).run_stage(stage, offsets, StageRecorder(stage), even=True)
    assert transport.modes == []  # no grid, so never polled
    lateness = [r.sent_ns - r.intended_ns for r in sorted(sink.results, key=lambda r: r.intended_ns)]
    assert lateness == policy_lateness(Pacing(LAG_BUDGET_NS), [START_NS + t for t in offsets])
    # 1 ms after a wake is within the budget: shared at 1.25 ms, and so on until one is due at a wake.
    assert lateness[:8] == [round(x * MS) for x in (0, 0, 0.25, 0.5, 0.75, 1.0, 0, 0.25)]


@pytest.mark.parametrize(
    ("received", "service_ns"),
    [
        (lambda sent: sent + 2_000, 2_000),   # between the send and now: the kernel's time is the answer's
        (lambda sent: sent, 0),               # at the send itself: still between
        (lambda sent: sent + 5_000, 5_000),   # at now
        (lambda sent: sent + 6_000, 5_000),   # after now: not this clock's time line, ignored
        (lambda sent: sent - 1, 5_000),       # before the send: ignored
        (lambda sent: 0, 5_000),              # no kernel time
    ],
)
async def test_a_kernel_receive_time_is_used_when_it_lies_between_send_and_now(received, service_ns):
    clock = FakeClock()
    transport = FakeTransport(clock, service_ns=5_000, received=received)
    sink = Sink()
    stage = make_stage(1, 100, None, 3)
    await engine_on(clock, transport, sink).run_stage(stage, arrival_offsets_ns(stage), StageRecorder(stage))
    assert [r.service_ns for r in sink.results] == [service_ns] * 3


async def test_a_clock_at_zero_never_takes_the_no_kernel_time_zero_for_one():
    clock = FakeClock()
    clock.now = 0
    transport = FakeTransport(clock, service_ns=5_000)
    sink = Sink()
    stage = make_stage(1, 100, None, 1)
    await engine_on(clock, transport, sink).run_stage(stage, arrival_offsets_ns(stage), StageRecorder(stage))
    assert [(r.sent_ns, r.done_ns) for r in sink.results] == [(0, 5_000)]


async def test_a_full_cap_on_the_grid_waits_for_a_slot_and_falls_back_to_events():
    clock = FakeClock()
    transport = FakeTransport(clock, service_ns=100_000)
    sink = Sink()
    stage = make_stage(1, 4000, None, 60)
    recorder = StageRecorder(stage)
    await engine_on(clock, transport, sink, cap=1).run_stage(stage, arrival_offsets_ns(stage), recorder, even=True)
    summary = recorder.summary()
    assert transport.modes == [True, False]  # the cap made the target the limit: wake for its answers
    assert summary["scheduled"] == summary["sent"] == summary["completed"] == 60
    assert summary["late"] > 0  # sends that waited for the slot say so
    assert max(r.sent_ns - r.intended_ns for r in sink.results) >= LAG_BUDGET_NS


async def test_the_recorder_is_opened_at_the_start_and_gets_one_account_at_the_end():
    clock = FakeClock()
    transport = FakeTransport(clock, error=TransportError("timeout", "slow"))
    sink = Sink()
    cpu = iter([2.0, 2.75])
    engine = engine_on(clock, transport, sink, cpu=lambda: next(cpu))
    stage = make_stage(1, 100, 10.0)
    recorder = AccountedRecorder(stage)
    seen: list[tuple[int, int]] = []

    def until() -> bool:
        seen.append((recorder.started_ns, recorder.scheduled))  # what /report sees while the stage runs
        return len(seen) > 5

    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder, until=until, start_ns=START_NS + MS)
    assert seen[0] == (START_NS + MS, 0)
    assert recorder.accounts == [StageAccount(started_ns=START_NS + MS, ended_ns=START_NS + MS + 40 * MS,
                                              scheduled=5, unsent=0, late=0, cut_short=True, cpu_s=0.75,
                                              first_sent_ns=START_NS + MS)]
    summary = recorder.summary()
    assert (summary["scheduled"], summary["sent"], summary["errors_by_kind"]) == (5, 5, {TIMEOUT: 5})
    assert all(r.outcome == TIMEOUT and r.predictions is None for r in sink.results)
    assert OK not in summary["errors_by_kind"]
