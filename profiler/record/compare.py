"""Two stored runs side by side, for `profiler compare A B`: read both from the history and test
every metric's difference. The text is profiler.record.render.comparison_text."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from profiler.core.errors import ConfigError
from profiler.judge.comparison import Row, compare
from profiler.judge.significance import PairedTests
from profiler.judge.verdict import Significance
from profiler.record.baseline import load_evidence
from profiler.record.store import Store

ALPHA = 0.05
"""Significance level of the paired tests (95%)."""


@dataclass(frozen=True, slots=True)
class RunComparison:
    """Run A (the reference), run B (the candidate) as the store lists them, and a row per metric (B - A)."""

    a: dict[str, Any]
    b: dict[str, Any]
    rows: list[Row]


def compare_runs(store: Store, a_id: str, b_id: str, resamples: int = 2000) -> RunComparison:
    """Every metric of both runs, B minus A, better or worse, and significance (`resamples` bootstrap draws).

    ConfigError when the runs used different hold-out sets: they are never compared.
    """
    a, b = store.require_run(a_id), store.require_run(b_id)
    if a["holdout_sha256"] != b["holdout_sha256"]:
        raise ConfigError(f"runs {a_id} and {b_id} used different hold-out sets (sha256 "
                          f"{str(a['holdout_sha256'])[:12]} vs {str(b['holdout_sha256'])[:12]}); refusing to compare")
    tests = PairedTests(load_evidence(store, b_id), load_evidence(store, a_id), resamples)

    @cache  # compare asks once per metric; the cache keeps a repeated name from re-running a bootstrap
    def significance(metric: str) -> Significance | str | None:
        return tests.test(metric, ALPHA)

    return RunComparison(a, b, compare(a["metrics"], b["metrics"], significance))
