"""The dispatcher's wake policy is pure: tables of budgets, gaps and times, edge cases included."""

from __future__ import annotations

import itertools
import math

import pytest

from profiler.core.units import NS_PER_S
from profiler.schedule import (
    LAG_BUDGET_NS,
    Pacing,
    arrival_gap_ns,
    arrival_offsets_ns,
    constant_gap_ns,
    make_stage,
    pacing,
)

B = LAG_BUDGET_NS  # 1.25 ms


@pytest.mark.parametrize(
    ("budget_ns", "gap_ns", "even", "period_ns"),
    [
        (B, 2_000_000, True, 0),                # 500 rps: a wake per send
        (B, NS_PER_S / 700, True, 0),           # 700 rps: still above the budget
        (B, B + 1, True, 0),                    # just above the budget: own wakes
        (B, B, True, 2 * B),                    # gap == budget (800 rps): a grid of two gaps
        (B, B - 1, True, 2 * (B - 1)),          # just below: two gaps, just under 2.5 ms
        (B, 1_000_000, True, 2_000_000),        # 1,000 rps: every other arrival, half go 1 ms late
        (B, NS_PER_S / 3000, True, 1_333_333),  # 3,000 rps: four gaps, rounded to whole ns
        (B, 250_000, True, 1_500_000),          # 4,000 rps: six gaps
        (B, 100_000, True, 1_300_000),          # 10,000 rps: thirteen gaps
        (B, 1_000, True, 1_251_000),            # 1,000,000 rps: the grid stays just above the budget
        (B, 1, True, B + 1),                    # an absurd rate still gives a finite grid
        (B, 2_000_000, False, 0),               # Poisson at 500 rps: own wakes
        (B, B, False, B),                       # Poisson: the budget is the period
        (B, 1_000_000, False, B),
        (B, 1, False, B),
        (0, 1_000, True, 0),                    # budget 0: every send its own wake, whatever the rate
        (0, 1, False, 0),
        (B, math.inf, True, 0),                 # no arrivals to speak of
        (5_000_000, 3_000_000, True, 6_000_000),
    ],
)
def test_the_grid_sits_above_one_over_the_budget(budget_ns, gap_ns, even, period_ns):
    plan = pacing(budget_ns, gap_ns, even, first_ns=77)
    assert plan.period_ns == period_ns
    assert plan.polled is (period_ns > 0)  # answers are read at the grid's wakes, and only on a grid
    assert plan.budget_ns == budget_ns
    if period_ns:
        assert plan.origin_ns == 77
        assert plan.own_wakes() == Pacing(budget_ns)


@pytest.mark.parametrize(
    ("budget_ns", "gap_ns", "message"),
    [(-1, 1_000, "lag budget"), (B, 0, "gap"), (B, -5, "gap"), (B, math.nan, "gap"), (B, -math.inf, "gap")],
)
def test_pacing_rejects_nonsense(budget_ns, gap_ns, message):
    with pytest.raises(ValueError, match=message):
        pacing(budget_ns, gap_ns, True, 0)


@pytest.mark.parametrize(
    ("plan", "woke_ns", "intended_ns", "deadline_ns"),
    [
        # Own wakes: on time, unless due within the budget of the last wake (then share it at woke + budget).
        (Pacing(B), 0, 5_000_000, 5_000_000),                 # the first wake of a stage
        (Pacing(B), 10_000_000, 10_500_000, 11_250_000),      # within the budget: 0.75 ms late, shared
        (Pacing(B), 10_000_000, 11_249_999, 11_250_000),      # just within
        (Pacing(B), 10_000_000, 11_250_000, 11_250_000),      # at the edge: on time either way
        (Pacing(B), 10_000_000, 11_250_001, 11_250_001),      # just beyond: its own wake, on time
        (Pacing(0), 10_000_000, 10_000_001, 10_000_001),      # budget 0: never shared
        (Pacing(B), -5, 0, B - 5),                            # times are only compared, never checked
        # A grid: the intended time itself (the grid's tick rounds it up); the last wake does not matter.
        (Pacing(B, 7, 2_000_000), 0, 8, 8),
        (Pacing(B, 7, 2_000_000), 2_000_007, 2_000_008, 2_000_008),
    ],
)
def test_what_to_sleep_until(plan, woke_ns, intended_ns, deadline_ns):
    assert plan.deadline_ns(woke_ns, intended_ns) == deadline_ns


