"""Gates on the report's metrics, turned into one verdict with a reason per check. Pure.

A gate bounds one metric absolutely (`min`, `max`) and/or bounds its change against the
predecessor run (`change`), in the direction that counts as better. Beside the gates a profile
names, two implied checks are always required (`implied_checks`): no planned stage broke the
objective's error budget, and the objective was met at some rate. Whatever the gates, a run where
half the requests failed cannot pass. See docs/verdict.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from profiler.judge.catalogue import METRICS, flatten_metrics, greater_is_better, unmeasured_reasons

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"

EXIT_PASS = 0
EXIT_FAIL = 1
"""A required check failed; nothing else ends with 1."""
EXIT_INCONCLUSIVE = 2
"""Nothing failed, but something required could not be decided (or the run was aborted)."""
EXIT_ERROR = 3
"""The profiler could not do its job: a bad profile or hold-out file, a target never ready, a history it cannot read."""
_CODES = {PASS: EXIT_PASS, FAIL: EXIT_FAIL, INCONCLUSIVE: EXIT_INCONCLUSIVE}


def exit_code_for(report: dict[str, Any], problems: Sequence[str] = ()) -> int:
    """The process exit code that carries a report's verdict to CI; the one rule every command follows.

    `problems` are what the profiler itself could not do once the run had a verdict (the report file could
    not be written, ...): any of them makes it EXIT_ERROR even though a verdict was computed, so CI never
    reads the profiler's failure as the model's. Otherwise the verdict decides: EXIT_FAIL only when a
    required check failed, EXIT_INCONCLUSIVE when something required was undecided or the run was aborted
    (an aborted run's verdict is inconclusive unless a check already failed), EXIT_PASS on pass.
    """
    if problems:
        return EXIT_ERROR
    return _CODES.get(report["verdict"]["status"], EXIT_ERROR)


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
    incomparable: Mapping[str, str] = field(default_factory=dict)
    """metric -> 'not comparable: ...' for the metrics its context cannot compare (judge.comparability)."""
    context: Mapping[str, Any] | None = None
    """The predecessor report's `context` section (None when it recorded none)."""
    capacity: Mapping[str, Any] | None = None
    """The predecessor report's `capacity` section (its highest sustained rate, and whether it is a bound)."""
    source: str = ""
    """Where it was found: the history file, 'MLflow at URL (experiment ...)', or a report file."""


NOT_COMPARABLE = "not comparable: "
"""How the reason of a change check against a predecessor of another context starts its explanation."""

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
                  required: bool = True, unmeasured: str | None = None) -> Check:
    """Compare one value with its bounds. Missing or NaN never passes; `unmeasured` says why it is missing
    when the report knows (catalogue.unmeasured_reasons)."""
    bound = " and ".join(part for part in (
        f">= {lower:g}" if lower is not None else "",
        f"<= {upper:g}" if upper is not None else "",
    ) if part)
    if _missing(value):
        return Check(metric, INCONCLUSIVE, None, bound, unmeasured or f"{metric} was not measured", required)
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


def scaled_improvement(better: float, previous: float, relative: bool) -> float | None:
    """The improvement in the bound's unit: as it is, or a fraction of |previous| when `relative`.

    None when relative to a predecessor value of 0 and the value moved (undefined); 0.0 when it did not.
    """
    if not relative:
        return better
    if previous == 0:
        return 0.0 if better == 0 else None
    return better / abs(previous)


def _noise(significance: Significance | str | None) -> str:
    """What the paired test said, to append to a reason: its verdict, why it was not done, or nothing."""
    if isinstance(significance, Significance):
        return f"; {significance.describe()}"
    if isinstance(significance, str):
        return f"; not tested: {significance}"
    return ""


