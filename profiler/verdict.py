"""Gates on the report's metrics, turned into one verdict with a reason per check. Pure.

A gate bounds one metric absolutely (`min`, `max`) and/or bounds its change against the
predecessor run (`change`), in the direction that counts as better. See docs/verdict.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"

METRICS: dict[str, str] = {
    "accuracy": "share of hold-out samples predicted right",
    "precision_macro": "precision averaged over classes",
    "recall_macro": "recall averaged over classes",
    "f1_macro": "F1 averaged over classes",
    "precision_weighted": "precision averaged over classes, weighted by support",
    "recall_weighted": "recall averaged over classes, weighted by support",
    "f1_weighted": "F1 averaged over classes, weighted by support",
    "coverage": "share of hold-out samples that got a prediction",
    "inconsistent_rate": "share of repeated predictions that differed from the first for the same sample",
    "error_rate": "failed or unsent requests over all requests, measured stages",
    "latency_p50_ms": "worst stage's p50 latency from the intended send time",
    "latency_p90_ms": "worst stage's p90 latency",
    "latency_p95_ms": "worst stage's p95 latency",
    "latency_p99_ms": "worst stage's p99 latency",
    "latency_p999_ms": "worst stage's p99.9 latency",
    "latency_max_ms": "worst stage's maximum latency",
    "max_sustained_rps": "highest offered rate held within the latency objective",
    "memory_peak_bytes": "peak memory of the model (the figure resources.source names)",
    "memory_growth_bytes": "memory at rest after the load minus at rest before",
    "memory_growth_pct": "that growth in percent of the memory before",
    "cpu_cores": "CPU cores the model used under load",
    "memory_leak": "leak test: 1 leaked, 0 no leak; not measured when inconclusive (gate with max: 0)",
    "memory_growth_bytes_per_request": "Theil-Sen growth of memory per request under load, after warm-up",
    "memory_growth_bytes_per_hour": "Theil-Sen growth of memory per hour at the tested load, after warm-up",
    "memory_steady_bytes": "memory under sustained load (median of the last third of the load)",
    "memory_before_bytes": "memory at rest before the load",
    "cpu_seconds_per_request": "CPU seconds the model spent per request under load",
    "replicas_per_node": "replicas that fit a node (node section, else resources.node_memory_bytes / node_cpu_cores)",
    "model_artifact_bytes": "size of the model artifact on disk (resources.artifact_path)",
    "replica_rps": "one replica's sustained rate within the requirement's latency (requirements section)",
    "replicas_needed": "replicas needed for the required peak rate",
    "capacity_per_node_rps": "requests per second one node serves: replicas per node x replica rate",
    "nodes_needed": "nodes needed for the required peak rate",
    "cost_per_million": "node cost per million predictions at full node capacity (node.price_per_hour)",
}

QUALIFIED_METRICS: dict[str, str] = {
    "f1[CLASS]": "F1 of one class, e.g. f1[3]",
    "precision[CLASS]": "precision of one class",
    "recall[CLASS]": "recall of one class",
    "latency_pNN_ms@RATErps": "a latency percentile at one offered rate, e.g. latency_p99_ms@100rps",
    "error_rate@RATErps": "the error rate at one offered rate",
}
"""Metric families with a class or a rate in the name; the qualifier is checked against the report."""

HIGHER_IS_BETTER = frozenset({
    "accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
    "f1_weighted", "coverage", "max_sustained_rps", "replica_rps", "replicas_per_node", "capacity_per_node_rps",
    "f1", "precision", "recall",
})
"""Metrics (and per-class families) where more is better; every other metric is better when lower."""

_PER_CLASS = re.compile(r"^(f1|precision|recall)\[([^\[\]]+)\]$")
_AT_RATE = re.compile(r"^([a-z0-9_]+)@([0-9]+(?:\.[0-9]+)?)rps$")
_RATE_FAMILY = ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_p999_ms",
                "latency_max_ms", "error_rate")


def normalise_metric(name: str) -> str:
    """The canonical name of a gateable metric, or ValueError naming the known ones."""
    if name in METRICS:
        return name
    if _PER_CLASS.match(name):
        return name
    at_rate = _AT_RATE.match(name)
    if at_rate and at_rate.group(1) in _RATE_FAMILY:
        rate = float(at_rate.group(2))
        if rate > 0:
            return f"{at_rate.group(1)}@{rate:g}rps"
    known = ", ".join([*sorted(METRICS), *QUALIFIED_METRICS])
    raise ValueError(f"unknown metric {name!r}; known: {known}")


def base_metric(name: str) -> str:
    """The family of a metric name: 'f1[3]' -> 'f1', 'latency_p99_ms@100rps' -> 'latency_p99_ms'."""
    per_class = _PER_CLASS.match(name)
    if per_class:
        return per_class.group(1)
    return name.split("@", 1)[0]


def greater_is_better(name: str) -> bool:
    """The direction that counts as better for a metric (lower is better unless listed)."""
    return base_metric(name) in HIGHER_IS_BETTER


@dataclass(frozen=True, slots=True)
class ChangeBound:
    """A bound on the change against the predecessor, measured in the direction that counts as better.

    `max_worse`: the candidate may be worse by at most this much (a tolerated regression).
    `min_better`: the candidate must be better by at least this much (MLflow's min_*_change).
    `relative`: both are fractions of the predecessor's value. `significant`: a change only counts
    when the paired test says it is outside the noise at level `alpha`.
    """

    max_worse: float | None = None
    min_better: float | None = None
    relative: bool = False
    significant: bool = False
    alpha: float = 0.05


@dataclass(frozen=True, slots=True)
class Gate:
    """One configured gate: absolute bounds, a change bound, the direction, and whether it is required."""

    metric: str
    min: float | None = None
    max: float | None = None
    required: bool = True
    change: ChangeBound | None = None
    greater_is_better: bool | None = None

    @property
    def higher_better(self) -> bool:
        """The direction used for change bounds."""
        return greater_is_better(self.metric) if self.greater_is_better is None else self.greater_is_better


@dataclass(frozen=True, slots=True)
class Significance:
    """A paired test of candidate minus predecessor: the difference, its interval or p-value, the verdict."""

    method: str
    difference: float
    significant: bool
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    samples: int = 0

    def describe(self) -> str:
        """'significant (McNemar p=0.001)' or 'inside the noise (95% CI -0.01..0.02)'."""
        parts = []
        if self.p_value is not None:
            parts.append(f"p={self.p_value:.3g}")
        if self.ci_low is not None and self.ci_high is not None:
            parts.append(f"{(self.confidence or 0.95):.0%} CI {self.ci_low:+.4g}..{self.ci_high:+.4g}")
        what = "significant" if self.significant else "inside the noise"
        return f"{what} ({self.method} {', '.join(parts)}, n={self.samples})"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Predecessor:
    """The run the candidate is compared with (same hold-out set): its id and metrics."""

    run_id: str
    metrics: dict[str, float | None]
    explicit: bool = False


SignificanceFn = Callable[[str, float], Significance | str | None]
"""(metric, alpha) -> the paired test, or a reason it cannot be tested (str), or None if no test exists."""


@dataclass(frozen=True, slots=True)
class Check:
    """One gate's outcome: status, the value seen, the bound, the predecessor's value, and why."""

    metric: str
    status: str
    value: float | None
    bound: str
    reason: str
    required: bool = True
    kind: str = "absolute"
    predecessor: float | None = None
    significance: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Verdict:
    """pass only if every required check passes; fail if any fails; else inconclusive."""

    status: str
    checks: tuple[Check, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {"status": self.status, "reason": self.reason, "checks": [asdict(c) for c in self.checks]}


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def evaluate_gate(metric: str, value: float | None, lower: float | None, upper: float | None,
                  required: bool = True) -> Check:
    """Compare one value with its bounds. Missing or NaN never passes."""
    bound = " and ".join(part for part in (
        f">= {lower:g}" if lower is not None else "",
        f"<= {upper:g}" if upper is not None else "",
    ) if part)
    if _missing(value):
        return Check(metric, INCONCLUSIVE, None, bound, f"{metric} was not measured", required)
    assert value is not None
    if lower is not None and value < lower:
        return Check(metric, FAIL, value, bound, f"{metric} {value:.6g} is below the minimum {lower:g}", required)
    if upper is not None and value > upper:
        return Check(metric, FAIL, value, bound, f"{metric} {value:.6g} is above the maximum {upper:g}", required)
    return Check(metric, PASS, value, bound, f"{metric} {value:.6g} is within {bound}", required)


def _change_bound_text(change: ChangeBound, higher_better: bool) -> str:
    unit = "x predecessor" if change.relative else ""
    better = "higher" if higher_better else "lower"
    if change.min_better is not None:
        text = f"better by >= {change.min_better:g}{' ' + unit if unit else ''} ({better} is better)"
    else:
        text = f"worse by <= {(change.max_worse or 0.0):g}{' ' + unit if unit else ''} ({better} is better)"
    return text + (", significant" if change.significant else "")


def evaluate_change(metric: str, value: float | None, predecessor: Predecessor | None, change: ChangeBound,
                    higher_better: bool, significance: Significance | str | None, required: bool = True,
                    first_run_blocks: bool = False) -> Check:
    """Bound the change against the predecessor; see ChangeBound. Missing or NaN never passes.

    Without any predecessor (the first run of a model on a hold-out set) the check is inconclusive
    and, unless `first_run_blocks`, not required, so a first run can pass on its absolute gates.
    """
    bound = _change_bound_text(change, higher_better)
    sig = significance.as_dict() if isinstance(significance, Significance) else None

    def check(status: str, reason: str, prev: float | None = None, req: bool = required) -> Check:
        return Check(metric, status, None if _missing(value) else value, bound, reason, req, "change", prev, sig)

    if predecessor is None:
        return check(INCONCLUSIVE, f"{metric}: no predecessor run to compare with (first run of this model on "
                                   "this hold-out set)", req=required and first_run_blocks)
    previous = predecessor.metrics.get(metric)
    if _missing(value):
        return check(INCONCLUSIVE, f"{metric} was not measured", None if _missing(previous) else previous)
    if _missing(previous):
        return check(INCONCLUSIVE, f"{metric} was not measured in the predecessor run {predecessor.run_id}")
    assert value is not None and previous is not None
    better = (value - previous) if higher_better else (previous - value)
    unit = ""
    if change.relative:
        if previous == 0:
            if better == 0:
                better_scaled = 0.0
            else:
                return check(INCONCLUSIVE, f"{metric}: a relative change from a predecessor value of 0 is "
                                           "undefined", previous)
        else:
            better_scaled = better / abs(previous)
        unit = " of the predecessor's value"
    else:
        better_scaled = better
    # Bounds are inclusive; the slack keeps 0.89 - 0.9 (= -0.01000000000000001) within "worse by <= 0.01".
    slack = 1e-9 * (1.0 if change.relative else max(1.0, abs(value), abs(previous)))
    moved = (f"{metric} {value:.6g} vs {previous:.6g} in {predecessor.run_id}: "
             f"{'better' if better_scaled >= 0 else 'worse'} by {abs(better_scaled):.4g}{unit}")
    noise = ""
    if isinstance(significance, Significance):
        noise = f"; {significance.describe()}"
    elif isinstance(significance, str):
        noise = f"; not tested: {significance}"
    if change.significant and not isinstance(significance, Significance):
        why = significance if isinstance(significance, str) else "no significance test exists for this metric"
        return check(INCONCLUSIVE, f"{moved}; significance is required but could not be tested: {why}", previous)
    is_real = isinstance(significance, Significance) and significance.significant
    if change.min_better is not None:
        if better_scaled < change.min_better - slack:
            return check(FAIL, f"{moved}, less than the required improvement {change.min_better:g}{noise}",
                         previous)
        if change.significant and not is_real:
            return check(FAIL, f"{moved}, but a significant improvement is required{noise}", previous)
        return check(PASS, f"{moved}, at least the required improvement {change.min_better:g}{noise}", previous)
    allowed = change.max_worse or 0.0
    if better_scaled < -allowed - slack:
        if change.significant and not is_real:
            return check(PASS, f"{moved}, beyond the tolerated {allowed:g} but not counted{noise}", previous)
        return check(FAIL, f"{moved}, more than the tolerated {allowed:g}{noise}", previous)
    return check(PASS, f"{moved}, within the tolerated {allowed:g}{noise}", previous)


def decide(checks: list[Check]) -> Verdict:
    """Combine checks: any required fail -> fail; any required inconclusive -> inconclusive."""
    required = [c for c in checks if c.required]
    failed = [c for c in required if c.status == FAIL]
    unsure = [c for c in required if c.status == INCONCLUSIVE]
    if not checks:
        return Verdict(INCONCLUSIVE, (), "no gates are configured, so nothing was judged")
    if failed:
        return Verdict(FAIL, tuple(checks), "; ".join(c.reason for c in failed))
    if unsure:
        return Verdict(INCONCLUSIVE, tuple(checks), "; ".join(c.reason for c in unsure))
    if not required:
        return Verdict(INCONCLUSIVE, tuple(checks), "no required check could be evaluated")
    waiting = sum(1 for c in checks if not c.required and c.status == INCONCLUSIVE and c.kind == "change")
    more = f" ({waiting} change checks had no predecessor to compare with)" if waiting else ""
    return Verdict(PASS, tuple(checks), f"all {len(required)} required checks passed{more}")


def flatten_metrics(report: dict[str, Any]) -> dict[str, float | None]:
    """The gateable metrics of a report, each a number or None when not measured."""
    out: dict[str, float | None] = dict.fromkeys(METRICS)
    accuracy = report.get("accuracy") or {}
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "coverage"):
        out[key] = accuracy.get(key)
    consistency = accuracy.get("consistency") or {}
    if consistency.get("compared"):
        out["inconsistent_rate"] = consistency["inconsistent"] / consistency["compared"]
    elif accuracy.get("scored"):
        out["inconsistent_rate"] = 0.0
    measured = [s for s in report.get("stages", []) if not s["warmup"]]
    attempted = sum(s["sent"] + s["unsent"] for s in measured)
    if attempted:
        out["error_rate"] = sum(s["errors"] + s["unsent"] for s in measured) / attempted
    for key in ("p50", "p90", "p95", "p99", "p999", "max"):
        values = [s["latency_ms"][key] for s in measured if s["latency_ms"][key] is not None]
        out[f"latency_{key}_ms"] = max(values) if values else None
    out["max_sustained_rps"] = (report.get("capacity") or {}).get("max_sustained_rps")
    out.update(resource_metrics(report.get("resources") or {}))
    out.update(plan_metrics(report.get("requirements") or {}))
    out.update(qualified_metrics(report))
    return out


def plan_metrics(plan: dict[str, Any]) -> dict[str, float | None]:
    """The capacity arithmetic's figures (requirements section); replicas_per_node only when it has one."""
    out = {key: plan.get(key) for key in ("replica_rps", "replicas_needed", "capacity_per_node_rps", "nodes_needed",
                                          "cost_per_million")}
    if plan.get("replicas_per_node") is not None:
        out["replicas_per_node"] = plan["replicas_per_node"]
    return out


def resource_metrics(resources: dict[str, Any]) -> dict[str, float | None]:
    """Memory, leak, CPU and footprint metrics; all None when memory was not measured over the whole run."""
    if not resources.get("complete"):
        artifact = (resources.get("footprint") or {}).get("artifact_bytes")
        return {"model_artifact_bytes": artifact}
    memory = resources.get("memory") or {}
    cpu = resources.get("cpu") or {}
    leak = resources.get("leak") or {}
    footprint = resources.get("footprint") or {}
    return {
        "memory_peak_bytes": memory.get("peak_bytes"),
        "memory_growth_bytes": memory.get("growth_bytes"),
        "memory_growth_pct": memory.get("growth_pct"),
        "memory_steady_bytes": memory.get("steady_bytes"),
        "memory_before_bytes": memory.get("before_bytes"),
        "cpu_cores": cpu.get("cores_under_load"),
        "cpu_seconds_per_request": cpu.get("seconds_per_request"),
        "memory_leak": {"leaked": 1.0, "no leak": 0.0}.get(str(leak.get("status"))),
        "memory_growth_bytes_per_request": leak.get("bytes_per_request"),
        "memory_growth_bytes_per_hour": leak.get("bytes_per_hour"),
        "replicas_per_node": footprint.get("replicas_per_node"),
        "model_artifact_bytes": footprint.get("artifact_bytes"),
    }


def qualified_metrics(report: dict[str, Any]) -> dict[str, float | None]:
    """Per-class precision/recall/F1 ('f1[3]') and per-rate latency and errors ('latency_p99_ms@100rps')."""
    out: dict[str, float | None] = {}
    per_class = (report.get("accuracy") or {}).get("per_class") or {}
    for cls, figures in per_class.items():
        for key in ("precision", "recall", "f1"):
            out[f"{key}[{cls}]"] = figures.get(key)
    by_rate: dict[str, list[dict[str, Any]]] = {}
    for stage in report.get("stages", []):
        if not stage["warmup"]:
            by_rate.setdefault(f"{float(stage['offered_rps']):g}", []).append(stage)
    for rate, stages in by_rate.items():
        # Two stages at one rate (a step down, a soak): the worse of them counts.
        for key in ("p50", "p90", "p95", "p99", "p999", "max"):
            values = [s["latency_ms"][key] for s in stages if s["latency_ms"][key] is not None]
            out[f"latency_{key}_ms@{rate}rps"] = max(values) if values else None
        rates = [s["error_rate"] for s in stages if s.get("error_rate") is not None]
        out[f"error_rate@{rate}rps"] = max(rates) if rates else None
    return out


def _as_gate(gate: Gate | Sequence[Any]) -> Gate:
    if isinstance(gate, Gate):
        return gate
    metric, lower, upper, required = gate
    return Gate(metric, lower, upper, required)


def gate_checks(gate: Gate, metrics: dict[str, float | None], predecessor: Predecessor | None = None,
                significance: SignificanceFn | None = None, first_run_blocks: bool = False) -> list[Check]:
    """The checks one gate yields: an absolute check if it has min/max, a change check if it has change."""
    value = metrics.get(gate.metric)
    checks = []
    if gate.min is not None or gate.max is not None:
        absolute = evaluate_gate(gate.metric, value, gate.min, gate.max, gate.required)
        if _missing(value) and gate.metric not in METRICS:
            absolute = Check(gate.metric, INCONCLUSIVE, None, absolute.bound,
                             f"{gate.metric} is not in this report (no such class or offered rate)", gate.required)
        checks.append(absolute)
    if gate.change is not None:
        sig: Significance | str | None = None
        if predecessor is not None and significance is not None:
            sig = significance(gate.metric, gate.change.alpha)
        checks.append(evaluate_change(gate.metric, value, predecessor, gate.change, gate.higher_better, sig,
                                      gate.required, first_run_blocks))
    return checks


def judge(report: dict[str, Any], gates: Sequence[Gate | Sequence[Any]], predecessor: Predecessor | None = None,
          significance: SignificanceFn | None = None, first_run_blocks: bool = False) -> Verdict:
    """Apply gates (Gate, or (metric, min, max, required) tuples) to a report, against a predecessor."""
    metrics = report.get("metrics") or flatten_metrics(report)
    checks: list[Check] = []
    for gate in gates:
        checks.extend(gate_checks(_as_gate(gate), metrics, predecessor, significance, first_run_blocks))
    return decide(checks)
