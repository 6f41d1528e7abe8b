"""When to send what: stages of rates and the arrival timetable inside each. Pure: no clock, no sleep."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Stage:
    """One rate held for a duration. Warm-up stages are sent but left out of the figures."""

    index: int
    rate_rps: float
    duration_s: float
    warmup: bool = False

    @property
    def name(self) -> str:
        """'warmup' or 'stage-N' (1-based), as it appears in reports and metric labels."""
        return "warmup" if self.warmup else f"stage-{self.index}"

    @property
    def expected_requests(self) -> int:
        """How many requests the timetable holds: rate x duration, rounded up."""
        return math.ceil(self.rate_rps * self.duration_s - 1e-9)


def plan_stages(rates_durations: list[tuple[float, float]], warmup_s: float = 0.0) -> list[Stage]:
    """Stages in order; a warm-up at the first rate goes first when warmup_s > 0."""
    if not rates_durations:
        raise ValueError("at least one stage is needed")
    for rate, duration in rates_durations:
        if not (rate > 0 and math.isfinite(rate)) or not (duration > 0 and math.isfinite(duration)):
            raise ValueError(f"rate and duration must be positive and finite, got {rate} rps for {duration} s")
    stages = [Stage(index=i + 1, rate_rps=r, duration_s=d) for i, (r, d) in enumerate(rates_durations)]
    if warmup_s > 0:
        stages.insert(0, Stage(index=0, rate_rps=rates_durations[0][0], duration_s=warmup_s, warmup=True))
    return stages


def arrival_offsets_ns(stage: Stage, arrival: str = "constant", seed: int = 0) -> Iterator[int]:
    """Intended send times as offsets from the stage's start, in ns, all below its duration.

    constant: evenly spaced, the first at 0. poisson: exponential gaps with mean 1/rate,
    drawn from a generator seeded by (seed, stage index) so every run replays the same timetable.
    """
    duration_ns = int(stage.duration_s * NS_PER_S)
    if arrival == "constant":
        interval_ns = NS_PER_S / stage.rate_rps
        for i in range(stage.expected_requests):
            offset = int(i * interval_ns)
            if offset >= duration_ns:
                return
            yield offset
    elif arrival == "poisson":
        rng = random.Random(f"{seed}:{stage.index}")
        t = 0.0
        while True:
            t += rng.expovariate(stage.rate_rps) * NS_PER_S
            if t >= duration_ns:
                return
            yield int(t)
    else:
        raise ValueError(f"unknown arrival process {arrival!r}")
