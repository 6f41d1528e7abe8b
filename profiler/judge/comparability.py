"""Whether two runs' figures can be compared: the context rule and the capacity-bound rule. Pure.

A run's context (the report's `context` section, profiler.record.context) is what was held fixed
while it measured: protocol, client, arrival process, stage plan, batch size, generator workers,
lag budget, host CPU and cores, target host. Latency, errors, memory, CPU and capacity move with
each of these (a library client adds its own microseconds; another machine has other cores), so a
change in any of them makes those metrics *not comparable*; accuracy on the same hold-out set does
not depend on how the requests were sent, so it stays comparable. Capacity is compared only when
neither side is a lower bound, or when the bound still decides the comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from profiler.judge.catalogue import CLASS_METRICS, base_metric

CONTEXT_KEYS = ("protocol", "client", "arrival", "plan", "batch_size", "workers", "lag_budget_ms",
                "host_cpu_model", "host_cores", "target_host")
"""The context fields that move performance figures; a difference in any makes them not comparable."""

INFO_KEYS = ("profiler_version",)
"""Context fields shown beside the others but that do not, alone, make runs not comparable."""

CONTEXT_FREE = frozenset({*CLASS_METRICS, "coverage", "model_artifact_bytes"})
"""Metric families that do not depend on how the load was sent (the same hold-out set gives the same answers)."""

CAPACITY_METRICS = frozenset({"max_sustained_rps", "replica_rps", "replicas_needed", "replicas_per_node",
                              "capacity_per_node_rps", "nodes_needed", "cost_per_million"})
"""Metrics derived from the highest sustained rate: a lower bound there makes them bounds too."""


def _shown(value: Any) -> str:
    return "unrecorded" if value is None else str(value)


def context_differences(candidate: Mapping[str, Any] | None, predecessor: Mapping[str, Any] | None) -> list[str]:
    """Each context field that differs, as 'client library vs lean' (the candidate's value first).

    A predecessor that recorded no context (a report from before contexts were recorded) differs in
    everything: one entry says so.
    """
    if not predecessor:
        return ["context not recorded in the predecessor"]
    if not candidate:
        return ["context not recorded in the candidate"]
    return [f"{key} {_shown(candidate.get(key))} vs {_shown(predecessor.get(key))}"
            for key in CONTEXT_KEYS if candidate.get(key) != predecessor.get(key)]


def context_rows(candidate: Mapping[str, Any] | None, predecessor: Mapping[str, Any] | None) -> list[tuple[str, str,
                                                                                                            str, bool]]:
    """(field, predecessor's value, candidate's value, differs) for every context field, for `compare`."""
    candidate, predecessor = candidate or {}, predecessor or {}
    return [(key, _shown(predecessor.get(key)), _shown(candidate.get(key)),
             key in CONTEXT_KEYS and candidate.get(key) != predecessor.get(key))
            for key in (*CONTEXT_KEYS, *INFO_KEYS)]


def _bound_text(capacity: Mapping[str, Any]) -> str:
    value = capacity.get("max_sustained_rps")
    shown = "-" if value is None else f"{value:g}"
    return f">= {shown}" if capacity.get("lower_bound") else shown


def capacity_problem(candidate: Mapping[str, Any] | None, predecessor: Mapping[str, Any] | None) -> str | None:
    """Why the capacity figures (report["capacity"]) cannot be compared, or None when they can.

    Exact vs exact compares. A candidate bound at or above an exact predecessor is known to be not
    worse, and an exact candidate below a predecessor's bound is known to be worse: those compare.
    Anything else (two bounds, or a bound on the wrong side) cannot say which is higher.
    """
    candidate, predecessor = candidate or {}, predecessor or {}
    c, p = candidate.get("max_sustained_rps"), predecessor.get("max_sustained_rps")
    c_bound, p_bound = bool(candidate.get("lower_bound")), bool(predecessor.get("lower_bound"))
    if c is None or p is None or not (c_bound or p_bound):
        return None
    if c_bound and not p_bound and c >= p:
        return None
    if p_bound and not c_bound and c < p:
        return None
    why = "lower bounds" if c_bound and p_bound else "a lower bound on one side"
    limits = {str(s.get("limited_by")) for s in (candidate, predecessor) if s.get("lower_bound")}
    limited = " and ".join(sorted(limits))
    return f"{_bound_text(candidate)} vs {_bound_text(predecessor)} rps ({why}, set by the {limited})"


def incomparable_metrics(candidate: Mapping[str, Any] | None, predecessor: Mapping[str, Any] | None,
                         metrics: Iterable[str], candidate_capacity: Mapping[str, Any] | None = None,
                         predecessor_capacity: Mapping[str, Any] | None = None) -> dict[str, str]:
    """metric -> 'not comparable: ...' for each of `metrics` the two contexts (and capacities) cannot compare."""
    differences = context_differences(candidate, predecessor)
    context_note = f"not comparable: {'; '.join(differences)}" if differences else None
    bound = capacity_problem(candidate_capacity, predecessor_capacity)
    out: dict[str, str] = {}
    for metric in metrics:
        family = base_metric(metric)
        if family in CONTEXT_FREE:
            continue
        if family in CAPACITY_METRICS and bound is not None:
            out[metric] = f"not comparable: {bound}" + (f"; {'; '.join(differences)}" if differences else "")
        elif context_note is not None:
            out[metric] = context_note
    return out


@dataclass(frozen=True, slots=True)
class Candidate:
    """A stored run the predecessor rule may pick: its id and recorded context (None when not recorded)."""

    run_id: str
    context: Mapping[str, Any] | None


def choose_predecessor(passing: Sequence[Candidate], context: Mapping[str, Any] | None) -> Candidate | None:
    """The predecessor rule, the same for every history back end: among the passing runs of this model on
    this hold-out set (newest first), the newest with a comparable context; when none is comparable, the
    newest all the same, so the report says what differs instead of calling the run a first run."""
    for run in passing:
        if not context_differences(context, run.context):
            return run
    return passing[0] if passing else None
