"""Two runs side by side: every metric, the change, whether it is better, and whether it is real. Pure."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from profiler.judge.catalogue import METRICS, greater_is_better
from profiler.judge.verdict import Significance

HEADLINE = ("accuracy", "f1_macro", "error_rate", "latency_p50_ms", "latency_p99_ms", "max_sustained_rps",
            "memory_peak_bytes", "memory_growth_pct", "cpu_cores", "capacity_per_node_rps", "cost_per_million")
"""The metrics the report compares with the predecessor even without a gate on them."""


@dataclass(frozen=True, slots=True)
class Row:
    """One metric of two runs: the baseline (a), the candidate (b), b - a, and what that means."""

    metric: str
    a: float | None
    b: float | None
    delta: float | None
    delta_pct: float | None
    better: bool | None
    significance: Significance | str | None
    not_comparable: str | None = None
    """Why the two figures cannot be compared (judge.comparability), or None."""

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        sig = self.significance
        return {"metric": self.metric, "predecessor": self.a, "candidate": self.b, "delta": self.delta,
                "delta_pct": self.delta_pct, "better": self.better,
                "significance": sig.as_dict() if isinstance(sig, Significance) else sig,
                "not_comparable": self.not_comparable}


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def metric_order(names: Iterable[str]) -> list[str]:
    """Fixed metrics in their documented order, then the per-class and per-rate ones by name."""
    names = set(names)
    fixed = [m for m in METRICS if m in names]
    return fixed + sorted(names - set(fixed))


def compare(a: dict[str, Any], b: dict[str, Any], significance: Callable[[str], Significance | str | None] | None,
            metrics: Iterable[str] | None = None, incomparable: Mapping[str, str] | None = None) -> list[Row]:
    """Rows for `metrics` (default: every metric either run measured); b is the candidate, a the baseline.
    A metric in `incomparable` (metric -> 'not comparable: ...') keeps its figures but is neither better nor
    worse, and is not tested."""
    incomparable = incomparable or {}
    names = metric_order(metrics if metrics is not None else
                         [m for m in set(a) | set(b) if _number(a.get(m)) is not None or _number(b.get(m)) is not None])
    rows = []
    for name in names:
        va, vb = _number(a.get(name)), _number(b.get(name))
        delta = vb - va if va is not None and vb is not None else None
        pct = delta / abs(va) * 100 if delta is not None and va else None
        better = None
        note = incomparable.get(name)
        if delta is not None and delta != 0 and note is None:
            better = (delta > 0) == greater_is_better(name)
        sig = significance(name) if significance is not None and delta is not None and note is None else None
        rows.append(Row(name, va, vb, delta, pct, better, sig, note))
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _sig_text(sig: Significance | str | None) -> str:
    if sig is None:
        return ""
    if isinstance(sig, str):
        return "untested"
    stat = f"p={sig.p_value:.2g}" if sig.p_value is not None else f"CI {sig.ci_low:+.3g}..{sig.ci_high:+.3g}"
    return f"{'significant' if sig.significant else 'noise'} ({stat})"


def render(rows: list[Row], a_label: str, b_label: str) -> list[str]:
    """A fixed-width table: metric, a, b, delta, delta %, better/worse, significance."""
    header = ["metric", a_label, b_label, "delta", "delta %", "change", "significance"]
    body = []
    for row in rows:
        change = "-" if row.better is None else ("better" if row.better else "WORSE")
        if row.delta == 0:
            change = "same"
        sig_text = _sig_text(row.significance)
        if row.not_comparable is not None and row.delta is not None:
            change, sig_text = "n/c", row.not_comparable
        body.append([row.metric, _fmt(row.a), _fmt(row.b), "-" if row.delta is None else f"{row.delta:+.4g}",
                     "-" if row.delta_pct is None else f"{row.delta_pct:+.1f}%", change, sig_text])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]


def summarise(rows: list[Row]) -> str:
    """One sentence: where the candidate is better and worse, real changes marked, noise said as such."""
    def item(row: Row) -> str:
        pct = f"{row.delta_pct:+.1f}%" if row.delta_pct is not None else f"{row.delta:+.4g}"
        sig = row.significance
        note = ""
        if isinstance(sig, Significance):
            note = ", significant" if sig.significant else ", inside the noise"
        return f"{row.metric} {pct}{note}"

    better = [item(r) for r in rows if r.better is True]
    worse = [item(r) for r in rows if r.better is False]
    apart = [r.metric for r in rows if r.not_comparable is not None and r.delta is not None]
    parts = []
    if better:
        parts.append("better on " + "; ".join(better))
    if worse:
        parts.append("worse on " + "; ".join(worse))
    if not parts:
        parts.append("no measured difference")
    if apart:
        parts.append("not comparable: " + ", ".join(apart))
    return " | ".join(parts)
