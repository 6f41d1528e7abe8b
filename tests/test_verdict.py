"""Gate semantics: absolute bounds, change bounds against the predecessor, significance, the verdict."""

from __future__ import annotations

import math

import pytest

from profiler.judge.catalogue import (
    accuracy_metrics,
    flatten_metrics,
    greater_is_better,
    normalise_metric,
    stage_metrics,
)
from profiler.judge.verdict import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    ChangeBound,
    Check,
    Gate,
    Predecessor,
    Significance,
    decide,
    evaluate_change,
    evaluate_gate,
    implied_checks,
    judge,
    judge_change,
    scaled_improvement,
)

NAN = math.nan


@pytest.mark.parametrize(("value", "lower", "upper", "status"), [
    (0.95, 0.9, None, PASS),
    (0.9, 0.9, None, PASS),            # a bound is inclusive
    (0.89, 0.9, None, FAIL),
    (50.0, None, 100.0, PASS),
    (100.0, None, 100.0, PASS),
    (100.1, None, 100.0, FAIL),
    (0.5, 0.0, 1.0, PASS),
    (-0.1, 0.0, 1.0, FAIL),
    (1.1, 0.0, 1.0, FAIL),
    (0.0, 0.0, None, PASS),            # zero is a value, not a missing one
    (None, 0.9, None, INCONCLUSIVE),   # missing never passes
    (NAN, 0.9, None, INCONCLUSIVE),    # NaN never passes
    (NAN, None, 100.0, INCONCLUSIVE),
    (math.inf, None, 100.0, FAIL),
    (-math.inf, 0.0, None, FAIL),
])
def test_absolute_gate(value, lower, upper, status):
    check = evaluate_gate("m", value, lower, upper)
    assert check.status == status
    assert check.kind == "absolute"
    if status == INCONCLUSIVE:
        assert check.value is None and "not measured" in check.reason


PRED = Predecessor("run-1", {"f1_macro": 0.90, "latency_p99_ms": 100.0, "zero": 0.0, "nan": NAN, "none": None})


def sig(significant: bool, difference: float = 0.0) -> Significance:
    return Significance("paired bootstrap", difference, significant, ci_low=-0.1, ci_high=0.1, samples=100)