def judge_change(change: ChangeBound, better: float, slack: float, is_real: bool) -> tuple[str, str]:
    """(status, why) for an improvement `better` (in the bound's unit; negative: worse) against the bound.

    `slack` keeps float error from failing a change right on the bound; `is_real` says the paired
    test found the change significant (only consulted when the bound asks for significance).
    """
    if change.min_better is not None:
        if better < change.min_better - slack:
            return FAIL, f"less than the required improvement {change.min_better:g}"
        if change.significant and not is_real:
            return FAIL, "but a significant improvement is required"
        return PASS, f"at least the required improvement {change.min_better:g}"
    allowed = change.max_worse or 0.0
    if better < -allowed - slack:
        if change.significant and not is_real:
            return PASS, f"beyond the tolerated {allowed:g} but not counted"
        return FAIL, f"more than the tolerated {allowed:g}"
    return PASS, f"within the tolerated {allowed:g}"


def _without_predecessor(metric: str, predecessor: Predecessor | None, check: Callable[..., Check],
                         required: bool, first_run_blocks: bool) -> Check:
    """The change check when there is nothing comparable to compare with: no predecessor (a first run), or one
    whose context makes this metric not comparable. Like a first run it blocks only when asked
    (baseline.required), or when the user named that predecessor; else a runner on new hardware could
    never pass, so never become a comparable yardstick."""
    if predecessor is None:
        return check(INCONCLUSIVE, f"{metric}: no predecessor run to compare with (first run of this model on "
                                   "this hold-out set)", req=required and first_run_blocks)
    previous = predecessor.metrics.get(metric)
    return check(INCONCLUSIVE, f"{metric} vs {predecessor.run_id}: {predecessor.incomparable[metric]}",
                 None if _missing(previous) else previous, req=required and (first_run_blocks or predecessor.explicit))


def evaluate_change(metric: str, value: float | None, predecessor: Predecessor | None, change: ChangeBound,
                    higher_better: bool, significance: Significance | str | None, required: bool = True,
                    first_run_blocks: bool = False, unmeasured: str | None = None) -> Check:
    """Bound the change against the predecessor; see ChangeBound. Missing or NaN never passes (`unmeasured`
    says why it is missing when the report knows).

    Without any predecessor (the first run of a model on a hold-out set) the check is inconclusive
    and, unless `first_run_blocks`, not required, so a first run can pass on its absolute gates.
    """
    bound = _change_bound_text(change, higher_better)
    sig = significance.as_dict() if isinstance(significance, Significance) else None

    def check(status: str, reason: str, prev: float | None = None, req: bool = required) -> Check:
        return Check(metric, status, None if _missing(value) else value, bound, reason, req, "change", prev, sig)

    if predecessor is None or metric in predecessor.incomparable:
        return _without_predecessor(metric, predecessor, check, required, first_run_blocks)
    previous = predecessor.metrics.get(metric)
    if _missing(value):
        return check(INCONCLUSIVE, unmeasured or f"{metric} was not measured", None if _missing(previous) else previous)
    if _missing(previous):
        return check(INCONCLUSIVE, f"{metric} was not measured in the predecessor run {predecessor.run_id}")
    assert value is not None and previous is not None
    better = scaled_improvement((value - previous) if higher_better else (previous - value), previous,
                                change.relative)
    if better is None:
        return check(INCONCLUSIVE, f"{metric}: a relative change from a predecessor value of 0 is undefined",
                     previous)
    unit = " of the predecessor's value" if change.relative else ""
    # Bounds are inclusive; the slack keeps 0.89 - 0.9 (= -0.01000000000000001) within "worse by <= 0.01".
    slack = 1e-9 * (1.0 if change.relative else max(1.0, abs(value), abs(previous)))
    moved = (f"{metric} {value:.6g} vs {previous:.6g} in {predecessor.run_id}: "
             f"{'better' if better >= 0 else 'worse'} by {abs(better):.4g}{unit}")
    if change.significant and not isinstance(significance, Significance):
        why = significance if isinstance(significance, str) else "no significance test exists for this metric"
        return check(INCONCLUSIVE, f"{moved}; significance is required but could not be tested: {why}", previous)
    is_real = isinstance(significance, Significance) and significance.significant
    status, why = judge_change(change, better, slack, is_real)
    return check(status, f"{moved}, {why}{_noise(significance)}", previous)


IMPLIED = "implied"
"""The kind of the checks every verdict carries whatever the gates (`implied_checks`)."""


def _stage_label(stage: dict[str, Any]) -> str:
    return f"{stage.get('name', 'a stage')} ({float(stage.get('offered_rps') or 0):g} rps)"


