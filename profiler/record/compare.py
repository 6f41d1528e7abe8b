"""Two stored runs side by side, for `profiler compare A B`: read both from the history (SQLite or MLflow),
set their contexts side by side, and test every metric's difference. The text is
profiler.record.render.comparison_text; `comparison_json` is the same as data."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from profiler.core.errors import ConfigError
from profiler.judge.comparability import capacity_problem, context_differences, context_rows, incomparable_metrics
from profiler.judge.comparison import Row, compare, summarise
from profiler.judge.significance import PairedTests
from profiler.judge.verdict import Significance
from profiler.record.backend import RunHistory

ALPHA = 0.05
"""Significance level of the paired tests (95%)."""


@dataclass(frozen=True, slots=True)
class RunComparison:
    """Run A (the reference), run B (the candidate) as the history lists them, their contexts side by side
    ((field, A, B, differs)), what makes them not comparable, and a row per metric (B - A)."""

    a: dict[str, Any]
    b: dict[str, Any]
    rows: list[Row]
    context: list[tuple[str, str, str, bool]]
    differences: list[str]
    capacity: str | None


def _section(run: dict[str, Any], name: str) -> dict[str, Any] | None:
    section = (run.get("report") or {}).get(name)
    return section if isinstance(section, dict) else None


def compare_runs(history: RunHistory, a_id: str, b_id: str, resamples: int = 2000) -> RunComparison:
    """Every metric of both runs, B minus A, better or worse, and significance (`resamples` bootstrap draws);
    performance metrics of runs whose contexts differ are shown but marked not comparable.

    ConfigError when the runs used different hold-out sets: they are never compared.
    """
    a, b = history.require_run(a_id), history.require_run(b_id)
    if a["holdout_sha256"] != b["holdout_sha256"]:
        raise ConfigError(f"runs {a_id} and {b_id} used different hold-out sets (sha256 "
                          f"{str(a['holdout_sha256'])[:12]} vs {str(b['holdout_sha256'])[:12]}); refusing to compare")
    tests = PairedTests(history.evidence(b["id"]), history.evidence(a["id"]), resamples)
    a_context, b_context = _section(a, "context"), _section(b, "context")
    metrics = set(a["metrics"]) | set(b["metrics"])
    incomparable = incomparable_metrics(b_context, a_context, metrics, _section(b, "capacity"), _section(a, "capacity"))

    @cache  # compare asks once per metric; the cache keeps a repeated name from re-running a bootstrap
    def significance(metric: str) -> Significance | str | None:
        return tests.test(metric, ALPHA)

    rows = compare(a["metrics"], b["metrics"], significance, incomparable=incomparable)
    return RunComparison(a, b, rows, context_rows(b_context, a_context), context_differences(b_context, a_context),
                         capacity_problem(_section(b, "capacity"), _section(a, "capacity")))


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run.get(k) for k in ("id", "model", "model_version", "holdout_sha256", "verdict", "run_status",
                                    "started_at", "predecessor_id", "mlflow_run_id") if k in run}


def comparison_json(comparison: RunComparison) -> dict[str, Any]:
    """`profiler compare --json`: both runs, the context rows, what is not comparable, and every metric."""
    return {"a": _brief(comparison.a), "b": _brief(comparison.b),
            "context": [{"field": f, "a": va, "b": vb, "differs": d} for f, va, vb, d in comparison.context],
            "comparable": not comparison.differences, "context_differences": comparison.differences,
            "capacity": comparison.capacity, "summary": summarise(comparison.rows),
            "metrics": [row.as_dict() for row in comparison.rows]}