# (metric, value, change bound, higher is better, significance, expected status, reason fragment)
CHANGE_CASES = [
    # tolerated regression, absolute
    ("f1_macro", 0.895, ChangeBound(max_worse=0.01), True, None, PASS, "worse by 0.005"),
    ("f1_macro", 0.89, ChangeBound(max_worse=0.01), True, None, PASS, "within the tolerated"),
    ("f1_macro", 0.88, ChangeBound(max_worse=0.01), True, None, FAIL, "more than the tolerated 0.01"),
    ("f1_macro", 0.95, ChangeBound(max_worse=0.0), True, None, PASS, "better by 0.05"),
    ("f1_macro", 0.8999, ChangeBound(max_worse=0.0), True, None, FAIL, "worse by 0.0001"),
    # lower is better: latency up is worse
    ("latency_p99_ms", 120.0, ChangeBound(max_worse=10.0), False, None, FAIL, "worse by 20"),
    ("latency_p99_ms", 80.0, ChangeBound(max_worse=10.0), False, None, PASS, "better by 20"),
    ("latency_p99_ms", 105.0, ChangeBound(max_worse=10.0), False, None, PASS, "worse by 5"),
    # relative: fractions of the predecessor's value
    ("latency_p99_ms", 109.0, ChangeBound(max_worse=0.1, relative=True), False, None, PASS, "worse by 0.09"),
    ("latency_p99_ms", 111.0, ChangeBound(max_worse=0.1, relative=True), False, None, FAIL, "worse by 0.11"),
    ("f1_macro", 0.945, ChangeBound(min_better=0.05, relative=True), True, None, PASS, "better by 0.05"),
    ("f1_macro", 0.94, ChangeBound(min_better=0.05, relative=True), True, None, FAIL, "less than the required"),
    # required improvement (MLflow min_absolute_change)
    ("f1_macro", 0.92, ChangeBound(min_better=0.01), True, None, PASS, "at least the required improvement"),
    ("f1_macro", 0.905, ChangeBound(min_better=0.01), True, None, FAIL, "less than the required improvement"),
    ("f1_macro", 0.90, ChangeBound(min_better=0.0), True, None, PASS, "better by 0"),
    # an explicit direction overrides the metric's own
    ("f1_macro", 0.95, ChangeBound(max_worse=0.01), False, None, FAIL, "worse by 0.05"),
    # significance required
    ("f1_macro", 0.80, ChangeBound(max_worse=0.01, significant=True), True, sig(True, -0.1), FAIL, "significant"),
    ("f1_macro", 0.80, ChangeBound(max_worse=0.01, significant=True), True, sig(False, -0.1), PASS,
     "not counted; inside the noise"),
    ("f1_macro", 0.95, ChangeBound(min_better=0.01, significant=True), True, sig(True, 0.05), PASS, "significant"),
    ("f1_macro", 0.95, ChangeBound(min_better=0.01, significant=True), True, sig(False, 0.05), FAIL,
     "a significant improvement is required"),
    ("f1_macro", 0.80, ChangeBound(max_worse=0.01, significant=True), True, "no predictions stored", INCONCLUSIVE,
     "could not be tested: no predictions stored"),
    ("f1_macro", 0.80, ChangeBound(max_worse=0.01, significant=True), True, None, INCONCLUSIVE,
     "no significance test exists"),
    # without a required significance, the test is still reported
    ("f1_macro", 0.80, ChangeBound(max_worse=0.01), True, sig(False, -0.1), FAIL, "inside the noise"),
    # missing, NaN, zero
    ("f1_macro", None, ChangeBound(max_worse=0.01), True, None, INCONCLUSIVE, "was not measured"),
    ("f1_macro", NAN, ChangeBound(max_worse=0.01), True, None, INCONCLUSIVE, "was not measured"),
    ("nan", 1.0, ChangeBound(max_worse=0.01), True, None, INCONCLUSIVE, "not measured in the predecessor"),
    ("none", 1.0, ChangeBound(max_worse=0.01), True, None, INCONCLUSIVE, "not measured in the predecessor"),
    ("absent", 1.0, ChangeBound(max_worse=0.01), True, None, INCONCLUSIVE, "not measured in the predecessor"),
    ("zero", 1.0, ChangeBound(max_worse=0.1, relative=True), False, None, INCONCLUSIVE, "undefined"),
    ("zero", 0.0, ChangeBound(max_worse=0.1, relative=True), False, None, PASS, "within the tolerated"),
    ("zero", 0.5, ChangeBound(max_worse=1.0), False, None, PASS, "worse by 0.5"),
]


@pytest.mark.parametrize(("metric", "value", "change", "higher", "significance", "status", "fragment"), CHANGE_CASES)
def test_change_gate(metric, value, change, higher, significance, status, fragment):
    check = evaluate_change(metric, value, PRED, change, higher, significance)
    assert check.status == status, check.reason
    assert fragment in check.reason
    assert check.kind == "change"
    assert check.required
    expected_previous = PRED.metrics.get(metric)
    if expected_previous is not None and not math.isnan(expected_previous) and status != INCONCLUSIVE:
        assert check.predecessor == expected_previous


@pytest.mark.parametrize(("blocks", "required"), [(False, False), (True, True)])
def test_change_gate_without_predecessor(blocks, required):
    check = evaluate_change("f1_macro", 0.9, None, ChangeBound(max_worse=0.01), True, None, True, blocks)
    assert check.status == INCONCLUSIVE
    assert check.required is required
    assert "no predecessor" in check.reason