def error_budget_check(stages: list[dict[str, Any]], max_error_rate: float) -> Check:
    """Every planned stage within the objective's error budget: failed plus unsent over all it scheduled."""
    bound = f"<= {max_error_rate:g} in every stage"
    if not stages:
        return Check("error_budget", INCONCLUSIVE, None, bound, "no stage was measured", True, IMPLIED)
    silent = [s for s in stages if s.get("error_rate") is None]
    rates = [(float(s["error_rate"]), s) for s in stages if s.get("error_rate") is not None]
    if rates:
        worst, stage = max(rates, key=lambda pair: pair[0])
        if worst > max_error_rate:
            return Check("error_budget", FAIL, worst, bound,
                         f"{_stage_label(stage)} broke the error budget: {worst:.1%} of its requests failed or "
                         f"went unsent, over the objective's max_error_rate {max_error_rate:g}", True, IMPLIED)
    if silent:
        return Check("error_budget", INCONCLUSIVE, None, bound,
                     f"{_stage_label(silent[0])} sent no request, so its error rate is unknown", True, IMPLIED)
    worst, stage = max(rates, key=lambda pair: pair[0])
    return Check("error_budget", PASS, worst, bound,
                 f"every stage within the error budget (worst {worst:.2%}, {_stage_label(stage)})", True, IMPLIED)


def objective_check(stages: list[dict[str, Any]], objective: dict[str, Any], max_sustained_rps: float | None) -> Check:
    """The latency objective met at some offered rate: the run established a capacity.

    When no stage met it and every stage that missed it was limited by the load generator rather than the
    model (`_generator_excuses`), the model was not shown to fail: inconclusive, not fail.
    """
    bound = (f"p{float(objective.get('percentile', 99)):g} <= {float(objective.get('latency_ms', 0)):g} ms, "
             f"errors <= {float(objective.get('max_error_rate', 0)):g}, at some rate")
    if not stages:
        return Check("objective", INCONCLUSIVE, None, bound, "no stage was measured", True, IMPLIED)
    # Decided from the stages themselves: the capacity figure reads 0.0, not None, when stages were measured
    # and none sustained its rate, and meeting the objective at 0 rps is not meeting it.
    met = [float(s.get("offered_rps") or 0.0) for s in stages if (s.get("objective") or {}).get("sustained")]
    if met:
        best = max_sustained_rps or max(met)
        return Check("objective", PASS, best, bound, f"the objective was met up to {best:g} rps", True, IMPLIED)
    missed = [s for s in stages if not (s.get("objective") or {}).get("sustained")]
    first = missed[0] if missed else stages[0]
    why = "; ".join((first.get("objective") or {}).get("reasons") or []) or "not sustained"
    if missed and all(_generator_excuses(s, objective) for s in missed):
        return Check("objective", INCONCLUSIVE, None, bound,
                     f"no stage met the objective, but the load generator was the limit in every one "
                     f"({_stage_label(first)}: {why})", True, IMPLIED)
    return Check("objective", FAIL, None, bound,
                 f"no stage met the objective ({_stage_label(first)}: {why})", True, IMPLIED)


def _generator_excuses(stage: dict[str, Any], objective: dict[str, Any]) -> bool:
    """Whether a stage's miss may be the load generator's doing: it was generator-limited, and the model's own
    service time (from the actual send) does not exceed the objective by more than the schedule lag the
    generator added. A model answering in 300 ms against a 250 ms objective failed, however busy the
    generator was."""
    if not (stage.get("generator") or {}).get("limited"):
        return False
    key = "p" + f"{float(objective.get('percentile', 99)):g}".replace(".", "")
    service_ms = (stage.get("service_time_ms") or {}).get(key)
    lag_ms = (stage.get("schedule_lag_ms") or {}).get("p99") or 0.0
    return service_ms is None or service_ms <= float(objective.get("latency_ms", 0)) + lag_ms


