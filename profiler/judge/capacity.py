"""Which stages met the latency objective, and the highest rate sustained within it. Pure."""

from __future__ import annotations

import math
from typing import Any

SATURATION_RATIO = 0.95
"""A stage whose achieved rate falls below this share of the offered rate is saturated."""


def percentile_ms(stage: dict[str, Any], percentile: float) -> float | None:
    """The stage's latency at `percentile` if the report holds it (p50, p90, p95, p99, p99.9)."""
    key = "p" + f"{percentile:g}".replace(".", "")
    value = stage["latency_ms"].get(key)
    return None if value is None else float(value)


TOKEN_BOUNDS = ("ttft_ms", "tpot_ms")
"""A generative stage's figures that the objective may bound at its percentile, beside latency."""


def judge_stage(stage: dict[str, Any], percentile: float, latency_ms: float, max_error_rate: float,
                bounds: dict[str, float] | None = None) -> dict[str, Any]:
    """Whether one stage sustained its offered rate (a closed-loop stage: its concurrency) within the objective,
    and why not. `bounds` (ms, keys of TOKEN_BOUNDS) bound a generative stage's TTFT and TPOT at `percentile`."""
    observed = percentile_ms(stage, percentile)
    reasons = []
    if observed is None:
        reasons.append("no successful request")
    elif observed > latency_ms:
        reasons.append(f"p{percentile:g} {observed:.1f} ms > {latency_ms:g} ms")
    key = "p" + f"{percentile:g}".replace(".", "")
    for name, bound in (bounds or {}).items():
        value = (stage.get(name) or {}).get(key)
        if value is None:
            reasons.append(f"no {name.removesuffix('_ms').upper()} measured")
        elif value > bound:
            reasons.append(f"{name.removesuffix('_ms').upper()} {key} {value:.1f} ms > {bound:g} ms")
    error_rate = stage["error_rate"]
    if error_rate is None or error_rate > max_error_rate:
        reasons.append(f"error rate {error_rate} > {max_error_rate:g}")
    achieved = stage["achieved_rps"]
    if achieved is None or achieved < SATURATION_RATIO * stage["offered_rps"]:
        reasons.append(f"achieved {achieved or 0:.1f} rps < {SATURATION_RATIO:.0%} of offered")
    return {"sustained": not reasons, "reasons": reasons}


def max_sustained_rps(stages: list[dict[str, Any]]) -> float | None:
    """The highest offered rate among measured stages that were sustained (None if none were)."""
    rates = [s["offered_rps"] for s in stages if not s["warmup"] and s.get("objective", {}).get("sustained")]
    return max(rates) if rates else None


Window = tuple[float, float | None, int]
"""One measurement window: (completed per second, latency at the objective's percentile in ms, errors)."""


def windows_stable(windows: list[Window], count: int = 3, tolerance: float = 0.10,
                   latency_limit_ms: float | None = None) -> bool:
    """perf_analyzer's rule: the last `count` windows' throughput and latency each within `tolerance` of their mean.

    Latency that stays under half the objective in all of them counts as stable: it cannot flip
    the verdict, and at low rates a window's p99 is the max of a handful of samples.
    """
    if count < 1 or not 0 < tolerance < 1 or len(windows) < count:
        return False
    last = windows[-count:]
    rates = [w[0] for w in last]
    if not _within(rates, tolerance):
        return False
    latencies = [w[1] for w in last]
    if any(v is None for v in latencies):
        return False
    values = [float(v) for v in latencies if v is not None]
    if latency_limit_ms is not None and max(values) <= latency_limit_ms / 2:
        return True
    return _within(values, tolerance)


def _within(values: list[float], tolerance: float) -> bool:
    mean = sum(values) / len(values)
    if not math.isfinite(mean) or mean <= 0:
        return False
    return all(abs(v - mean) <= tolerance * mean for v in values)


def windows_broken(windows: list[Window], count: int, latency_limit_ms: float) -> bool:
    """The last `count` windows all missed the objective (no answer, or latency over it): the verdict is settled."""
    if len(windows) < count or count < 1:
        return False
    return all(w[1] is None or w[1] > latency_limit_ms for w in windows[-count:])