@pytest.mark.parametrize(("statuses", "required", "expected"), [
    ([PASS, PASS], [True, True], PASS),
    ([PASS, FAIL], [True, True], FAIL),
    ([PASS, INCONCLUSIVE], [True, True], INCONCLUSIVE),
    ([FAIL, INCONCLUSIVE], [True, True], FAIL),
    ([PASS, FAIL], [True, False], PASS),            # an optional failure does not block
    ([PASS, INCONCLUSIVE], [True, False], PASS),
    ([INCONCLUSIVE], [False], INCONCLUSIVE),       # nothing required could be judged
    ([], [], INCONCLUSIVE),
])
def test_decide(statuses, required, expected):
    checks = [Check(f"m{i}", s, 1.0, "", s, r) for i, (s, r) in enumerate(zip(statuses, required, strict=True))]
    assert decide(checks).status == expected


@pytest.mark.parametrize(("name", "canonical"), [
    ("accuracy", "accuracy"),
    ("f1[3]", "f1[3]"),
    ("precision[cat]", "precision[cat]"),
    ("latency_p99_ms@100rps", "latency_p99_ms@100rps"),
    ("latency_p99_ms@100.0rps", "latency_p99_ms@100rps"),
    ("latency_p999_ms@12.5rps", "latency_p999_ms@12.5rps"),
    ("error_rate@50rps", "error_rate@50rps"),
])
def test_metric_names(name, canonical):
    assert normalise_metric(name) == canonical


@pytest.mark.parametrize("name", ["acuracy", "", "f1[]", "latency_p99_ms@0rps", "latency_p99_ms@-5rps",
                                  "memory_peak_bytes@100rps", "f1_macro[3]", "latency_p99_ms@fastrps"])
def test_unknown_metric_names(name):
    with pytest.raises(ValueError, match=r"unknown metric .*known: accuracy"):
        normalise_metric(name)


@pytest.mark.parametrize(("name", "higher"), [
    ("accuracy", True), ("f1[3]", True), ("max_sustained_rps", True), ("capacity_per_node_rps", True),
    ("latency_p99_ms", False), ("latency_p99_ms@100rps", False), ("error_rate", False),
    ("memory_peak_bytes", False), ("cost_per_million", False), ("replicas_needed", False),
])
def test_direction(name, higher):
    assert greater_is_better(name) is higher


def stage(rate: float, p99: float | None, warmup: bool = False, errors: int = 0) -> dict:
    keys = ("p50", "p90", "p95", "p99", "p999", "max")
    latency = dict.fromkeys(keys) if p99 is None else {k: p99 / 2 if k == "p50" else p99 for k in keys}
    return {"warmup": warmup, "offered_rps": rate, "sent": 100, "unsent": 0, "errors": errors,
            "error_rate": errors / 100, "latency_ms": latency}


REPORT = {
    "accuracy": {"accuracy": 0.9, "f1_macro": 0.8, "scored": 10,
                 "per_class": {"0": {"precision": 1.0, "recall": 0.5, "f1": 0.6667}, "1": {"precision": 0.5,
                                                                                        "recall": 1.0, "f1": 0.6667}}},
    "stages": [stage(10, 500.0, warmup=True), stage(10, 20.0), stage(50, 40.0, errors=2), stage(50, 60.0),
               stage(100, None, errors=100)],
    "capacity": {"max_sustained_rps": 50.0},
    "resources": {"rss_peak_bytes": 100},
    "requirements": {"capacity_per_node_rps": 500.0},
}


def test_flatten_metrics_per_class_and_per_rate():
    metrics = flatten_metrics(REPORT)
    assert metrics["f1[0]"] == pytest.approx(0.6667)
    assert metrics["recall[1]"] == 1.0
    assert metrics["latency_p99_ms"] == 60.0            # worst measured stage; warm-up left out
    assert metrics["latency_p99_ms@10rps"] == 20.0
    assert metrics["latency_p99_ms@50rps"] == 60.0      # two stages at one rate: the worse one
    assert metrics["latency_p99_ms@100rps"] is None     # no successful request
    assert metrics["error_rate@50rps"] == 0.02
    assert metrics["error_rate@100rps"] == 1.0
    assert metrics["capacity_per_node_rps"] == 500.0
    assert metrics["cpu_cores"] is None
    assert "latency_p99_ms@10rps" in metrics and "latency_p99_ms@500rps" not in metrics


