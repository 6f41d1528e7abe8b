"""The verdict of a run against its predecessor, and the report's predecessor section. Pure.

The paired tests (McNemar, bootstrap) cost CPU; they run only for the metrics a gate or the
comparison asks about, once each, and the caller (report assembly) runs in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from typing import Any

from profiler.judge.comparability import capacity_problem, context_differences, incomparable_metrics
from profiler.judge.comparison import HEADLINE, compare, summarise
from profiler.judge.significance import Baseline, Evidence, PairedTests, StageLatency
from profiler.judge.verdict import Gate, Significance, Verdict, judge
from profiler.measure.accuracy import label_key
from profiler.measure.latency import StageRecorder
from profiler.state import RunView


def candidate_evidence(run: RunView) -> Evidence:
    """The running candidate's labels, predictions (None where the accuracy pass got none) and measured
    (not warm-up) latency histograms, in the shape the store keeps a predecessor's."""
    samples = run.dataset.samples if run.dataset is not None else []
    predictions: list[str | None] = (list(run.predictions.reference) if run.predictions is not None
                                     else [None] * len(samples))
    return Evidence([label_key(s.label) for s in samples], predictions, measured_latency(run.recorders))


def measured_latency(recorders: Sequence[StageRecorder]) -> list[StageLatency]:
    """Each measured stage's latency histogram (microseconds), encoded as the store keeps it."""
    return [StageLatency(r.stage.name, r.stage.rate_rps, r.latency.encode().decode("ascii"))
            for r in recorders if not r.stage.warmup]


def assess(report: dict[str, Any], gates: Sequence[Gate], baseline: Baseline | None,
           candidate: Evidence | None, *, first_run_blocks: bool = False) -> tuple[Verdict, dict[str, Any] | None]:
    """The verdict of `gates` on `report` against the predecessor, and the report's predecessor section
    (None on a first run). `candidate` is this run's evidence for the paired tests; without it or
    without the predecessor's, change gates are judged on the figures alone."""
    baseline = baseline or Baseline()
    predecessor = baseline.predecessor
    names = [*HEADLINE, *(g.metric for g in gates if g.metric not in HEADLINE)]
    if predecessor is not None:
        # The comparability rule needs this run's capacity (is it a lower bound?), known only now.
        predecessor = replace(predecessor, incomparable=incomparable_metrics(
            report.get("context"), predecessor.context, [*names, *report["metrics"]], report.get("capacity"),
            predecessor.capacity))
    significance = None
    if predecessor is not None and baseline.evidence is not None and candidate is not None:
        tests = PairedTests(candidate, baseline.evidence)

        @cache  # a metric asked about by a gate and by the comparison is tested once
        def significance(metric: str, alpha: float = 0.05) -> Significance | str | None:
            return tests.test(metric, alpha)

    verdict = judge(report, gates, predecessor, significance, first_run_blocks=first_run_blocks)
    if predecessor is None:
        return verdict, None
    rows = compare(predecessor.metrics, report["metrics"], significance, names, predecessor.incomparable)
    differences = context_differences(report.get("context"), predecessor.context)
    section = {"id": predecessor.run_id, "explicit": predecessor.explicit, "source": predecessor.source,
               "comparable": not differences, "context_differences": differences,
               "capacity": capacity_problem(report.get("capacity"), predecessor.capacity),
               "summary": summarise(rows), "comparison": [row.as_dict() for row in rows]}
    return verdict, section