def implied_checks(report: dict[str, Any]) -> list[Check]:
    """The checks every verdict requires, whatever gates the profile names.

    The error budget holds for every planned stage (`stages` or `ramp`: each is load the model is meant
    to serve). A capacity search breaks the objective on purpose above the knee, so there the objective
    check alone applies: it asks that some rate met the objective, errors included.
    """
    objective = report.get("objective") or {}
    if not objective:
        return []
    stages = [s for s in report.get("stages", []) if not s.get("warmup")]
    capacity = report.get("capacity") or {}
    checks = []
    if capacity.get("method") != "search":
        checks.append(error_budget_check(stages, float(objective.get("max_error_rate", 0.0))))
    checks.append(objective_check(stages, objective, capacity.get("max_sustained_rps")))
    return checks


def decide(checks: list[Check]) -> Verdict:
    """Combine checks: any required fail -> fail; any required inconclusive -> inconclusive.

    Without any gate (only implied checks) nothing the user asked about was judged: inconclusive, unless
    an implied check failed.
    """
    required = [c for c in checks if c.required]
    failed = [c for c in required if c.status == FAIL]
    unsure = [c for c in required if c.status == INCONCLUSIVE]
    if failed:
        return Verdict(FAIL, tuple(checks), "; ".join(c.reason for c in failed))
    if not any(c.kind != IMPLIED for c in checks):
        return Verdict(INCONCLUSIVE, tuple(checks), "no gates are configured, so nothing was judged")
    if unsure:
        return Verdict(INCONCLUSIVE, tuple(checks), "; ".join(c.reason for c in unsure))
    if not required:
        return Verdict(INCONCLUSIVE, tuple(checks), "no required check could be evaluated")
    return Verdict(PASS, tuple(checks), f"all {len(required)} required checks passed{_unjudged_note(checks)}")


def _unjudged_note(checks: list[Check]) -> str:
    """' (2 change checks had no predecessor to compare with; 1 ... not comparable ...)' or ''."""
    optional = [c for c in checks if not c.required and c.status == INCONCLUSIVE and c.kind == "change"]
    apart = sum(1 for c in optional if NOT_COMPARABLE in c.reason)
    notes = []
    if len(optional) > apart:
        notes.append(f"{len(optional) - apart} change checks had no predecessor to compare with")
    if apart:
        notes.append(f"{apart} change checks were not comparable with the predecessor")
    return f" ({'; '.join(notes)})" if notes else ""


def gate_checks(gate: Gate, metrics: dict[str, float | None], predecessor: Predecessor | None = None,
                significance: SignificanceFn | None = None, first_run_blocks: bool = False,
                unmeasured: Mapping[str, str] | None = None) -> list[Check]:
    """The checks one gate yields: an absolute check if it has min/max, a change check if it has change.
    `unmeasured`: why metrics the report lacks were not measured, by name (catalogue.unmeasured_reasons)."""
    value = metrics.get(gate.metric)
    why = (unmeasured or {}).get(gate.metric)
    checks = []
    if gate.min is not None or gate.max is not None:
        absolute = evaluate_gate(gate.metric, value, gate.min, gate.max, gate.required, why)
        if _missing(value) and gate.metric not in METRICS:
            absolute = Check(gate.metric, INCONCLUSIVE, None, absolute.bound,
                             f"{gate.metric} is not in this report (no such class or offered rate)", gate.required)
        checks.append(absolute)
    if gate.change is not None:
        sig: Significance | str | None = None
        if predecessor is not None and significance is not None and gate.metric not in predecessor.incomparable:
            sig = significance(gate.metric, gate.change.alpha)
        checks.append(evaluate_change(gate.metric, value, predecessor, gate.change, gate.higher_better, sig,
                                      gate.required, first_run_blocks, why))
    return checks


def judge(report: dict[str, Any], gates: Sequence[Gate], predecessor: Predecessor | None = None,
          significance: SignificanceFn | None = None, first_run_blocks: bool = False) -> Verdict:
    """Apply the gates to a report, against a predecessor, after the implied checks (`implied_checks`)."""
    metrics = report.get("metrics") or flatten_metrics(report)
    unmeasured = unmeasured_reasons(report)
    checks: list[Check] = implied_checks(report)
    for gate in gates:
        checks.extend(gate_checks(gate, metrics, predecessor, significance, first_run_blocks, unmeasured))
    return decide(checks)