def test_judge_gates_on_qualified_metrics():
    gates = [Gate("f1[0]", min=0.6), Gate("latency_p99_ms@50rps", max=50.0), Gate("f1[7]", min=0.5),
             Gate("accuracy", min=0.85)]
    verdict = judge(REPORT, gates)
    statuses = {c.metric: c.status for c in verdict.checks}
    assert statuses == {"f1[0]": PASS, "latency_p99_ms@50rps": FAIL, "f1[7]": INCONCLUSIVE, "accuracy": PASS}
    missing = next(c for c in verdict.checks if c.metric == "f1[7]")
    assert "no such class" in missing.reason
    assert verdict.status == FAIL


def test_judge_change_uses_significance_function():
    asked = []

    def significance(metric: str, alpha: float) -> Significance:
        asked.append((metric, alpha))
        return sig(True, -0.1)

    gate = Gate("f1_macro", min=0.5, change=ChangeBound(max_worse=0.01, significant=True, alpha=0.01))
    verdict = judge(REPORT, [gate], Predecessor("run-1", {"f1_macro": 0.9}), significance)
    assert [c.kind for c in verdict.checks] == ["absolute", "change"]
    assert verdict.checks[1].status == FAIL
    assert verdict.checks[1].significance is not None and verdict.checks[1].significance["significant"]
    assert asked == [("f1_macro", 0.01)]
    assert verdict.status == FAIL


def test_first_run_passes_on_absolute_gates_only():
    gate = Gate("f1_macro", min=0.5, change=ChangeBound(max_worse=0.01))
    verdict = judge(REPORT, [gate])
    assert verdict.status == PASS
    assert "1 change checks had no predecessor" in verdict.reason
    assert judge(REPORT, [gate], first_run_blocks=True).status == INCONCLUSIVE


@pytest.mark.parametrize(("better", "previous", "relative", "expected"), [
    (0.05, 0.9, False, 0.05),
    (-0.09, 0.9, True, -0.1),
    (5.0, -50.0, True, 0.1),           # a fraction of the predecessor's size, whatever its sign
    (0.0, 0.0, True, 0.0),             # no move from 0
    (0.1, 0.0, True, None),            # a move from 0: undefined
    (0.1, 0.0, False, 0.1),
    (NAN, 0.9, True, NAN),
])
def test_scaled_improvement(better, previous, relative, expected):
    got = scaled_improvement(better, previous, relative)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(("change", "better", "is_real", "status", "why"), [
    (ChangeBound(max_worse=0.01), -0.005, False, PASS, "within the tolerated 0.01"),
    (ChangeBound(max_worse=0.01), -0.01 - 1e-12, False, PASS, "within the tolerated 0.01"),   # the slack
    (ChangeBound(max_worse=0.01), -0.02, False, FAIL, "more than the tolerated 0.01"),
    (ChangeBound(), -0.02, False, FAIL, "more than the tolerated 0"),                          # no bound: 0
    (ChangeBound(max_worse=0.01, significant=True), -0.02, False, PASS, "beyond the tolerated 0.01 but not counted"),
    (ChangeBound(max_worse=0.01, significant=True), -0.02, True, FAIL, "more than the tolerated 0.01"),
    (ChangeBound(min_better=0.01), 0.02, False, PASS, "at least the required improvement 0.01"),
    (ChangeBound(min_better=0.01), 0.0, False, FAIL, "less than the required improvement 0.01"),
    (ChangeBound(min_better=0.01, significant=True), 0.02, False, FAIL, "a significant improvement is required"),
    (ChangeBound(min_better=0.01, significant=True), 0.02, True, PASS, "at least the required improvement"),
    (ChangeBound(max_worse=0.0), 0.0, False, PASS, "within the tolerated 0"),                   # no change at all
    (ChangeBound(max_worse=0.0), -1e-6, False, FAIL, "more than the tolerated 0"),
])
def test_judge_change(change, better, is_real, status, why):
    got, reason = judge_change(change, better, 1e-9, is_real)
    assert got == status
    assert why in reason