def judge_window_stage(stage: dict[str, Any], percentile: float, latency_ms: float, max_error_rate: float,
                       count: int = 3, tolerance: float = 0.10) -> dict[str, Any]:
    """A capacity-search stage: judge_stage's rules on the stage, plus it must be stable to count as sustained.

    The throughput test uses the mean of the last `count` windows (the stage's steady state).
    """
    verdict = judge_stage(stage, percentile, latency_ms, max_error_rate)
    windows: list[Window] = [(w["rps"], w["latency_ms"], w["errors"]) for w in stage.get("windows", [])]
    stable = windows_stable(windows, count, tolerance, latency_ms)
    reasons = [r for r in verdict["reasons"] if not r.startswith("achieved")]
    if len(windows) >= count:
        steady = sum(w[0] for w in windows[-count:]) / count
        if steady < SATURATION_RATIO * stage["offered_rps"]:
            reasons.append(f"steady {steady:.1f} rps < {SATURATION_RATIO:.0%} of offered")
    else:
        reasons.append(f"only {len(windows)} measurement windows")
    if not stable:
        reasons.append(f"not stable: the last {count} windows differ by more than {tolerance:.0%}")
    return {"sustained": not reasons, "stable": stable, "reasons": reasons}


def next_search_rate(history: list[tuple[float, bool]], start_rps: float, factor: float, max_rps: float,
                     precision: float) -> float | None:
    """The next rate to try, or None when the search is done.

    `history` is (offered rate, sustained) per stage so far. Rise by `factor` from `start_rps`
    while every stage holds; once one breaks, bisect between the highest good rate and the lowest
    bad rate above it until they are within `precision` (a share of the good rate).
    """
    if not (start_rps > 0 and factor > 1 and max_rps >= start_rps and 0 < precision < 1):
        raise ValueError("search needs start > 0, factor > 1, max >= start and 0 < precision < 1")
    if not history:
        return start_rps
    good = [r for r, ok in history if ok]
    best = max(good) if good else None
    bad = [r for r, ok in history if not ok and (best is None or r > best)]
    if not bad:
        assert best is not None
        if best >= max_rps:
            return None
        return min(best * factor, max_rps)
    worst = min(bad)
    if best is None:
        return None  # the start rate already breaks the objective
    if worst - best <= precision * best:
        return None
    return (best + worst) / 2


def capacity_summary(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest sustained rate, the lowest unsustained rate above it, and whether the figure is only a lower bound.

    It is a lower bound when no stage above it broke the objective (the schedule stopped first), or
    when the stage that broke it was limited by the generator, not the model.
    """
    measured = [s for s in stages if not s["warmup"] and "objective" in s]
    if any(s.get("mode") == "closed-loop" for s in measured):
        return closed_loop_capacity(measured)
    good = [s["offered_rps"] for s in measured if s["objective"]["sustained"]]
    best = max(good) if good else None
    above = [s for s in measured if not s["objective"]["sustained"] and (best is None or s["offered_rps"] > best)]
    first_bad = min(above, key=lambda s: s["offered_rps"]) if above else None
    limited_by = _limited_by(first_bad) if measured else None
    return {
        "max_sustained_rps": best if best is not None else (0.0 if measured else None),
        "first_unsustained_rps": first_bad["offered_rps"] if first_bad is not None else None,
        "lower_bound": limited_by in ("schedule", "generator"),
        "limited_by": limited_by,
        "stages_sustained": len(good),
        "stages_measured": len(measured),
    }


def closed_loop_capacity(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """A concurrency sweep's capacity: the highest concurrency whose stage met the objective, the throughput it
    achieved (as max_sustained_rps), and the lowest concurrency above it that did not."""
    good = [s for s in measured if s["objective"]["sustained"]]
    best = max(good, key=lambda s: s["concurrency"]) if good else None
    best_level = best["concurrency"] if best is not None else None
    above = [s for s in measured if not s["objective"]["sustained"]
             and (best_level is None or s["concurrency"] > best_level)]
    first_bad = min(above, key=lambda s: s["concurrency"]) if above else None
    limited_by = _limited_by(first_bad)
    return {
        "max_sustained_rps": (best["achieved_rps"] or 0.0) if best is not None else 0.0,
        "max_sustained_concurrency": best_level,
        "first_unsustained_concurrency": first_bad["concurrency"] if first_bad is not None else None,
        "first_unsustained_rps": None,
        "lower_bound": limited_by in ("schedule", "generator"),
        "limited_by": limited_by,
        "stages_sustained": len(good),
        "stages_measured": len(measured),
    }


def _limited_by(first_bad: dict[str, Any] | None) -> str:
    """What ended the sustained range: the schedule (nothing broke), the generator, or the model."""
    if first_bad is None:
        return "schedule"
    if (first_bad.get("generator") or {}).get("limited"):
        return "generator"
    return "model"
