"""When to send what: stages of rates and the arrival timetable inside each. Pure: no clock, no sleep.

A stage holds one rate for a duration or for a number of requests. Stages come from a list of
rates or from a ramp (start, times a factor or plus a step, up to a maximum). Inside a stage,
arrivals are evenly spaced (`constant`) or exponential gaps (`poisson`, seeded per stage).
`pace(stage, elapsed_ns, sent)` answers "how long until the next request, or stop?" for the
constant process, and `arrival_offsets_ns` yields the whole timetable for either process.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from profiler.core.units import NS_PER_S

MAX_RATE_RPS = 1_000_000.0
"""Above this a rate is taken for a typo, not a plan."""
MAX_STAGES = 1000
"""A ramp that would need more stages than this is a mistake (factor too close to 1, step too small)."""
ARRIVALS = ("constant", "poisson")


@dataclass(frozen=True, slots=True)
class Stage:
    """One rate held for a duration, or for `requests` requests. Warm-up stages are left out of the figures."""

    index: int
    rate_rps: float
    duration_s: float
    warmup: bool = False
    requests: int | None = None

    @property
    def name(self) -> str:
        """'warmup' or 'stage-N' (1-based), as it appears in reports and metric labels."""
        return "warmup" if self.warmup else f"stage-{self.index}"

    @property
    def expected_requests(self) -> int:
        """How many requests the timetable holds: the count if given, else rate x duration rounded up."""
        if self.requests is not None:
            return self.requests
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


def constant_offset_ns(rate_rps: float, i: int) -> int:
    """The i-th (0-based) evenly spaced send time, in ns from the stage's start."""
    return int(i * NS_PER_S / rate_rps)


def pace(stage: Stage, elapsed_ns: int, sent: int) -> tuple[int, bool]:
    """Constant arrivals: (ns to wait before request number `sent`, stop). 0 wait means send now (or late)."""
    if sent >= stage.expected_requests:
        return 0, True
    due_ns = constant_offset_ns(stage.rate_rps, sent)
    if stage.requests is None and due_ns >= int(stage.duration_s * NS_PER_S):
        return 0, True
    return max(due_ns - elapsed_ns, 0), False


def arrival_offsets_ns(stage: Stage, arrival: str = "constant", seed: int = 0, *, part: int = 0,
                       parts: int = 1) -> Iterator[int]:
    """Intended send times as offsets from the stage's start, in ns.

    constant: evenly spaced, the first at 0. poisson: exponential gaps with mean 1/rate, drawn from
    a generator seeded by (seed, stage index) so every run replays the same timetable. A stage held
    for a duration ends before it; one held for a count yields exactly that many. `part`/`parts`
    deal the timetable out to worker processes: part k gets arrivals k, k+parts, k+2*parts...,
    so the parts together are exactly the whole.
    """
    if not 0 <= part < parts:
        raise ValueError(f"part {part} out of {parts}")
    if arrival == "constant":
        # pace(stage, 0, i) for i = part, part + parts, ... until it says stop, with its checks hoisted.
        rate = stage.rate_rps
        end_ns = None if stage.requests is not None else int(stage.duration_s * NS_PER_S)
        for sent in range(part, stage.expected_requests, parts):
            due_ns = int(sent * NS_PER_S / rate)
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