@pytest.mark.parametrize(("accuracy", "expected"), [
    ({}, {"accuracy": None, "coverage": None}),
    ({"accuracy": 0.9, "scored": 100}, {"accuracy": 0.9, "inconsistent_rate": 0.0}),
    ({"scored": 100, "consistency": {"compared": 40, "inconsistent": 10}}, {"inconsistent_rate": 0.25}),
    ({"scored": 0, "consistency": {"compared": 0, "inconsistent": 0}}, {"inconsistent_rate": "absent"}),
    ({"f1_macro": NAN}, {"f1_macro": NAN, "inconsistent_rate": "absent"}),
])
def test_accuracy_metrics(accuracy, expected):
    got = accuracy_metrics(accuracy)
    for key, value in expected.items():
        if value == "absent":
            assert key not in got
        elif value is None or not math.isnan(value):
            assert got[key] == value, key
        else:
            assert math.isnan(got[key])


def measured(rps, p99, sent=100, unsent=0, errors=0, warmup=False, limited=False):
    return {"warmup": warmup, "offered_rps": rps, "sent": sent, "unsent": unsent, "errors": errors,
            "latency_ms": {k: (p99 if k == "p99" else None) for k in ("p50", "p90", "p95", "p99", "p999", "max")},
            "generator": {"limited": limited}}


@pytest.mark.parametrize(("stages", "expected"), [
    ([], {"error_rate": "absent", "latency_p99_ms": None, "generator_limited_stages": "absent"}),
    ([measured(10, 5.0, warmup=True)], {"error_rate": "absent", "latency_p99_ms": None}),   # warm-up is not measured
    ([measured(10, 5.0), measured(20, 9.0, errors=5, unsent=5, limited=True)],
     {"error_rate": 10 / 205, "latency_p99_ms": 9.0, "latency_p50_ms": None, "generator_limited_stages": 1.0}),
    ([measured(10, None, sent=0)], {"error_rate": "absent", "latency_p99_ms": None, "generator_limited_stages": 0.0}),
])
def test_stage_metrics(stages, expected):
    got = stage_metrics(stages)
    for key, value in expected.items():
        if value == "absent":
            assert key not in got, key
        else:
            assert got[key] == (pytest.approx(value) if value is not None else None), key


def _stage(name: str, rate: float, error_rate: float | None, sustained: bool, limited: bool = False,
           service_p99_ms: float | None = None, lag_p99_ms: float | None = None) -> dict:
    return {"name": name, "offered_rps": rate, "warmup": False, "error_rate": error_rate,
            "objective": {"sustained": sustained, "reasons": [] if sustained else ["p99 900.0 ms > 100 ms"]},
            "generator": {"limited": limited}, "service_time_ms": {"p99": service_p99_ms},
            "schedule_lag_ms": {"p99": lag_p99_ms}}


OBJECTIVE = {"percentile": 99.0, "latency_ms": 100.0, "max_error_rate": 0.01}


