"""When to send what, and when to wake to send it. Pure: no clock, no sleep.

A stage holds one rate for a duration or for a number of requests. Stages come from a list of
rates or from a ramp (start, times a factor or plus a step, up to a maximum). Inside a stage,
arrivals are evenly spaced (`constant`) or exponential gaps (`poisson`, seeded per stage);
`arrival_offsets_ns` yields the timetable. `pacing` and `Pacing.wake_ns` are the dispatcher's
policy for when to wake for those arrivals (see LAG_BUDGET_NS).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from profiler.core.units import NS_PER_S

MAX_RATE_RPS = 1_000_000.0
"""Above this a rate is taken for a typo, not a plan."""
MAX_STAGES = 1000
"""A ramp that would need more stages than this is a mistake (factor too close to 1, step too small)."""
ARRIVALS = ("constant", "poisson")
LAG_BUDGET_NS = 1_250_000
"""How late the dispatcher may send a request so that it shares a wake with others (1.25 ms).

A wake costs tens of microseconds of CPU (more in a VM), more than the send itself. Below
1 / budget (800 rps) every request gets its own wake, on time. Above it the dispatcher wakes on a
fixed grid and sends whatever is due: for evenly spaced arrivals the grid is laid on them, with a
period of whole gaps (at 1,000 rps, every 2 ms: half the requests go on time, half 1 ms late);
for Poisson arrivals its period is the budget. Either way no send is later than the budget plus
the OS's own wake-up delay, the lag histogram shows what it was, and latency is still measured
from the intended time. (1.25 ms rather than 1.5: on this project's VM it cut lag p99 at 4,000 rps
from 1.60 to 1.37 ms and CPU was no higher, 23.0% vs 23.5% of a core, medians of 3 interleaved runs;
at 10,000 rps 41% vs 50%.) `pacing` is the rule; the engine only follows it."""


@dataclass(frozen=True, slots=True)
class Stage:
    """One rate held for a duration, or for `requests` requests. Warm-up stages are left out of the figures.

    A closed-loop stage (`concurrency` > 0) has no rate: it keeps `concurrency` requests in flight for
    `duration_s`, each sent as the one before it ends (`rate_rps` is 0 and the achieved rate is the figure).
    """

    index: int
    rate_rps: float
    duration_s: float
    warmup: bool = False
    requests: int | None = None
    concurrency: int = 0

    @property
    def closed_loop(self) -> bool:
        """Whether the stage keeps a number of requests in flight rather than sending at a rate."""
        return self.concurrency > 0

    @property
    def name(self) -> str:
        """'warmup' or 'stage-N' (1-based), as it appears in reports and metric labels."""
        return "warmup" if self.warmup else f"stage-{self.index}"

    @property
    def expected_requests(self) -> int:
        """How many requests the timetable holds: the count if given, else rate x duration rounded up."""
        if self.requests is not None:
            return self.requests
        if self.concurrency:
            return 0  # a closed loop sends as fast as the model answers: not known beforehand
        return math.ceil(self.rate_rps * self.duration_s - 1e-9)


def check_rate(rate_rps: float) -> None:
    """Raise ValueError unless 0 < rate <= MAX_RATE_RPS and finite."""
    if not (isinstance(rate_rps, int | float) and math.isfinite(rate_rps) and 0 < rate_rps <= MAX_RATE_RPS):
        raise ValueError(f"a rate must be above 0 and at most {MAX_RATE_RPS:g} rps, got {rate_rps}")


def make_stage(index: int, rate_rps: float, duration_s: float | None = None, requests: int | None = None,
               warmup: bool = False) -> Stage:
    """A validated stage held for `duration_s` or for `requests` (exactly one of them)."""
    check_rate(rate_rps)
    if (duration_s is None) == (requests is None):
        raise ValueError("a stage is held for a duration or for a request count, exactly one of them")
    if requests is not None:
        if requests < 1:
            raise ValueError(f"a stage's request count must be at least 1, got {requests}")
        return Stage(index, float(rate_rps), requests / rate_rps, warmup, requests)
    assert duration_s is not None
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"a stage's duration must be above 0 s, got {duration_s}")
    return Stage(index, float(rate_rps), float(duration_s), warmup)


def ramp_rates(start_rps: float, max_rps: float, factor: float | None = None,
               step_rps: float | None = None) -> list[float]:
    """Rates from start up to max (inclusive when hit), each the last times `factor` or plus `step_rps`."""
    check_rate(start_rps)
    check_rate(max_rps)
    if max_rps < start_rps:
        raise ValueError(f"a ramp's max ({max_rps:g} rps) is below its start ({start_rps:g} rps)")
    if (factor is None) == (step_rps is None):
        raise ValueError("a ramp rises by a factor or by a step, exactly one of them")
    if factor is not None and not (math.isfinite(factor) and factor > 1):
        raise ValueError(f"a ramp's factor must be above 1, got {factor}")
    if step_rps is not None and not (math.isfinite(step_rps) and step_rps > 0):
        raise ValueError(f"a ramp's step must be above 0 rps, got {step_rps}")
    rates = [float(start_rps)]
    while True:
        nxt = rates[-1] * factor if factor is not None else rates[-1] + (step_rps or 0.0)
        if nxt > max_rps * (1 + 1e-9):
            return rates
        rates.append(nxt)
        if len(rates) > MAX_STAGES:
            raise ValueError(f"the ramp from {start_rps:g} to {max_rps:g} rps needs more than {MAX_STAGES} stages")


def plan(rates_durations: list[tuple[float, float | None, int | None]], warmup_s: float = 0.0) -> list[Stage]:
    """Stages from (rate, duration_s or None, requests or None); a warm-up at the first rate when warmup_s > 0."""
    if not rates_durations:
        raise ValueError("at least one stage is needed")
    if len(rates_durations) > MAX_STAGES:
        raise ValueError(f"at most {MAX_STAGES} stages, got {len(rates_durations)}")
    if not (math.isfinite(warmup_s) and warmup_s >= 0):
        raise ValueError(f"warm-up must be 0 s or more, got {warmup_s}")
    stages = [make_stage(i + 1, r, d, n) for i, (r, d, n) in enumerate(rates_durations)]
    if warmup_s > 0:
        stages.insert(0, make_stage(0, rates_durations[0][0], warmup_s, warmup=True))
    return stages


MAX_CONCURRENCY = 100_000
"""A closed loop with more requests in flight than this is taken for a typo."""


def plan_closed(levels: list[int], duration_s: float, warmup_s: float = 0.0) -> list[Stage]:
    """Closed-loop stages: each concurrency level held for `duration_s`; a warm-up at the first level first."""
    if not levels:
        raise ValueError("at least one concurrency level is needed")
    if len(levels) > MAX_STAGES:
        raise ValueError(f"at most {MAX_STAGES} concurrency levels, got {len(levels)}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"a stage's duration must be above 0 s, got {duration_s}")
    for level in levels:
        if not 1 <= level <= MAX_CONCURRENCY:
            raise ValueError(f"a concurrency level must be 1 to {MAX_CONCURRENCY}, got {level}")
    stages = [Stage(i + 1, 0.0, float(duration_s), concurrency=level) for i, level in enumerate(levels)]
    if warmup_s > 0:
        stages.insert(0, Stage(0, 0.0, float(warmup_s), warmup=True, concurrency=levels[0]))
    return stages


def concurrency_levels(start: int, maximum: int, factor: float | None = None, step: int | None = None) -> list[int]:
    """A concurrency ramp: start, times `factor` (rounded up, always rising) or plus `step`, up to `maximum`."""
    if not 1 <= start <= maximum <= MAX_CONCURRENCY:
        raise ValueError(f"a concurrency ramp needs 1 <= start <= max <= {MAX_CONCURRENCY}, got {start} and {maximum}")
    if (factor is None) == (step is None):
        raise ValueError("a concurrency ramp rises by a factor or by a step, exactly one of them")
    levels = [start]
    while True:
        last = levels[-1]
        nxt = max(last + 1, math.ceil(last * factor)) if factor is not None else last + (step or 1)
        if nxt > maximum:
            return levels
        levels.append(nxt)


def constant_gap_ns(rate_rps: float) -> int:
    """The gap between evenly spaced arrivals, in whole nanoseconds (rounded down, at least 1).

    Whole nanoseconds keep the timetable exactly periodic, so a wake grid laid on it (`pacing`) stays on
    its arrivals for the whole stage; a fractional gap made the grid drift off them (0.33 ns a period at
    3,000 rps) until an arrival missed its tick and waited a whole period. The rate this offers is at most
    one part in a thousand above the one asked for (at 1,000,000 rps), one in 3 million at 3,000 rps.
    """
    check_rate(rate_rps)
    return max(1, int(NS_PER_S // rate_rps))


def arrival_gap_ns(rate_rps: float, arrival: str = "constant", parts: int = 1) -> float:
    """The gap between one part's arrivals when the timetable is dealt out to `parts` (ns): exactly `parts`
    whole-ns gaps for the constant process, the mean gap for Poisson."""
    if arrival == "constant":
        return float(parts * constant_gap_ns(rate_rps))
    return parts * NS_PER_S / rate_rps


def arrival_offsets_ns(stage: Stage, arrival: str = "constant", seed: int = 0, *, part: int = 0,
                       parts: int = 1) -> Iterator[int]:
    """Intended send times as offsets from the stage's start, in ns.

    constant: evenly spaced on whole nanoseconds (`constant_gap_ns`), the first at 0. poisson:
    exponential gaps with mean 1/rate, drawn from a generator seeded by (seed, stage index) so every
    run replays the same timetable. A stage held for a duration ends before it; one held for a count
    yields exactly that many. `part`/`parts` deal the timetable out to worker processes: part k gets
    arrivals k, k+parts, k+2*parts..., so the parts together are exactly the whole.
    """
    if not 0 <= part < parts:
        raise ValueError(f"part {part} out of {parts}")
    if arrival == "constant":
        gap_ns = constant_gap_ns(stage.rate_rps)
        end_ns = None if stage.requests is not None else int(stage.duration_s * NS_PER_S)
        for sent in range(part, stage.expected_requests, parts):
            due_ns = sent * gap_ns
            if end_ns is not None and due_ns >= end_ns:
                return
            yield due_ns
    elif arrival == "poisson":
        rng = random.Random(f"{seed}:{stage.index}")
        duration_ns = stage.duration_s * NS_PER_S
        t = 0.0
        i = 0
        while True:
            t += rng.expovariate(stage.rate_rps) * NS_PER_S
            if stage.requests is None and t >= duration_ns:
                return
            if stage.requests is not None and i >= stage.requests:
                return
            if i % parts == part:
                yield int(t)
            i += 1
    else:
        raise ValueError(f"unknown arrival process {arrival!r}; known: {', '.join(ARRIVALS)}")


@dataclass(frozen=True, slots=True)
class Pacing:
    """When the dispatcher wakes through one stage (see LAG_BUDGET_NS); built by `pacing`.

    Without a grid (`period_ns` 0) each send wakes on its own, unless it is due within `budget_ns`
    of the last wake: then it shares the wake at that instant instead. With a grid the timer fires
    at `origin_ns` + k x `period_ns` only, and answers are read at those wakes (polled mode).
    """

    budget_ns: int
    origin_ns: int = 0
    period_ns: int = 0

    @property
    def polled(self) -> bool:
        """Whether the transport should read answers only at the dispatcher's wakes: on a grid, yes."""
        return self.period_ns > 0

    def own_wakes(self) -> Pacing:
        """The same budget without a grid (for a timer that cannot tick)."""
        return Pacing(self.budget_ns)

    def deadline_ns(self, woke_ns: int, intended_ns: int) -> int:
        """What to sleep until for a send intended at `intended_ns` (ns, the dispatcher's clock), the
        last wake having been at `woke_ns`.

        On a grid, the intended time itself: the grid's first tick at or after it ends the sleep (a
        tick that wakes the process a little late still serves a send due in between). Without one,
        the intended time, or the last wake plus the budget when that is later (a shared wake).
        """
        if self.period_ns > 0:
            return intended_ns
        shared = woke_ns + self.budget_ns
        return intended_ns if intended_ns > shared else shared

    def tick_ns(self, deadline_ns: int) -> int:
        """When a sleep until `deadline_ns` ends on a timer that wakes exactly on time: on a grid its
        first tick at or after the deadline, else the deadline."""
        period = self.period_ns
        if period <= 0:
            return deadline_ns
        behind = self.origin_ns - deadline_ns
        return self.origin_ns if behind >= 0 else self.origin_ns - (behind // period) * period


def pacing(budget_ns: int, gap_ns: float, even: bool, first_ns: int) -> Pacing:
    """The wake policy for a stage whose arrivals are `gap_ns` apart on average (ns; evenly so when `even`),
    the first at `first_ns`, allowed `budget_ns` of lateness to share a wake.

    A grid only when arrivals come at least once per budget (gap <= budget): for even arrivals it is
    laid on them with a period of the fewest whole gaps longer than the budget (so no send waits more
    than the budget), for Poisson arrivals its period is the budget. A budget of 0 means a wake per send.
    """
    if budget_ns < 0:
        raise ValueError(f"a lag budget must be 0 ns or more, got {budget_ns}")
    if not gap_ns > 0:
        raise ValueError(f"a mean gap between arrivals must be above 0 ns, got {gap_ns}")
    if gap_ns > budget_ns:
        return Pacing(budget_ns)
    period = gap_ns * (budget_ns // gap_ns + 1) if even else budget_ns
    return Pacing(budget_ns, first_ns, round(period))


PART_STAGE_GAP_S = 1.0
"""With the load split into parts (pods of an Indexed Job), each stage starts at a planned wall-clock instant:
the previous stage's planned start, plus its planned length, plus this gap for its last answers to arrive."""


def planned_length_s(stage: Stage) -> float:
    """How long the stage's timetable lasts (s): its duration, or its count at its rate."""
    if stage.requests is not None:
        return stage.requests / stage.rate_rps
    return stage.duration_s


def stage_starts_s(stages: Sequence[Stage], first_s: float, gap_s: float = PART_STAGE_GAP_S) -> list[float]:
    """The instant (the same clock as `first_s`, s) each stage starts at when parts run side by side: every part
    computes the same list from the profile and the shared start, so they agree without talking to each other."""
    starts: list[float] = []
    at = first_s
    for stage in stages:
        starts.append(at)
        at += planned_length_s(stage) + gap_s
    return starts


def part_of(part: int, parts: int, worker: int, workers: int) -> tuple[int, int]:
    """Which share of the timetable (index, count) worker `worker` of `workers` inside part `part` of `parts`
    sends: part k takes arrivals k, k+parts, ...; its workers deal those out again, so worker w takes
    k + parts*w, k + parts*(w + workers), ... and all of them together are exactly the whole timetable."""
    if not (0 <= part < parts and 0 <= worker < workers):
        raise ValueError(f"part {part} of {parts}, worker {worker} of {workers}")
    return part + parts * worker, parts * workers