@pytest.mark.parametrize(
    ("plan", "deadline_ns", "tick_ns"),
    [
        (Pacing(B), 123, 123),                                # no grid: the deadline itself
        (Pacing(B, 7, 2_000_000), 7, 7),                      # on a tick
        (Pacing(B, 7, 2_000_000), -100, 7),                   # before the grid starts: its first tick
        (Pacing(B, 7, 2_000_000), 8, 2_000_007),              # just after a tick: the next one
        (Pacing(B, 7, 2_000_000), 2_000_007, 2_000_007),
        (Pacing(B, 7, 2_000_000), 2_000_008, 4_000_007),
        (Pacing(B, 10**15, 1_250_001), 10**15 + 3 * 1_250_001 - 1, 10**15 + 3 * 1_250_001),  # large times
    ],
)
def test_a_grid_ends_a_sleep_at_its_first_tick_at_or_after_the_deadline(plan, deadline_ns, tick_ns):
    assert plan.tick_ns(deadline_ns) == tick_ns


def lateness_ns(plan: Pacing, intended: list[int]) -> list[int]:
    """How late each arrival goes when the dispatcher follows `plan` on a timer that wakes exactly on time
    and takes no time itself."""
    now = woke = 0
    late = []
    for t in intended:
        if t > now:
            now = woke = plan.tick_ns(plan.deadline_ns(woke, t))
        late.append(now - t)
    return late


def bound_cases() -> list[tuple[float, str, int]]:
    """(rate, arrival, budget) for the bound; 801 and 3,000 rps have gaps that are not whole ns in seconds."""
    return [(rate, arrival, budget_ns)
            for rate, arrival in [(10, "constant"), (500, "constant"), (800, "constant"), (801, "constant"),
                                  (1000, "constant"), (3000, "constant"), (4000, "constant"), (10_000, "constant"),
                                  (50_000, "constant"), (1_000_000, "constant"), (10, "poisson"), (500, "poisson"),
                                  (800, "poisson"), (1500, "poisson"), (3000, "poisson"), (50_000, "poisson")]
            for budget_ns in (0, 500_000, B, 5_000_000)]


@pytest.mark.parametrize(("rate", "arrival", "budget_ns"), bound_cases())
def test_no_send_is_early_or_later_than_the_budget(rate, arrival, budget_ns):
    stage = make_stage(1, rate, None, 400)
    start_ns = 1_000_000_000
    intended = [start_ns + t for t in arrival_offsets_ns(stage, arrival, seed=5)]
    plan = pacing(budget_ns, arrival_gap_ns(rate, arrival), arrival == "constant", intended[0])
    late = lateness_ns(plan, intended)
    assert min(late) >= 0
    assert max(late) <= budget_ns
    if plan.period_ns and arrival == "constant":  # the grid is laid on the arrivals: some go on time
        assert late[0] == 0 and late.count(0) >= len(late) // (plan.period_ns * rate // NS_PER_S + 1)


@pytest.mark.parametrize("rate", [7, 801, 3000, 7001, 33_333, 999_999, 1_000_000])
def test_constant_arrivals_sit_on_whole_nanoseconds_so_a_grid_never_drifts_off_them(rate):
    """Every gap is the same whole number of ns: k gaps are exactly one grid period, for the whole stage."""
    gap = constant_gap_ns(rate)
    offsets = list(arrival_offsets_ns(make_stage(1, rate, None, 5000)))
    assert {b - a for a, b in itertools.pairwise(offsets)} == {gap}
    assert offsets[-1] == 4999 * gap                     # no drift accumulates, however long the stage
    assert 0 <= NS_PER_S / gap - rate <= rate * 1e-3     # the rate offered is at most 0.1% above the plan
    plan = pacing(B, arrival_gap_ns(rate), True, 0)
    if plan.period_ns:
        assert plan.period_ns % gap == 0                 # the grid's period is whole gaps


@pytest.mark.parametrize(("rate", "parts"), [(3000, 2), (3000, 3), (801, 4)])
def test_a_parts_gap_is_whole_gaps_of_the_stage(rate, parts):
    gap = constant_gap_ns(rate)
    for part in range(parts):
        offsets = list(arrival_offsets_ns(make_stage(1, rate, None, 600), part=part, parts=parts))
        assert {b - a for a, b in itertools.pairwise(offsets)} == {arrival_gap_ns(rate, parts=parts)}
        assert offsets[0] == part * gap