@pytest.mark.parametrize(
    ("method", "stages", "max_rps", "expected"),
    [
        # Half the requests failed in every stage: no gate can make that a pass.
        ("stages", [_stage("stage-1", 50, 0.5, False), _stage("stage-2", 100, 0.5, False)], None,
         {"error_budget": FAIL, "objective": FAIL}),
        # One stage over budget out of three fails the budget, though the objective was met below it.
        ("stages", [_stage("stage-1", 50, 0.0, True), _stage("stage-2", 100, 0.02, False),
                    _stage("stage-3", 50, 0.0, True)], 50.0, {"error_budget": FAIL, "objective": PASS}),
        ("stages", [_stage("stage-1", 50, 0.01, True)], 50.0, {"error_budget": PASS, "objective": PASS}),
        # A stage that sent nothing: its error rate is unknown, not zero.
        ("stages", [_stage("stage-1", 50, 0.0, True), _stage("stage-2", 100, None, False)], 50.0,
         {"error_budget": INCONCLUSIVE, "objective": PASS}),
        ("stages", [], None, {"error_budget": INCONCLUSIVE, "objective": INCONCLUSIVE}),
        # A capacity search breaks the objective above the knee on purpose: only the objective check applies.
        ("search", [_stage("stage-1", 10, 0.0, True), _stage("stage-2", 20, 0.4, False)], 10.0,
         {"objective": PASS}),
        ("search", [_stage("stage-1", 10, 0.3, False)], None, {"objective": FAIL}),
        # Every stage that missed was the generator's limit, not the model's: not the model's failure.
        ("stages", [_stage("stage-1", 50, 0.0, False, limited=True)], None,
         {"error_budget": PASS, "objective": INCONCLUSIVE}),
        ("stages", [_stage("stage-1", 50, 0.0, False, limited=True), _stage("stage-2", 60, 0.0, False)], None,
         {"error_budget": PASS, "objective": FAIL}),
        # A busy generator cannot excuse a model whose own service time (from the actual send) is over the
        # objective by more than the lag the generator added; within that lag it can.
        ("stages", [_stage("stage-1", 50, 0.0, False, limited=True, service_p99_ms=300.0, lag_p99_ms=40.0)], None,
         {"error_budget": PASS, "objective": FAIL}),
        ("stages", [_stage("stage-1", 50, 0.0, False, limited=True, service_p99_ms=130.0, lag_p99_ms=40.0)], None,
         {"error_budget": PASS, "objective": INCONCLUSIVE}),
        # What a real report holds when stages were measured and none sustained: 0.0 rps, not None.
        ("stages", [_stage("stage-1", 40, 0.0, False)], 0.0, {"error_budget": PASS, "objective": FAIL}),
        ("search", [_stage("stage-1", 10, 0.0, False)], 0.0, {"objective": FAIL}),
    ],
)
def test_implied_checks(method, stages, max_rps, expected):
    report = {"objective": OBJECTIVE, "stages": stages, "capacity": {"method": method, "max_sustained_rps": max_rps}}
    checks = implied_checks(report)
    assert {c.metric: c.status for c in checks} == expected
    assert all(c.required and c.kind == "implied" for c in checks)


@pytest.mark.parametrize(
    ("gates", "error_rate", "status"),
    [
        ([Gate("latency_p99_ms", max=200.0)], 0.5, FAIL),     # a latency gate alone cannot pass half failing
        ([Gate("latency_p99_ms", max=200.0)], 0.0, PASS),
        ([], 0.0, INCONCLUSIVE),                              # nothing asked: nothing judged
        ([], 0.5, FAIL),                                      # but a broken budget still fails
    ],
)
def test_the_implied_checks_hold_whatever_the_gates(gates, error_rate, status):
    stage = _stage("stage-1", 50, error_rate, error_rate == 0.0)
    stage["latency_ms"] = {"p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 2.0, "p999": 2.0, "max": 2.0}
    stage.update(sent=100, unsent=0, errors=int(100 * error_rate))
    report = {"objective": OBJECTIVE, "stages": [stage],
              "capacity": {"method": "stages", "max_sustained_rps": 50.0 if error_rate == 0.0 else None}}
    verdict = judge(report, gates)
    assert verdict.status == status
    if status == FAIL:
        assert "broke the error budget" in verdict.reason
