"""Which stages met the latency objective, and the highest rate sustained within it. Pure."""

from __future__ import annotations

from typing import Any

SATURATION_RATIO = 0.95
"""A stage whose achieved rate falls below this share of the offered rate is saturated."""


def percentile_ms(stage: dict[str, Any], percentile: float) -> float | None:
    """The stage's latency at `percentile` if the report holds it (p50, p90, p95, p99, p99.9)."""
    key = "p" + f"{percentile:g}".replace(".", "")
    value = stage["latency_ms"].get(key)
    return None if value is None else float(value)


def judge_stage(stage: dict[str, Any], percentile: float, latency_ms: float, max_error_rate: float) -> dict[str, Any]:
    """Whether one stage sustained its offered rate within the objective, and why not."""
    observed = percentile_ms(stage, percentile)
    reasons = []
    if observed is None:
        reasons.append("no successful request")
    elif observed > latency_ms:
        reasons.append(f"p{percentile:g} {observed:.1f} ms > {latency_ms:g} ms")
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
