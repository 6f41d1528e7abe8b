"""Paired significance: McNemar for accuracy, bootstrap intervals for F1 and latency percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from profiler.judge.catalogue import has_test
from profiler.judge.significance import (
    Evidence,
    StageLatency,
    _class_scores,
    bootstrap_class_metric,
    bootstrap_percentile_difference,
    compare_metric,
    histogram_counts,
    mcnemar_accuracy,
    mcnemar_p_value,
    pair,
)
from profiler.judge.verdict import Significance
from profiler.measure.latency import new_histogram

RNG = np.random.default_rng(7)
LABELS = [str(x) for x in RNG.integers(0, 4, 400)]


def noisy(labels: list[str], error_rate: float, seed: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    return [str((int(y) + 1) % 4) if rng.random() < error_rate else y for y in labels]


GOOD = noisy(LABELS, 0.05, 1)
GOOD_TOO = noisy(LABELS, 0.06, 2)
BAD = noisy(LABELS, 0.40, 3)


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted",
                                    "precision_weighted", "recall_weighted", "f1[2]", "precision[0]", "recall[3]"])
def test_vectorised_scores_match_scikit_learn(metric):
    paired = pair(LABELS, BAD, GOOD)
    k = len(paired.classes)
    counts = np.ones((1, len(paired.labels)), dtype=np.int64)
    cls = None
    if "[" in metric:
        cls = paired.classes.index(metric[metric.index("[") + 1:-1])
    ours = _class_scores(counts, paired.labels, paired.candidate, k, metric, cls)[0]
    y, p = [LABELS[i] for i in range(len(LABELS))], BAD
    if metric == "accuracy":
        expected = accuracy_score(y, p)
    elif cls is not None:
        family = metric.split("[")[0]
        prf = precision_recall_fscore_support(y, p, labels=list(paired.classes), zero_division=0.0)
        expected = prf[("precision", "recall", "f1").index(family)][cls]
    else:
        family, average = metric.split("_")
        prf = precision_recall_fscore_support(y, p, labels=list(paired.classes), average=average, zero_division=0.0)
        expected = prf[("precision", "recall", "f1").index(family)]
    assert ours == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("candidate", "predecessor", "significant", "sign"), [
    (BAD, GOOD, True, -1),        # much worse: significant, negative
    (GOOD, BAD, True, 1),         # much better
    (GOOD, GOOD, False, 0),       # identical predictions: no change at all
    (GOOD_TOO, GOOD, False, -1),  # one point worse on 400 samples: noise
])
def test_mcnemar_and_bootstrap_agree_on_what_is_real(candidate, predecessor, significant, sign):
    paired = pair(LABELS, candidate, predecessor)
    test = mcnemar_accuracy(paired)
    assert isinstance(test, Significance)
    assert test.significant is significant
    assert np.sign(round(test.difference, 9)) == sign
    assert 0.0 <= test.p_value <= 1.0
    interval = bootstrap_class_metric(paired, "f1_macro", resamples=500)
    assert isinstance(interval, Significance)
    assert interval.significant is significant
    assert interval.ci_low <= interval.difference <= interval.ci_high


def test_bootstrap_is_reproducible_and_narrows_with_confidence():
    paired = pair(LABELS, GOOD_TOO, GOOD)
    a = bootstrap_class_metric(paired, "f1_macro", alpha=0.05, resamples=400, seed=3)
    b = bootstrap_class_metric(paired, "f1_macro", alpha=0.05, resamples=400, seed=3)
    wide = bootstrap_class_metric(paired, "f1_macro", alpha=0.01, resamples=400, seed=3)
    assert a == b
    assert wide.ci_low <= a.ci_low and wide.ci_high >= a.ci_high


# (b, c, p): statsmodels 0.15.0 with scipy 1.17.1, computed before statsmodels was removed (issue 11):
# float(statsmodels.stats.contingency_tables.mcnemar([[7, b], [c, 3]], exact=b + c < 25, correction=True).pvalue)
# with b samples only the candidate got right and c only the predecessor. Exact below 25 discordant, chi-square
# from 25 on (the 24/25 boundary is in the table). An exhaustive run of every b + c < 400 matched bit for bit too.
STATSMODELS_MCNEMAR = [
    (0, 1, 1.0),
    (1, 0, 1.0),
    (3, 3, 1.0),
    (0, 10, 0.001953125),
    (2, 9, 0.0654296875),
    (9, 2, 0.0654296875),
    (12, 12, 1.0),
    (5, 19, 0.006610751152038574),
    (0, 24, 1.1920928955078125e-07),
    (11, 13, 0.8388197422027588),
    (12, 13, 1.0),
    (20, 5, 0.005110260660855866),
    (0, 25, 1.5866563039511885e-06),
    (30, 70, 9.619268803520536e-05),
    (60, 40, 0.05743311963200335),
    (100, 100, 0.9436280222029834),
    (400, 350, 0.07357826163585493),
    (1000, 1200, 2.2085222894420412e-05),
]


@pytest.mark.parametrize(("only_candidate", "only_predecessor", "statsmodels_p"), STATSMODELS_MCNEMAR)
def test_mcnemar_gives_statsmodels_p_values(only_candidate, only_predecessor, statsmodels_p):
    assert mcnemar_p_value(only_candidate, only_predecessor) == statsmodels_p
    # The same figure through the accuracy test: 7 samples both runs got right, 3 both got wrong.
    right, wrong = "1", "0"
    candidate = [right] * only_candidate + [wrong] * only_predecessor + [right] * 7 + [wrong] * 3
    predecessor = [wrong] * only_candidate + [right] * only_predecessor + [right] * 7 + [wrong] * 3
    test = mcnemar_accuracy(pair([right] * len(candidate), candidate, predecessor))
    assert isinstance(test, Significance)
    assert test.p_value == statsmodels_p
    assert test.method == ("McNemar exact" if only_candidate + only_predecessor < 25 else "McNemar")
    assert test.difference == pytest.approx((only_candidate - only_predecessor) / len(candidate))


@pytest.mark.parametrize(("only_candidate", "only_predecessor", "expected"), [
    (0, 0, 1.0),            # no discordant sample: no evidence of a change
    (-1, 3, ValueError),
    (3, -1, ValueError),
])
def test_mcnemar_p_value_edges(only_candidate, only_predecessor, expected):
    if expected is ValueError:
        with pytest.raises(ValueError, match="cannot be negative"):
            mcnemar_p_value(only_candidate, only_predecessor)
    else:
        assert mcnemar_p_value(only_candidate, only_predecessor) == expected


@pytest.mark.parametrize(("labels", "candidate", "predecessor", "reason"), [
    ([], [], [], "no sample was predicted by both runs"),
    (["1", "2"], [None, "2"], ["1", None], "no sample was predicted by both runs"),
])
def test_nothing_to_pair(labels, candidate, predecessor, reason):
    paired = pair(labels, candidate, predecessor)
    assert mcnemar_accuracy(paired) == reason
    assert bootstrap_class_metric(paired, "f1_macro") == reason


def test_unpredicted_samples_are_left_out_and_sizes_must_match():
    paired = pair(["1", "2", "3"], ["1", None, "3"], ["1", "2", "2"])
    assert len(paired.labels) == 2
    with pytest.raises(ValueError, match="hold-out sizes differ"):
        pair(["1", "2"], ["1"], ["1", "2"])
    assert bootstrap_class_metric(paired, "f1[9]") == "class '9' does not occur in the paired samples"


def encoded(values_us: list[int]) -> str:
    histogram = new_histogram()
    for value in values_us:
        histogram.record_value(value)
    return histogram.encode().decode("ascii")


def test_histogram_percentiles_match_hdr():
    rng = np.random.default_rng(1)
    values = [int(v) for v in rng.lognormal(8, 1, 5000)]
    histogram = new_histogram()
    for v in values:
        histogram.record_value(v)
    buckets, counts = histogram_counts(histogram.encode())
    assert counts.sum() == 5000
    from profiler.judge.significance import _percentiles

    for percentile in (50.0, 90.0, 99.0, 99.9):
        ours = _percentiles(buckets, counts[np.newaxis, :], percentile)[0]
        assert ours == histogram.get_value_at_percentile(percentile)


@pytest.mark.parametrize(("shift_us", "significant"), [(0, False), (2000, True), (-2000, True)])
def test_latency_percentile_difference(shift_us, significant):
    rng = np.random.default_rng(2)
    base = [int(v) for v in rng.normal(10_000, 1_000, 3000).clip(1)]
    other = [int(v) for v in rng.normal(10_000 + shift_us, 1_000, 3000).clip(1)]
    test = bootstrap_percentile_difference(histogram_counts(encoded(other)), histogram_counts(encoded(base)), 99.0,
                                           resamples=300)
    assert isinstance(test, Significance)
    assert test.significant is significant
    if shift_us:
        assert np.sign(test.difference) == np.sign(shift_us)


@pytest.mark.parametrize("percentile", [0.0, -1.0, 101.0, float("nan")])
def test_bad_percentile(percentile):
    one = histogram_counts(encoded([100]))
    with pytest.raises(ValueError, match="percentile"):
        bootstrap_percentile_difference(one, one, percentile)


def test_empty_histogram_cannot_be_compared():
    empty = (np.array([], dtype=np.float64), np.array([], dtype=np.int64))
    assert "no successful request" in bootstrap_percentile_difference(empty, histogram_counts(encoded([5])), 99.0)


def evidence(predictions, latencies_by_rate):
    return Evidence(list(LABELS), list(predictions),
                    [StageLatency(f"stage-{i}", rate, encoded(v)) for i, (rate, v) in enumerate(latencies_by_rate)])


@pytest.mark.parametrize(("metric", "expected"), [
    ("accuracy", "McNemar"),
    ("f1_macro", "paired bootstrap"),
    ("recall[1]", "paired bootstrap"),
    ("latency_p99_ms", "bootstrap"),
    ("latency_p50_ms@10rps", "bootstrap"),
    ("latency_p50_ms@20rps", "no latency histogram at 20 rps in the candidate"),
    ("memory_peak_bytes", None),
    ("latency_max_ms", None),
])
def test_compare_metric_dispatch(metric, expected):
    cand = evidence(BAD, [(10.0, [1000] * 50 + [3000] * 50)])
    prev = evidence(GOOD, [(10.0, [1000] * 100)])
    result = compare_metric(metric, 0.05, cand, prev, resamples=100)
    if expected is None:
        assert result is None
        assert not has_test(metric)
    elif isinstance(result, str):
        assert result == expected
    else:
        assert result.method.startswith(expected)
        assert has_test(metric)
    if metric == "latency_p99_ms":
        assert result.difference == pytest.approx(2.0, rel=0.01)   # milliseconds


def test_compare_metric_refuses_different_labels():
    cand = evidence(GOOD, [])
    prev = Evidence(["x"] * len(LABELS), list(GOOD), [])
    assert compare_metric("accuracy", 0.05, cand, prev) == "the two runs' hold-out labels differ"


def test_exact_percentile_replicates_match_a_multinomial_bootstrap():
    from profiler.judge.significance import _draw_percentiles, _percentiles

    rng = np.random.default_rng(5)
    values, counts = histogram_counts(encoded([int(v) for v in rng.lognormal(7, 0.8, 400)]))
    n = int(counts.sum())
    exact = _draw_percentiles(values, counts, 95.0, 20_000, np.random.default_rng(1))
    brute = _percentiles(values, np.random.default_rng(2).multinomial(n, counts / n, size=20_000), 95.0)
    for q in (0.025, 0.25, 0.5, 0.75, 0.975):
        assert np.quantile(exact, q) == pytest.approx(np.quantile(brute, q), rel=0.05)
    assert set(np.unique(exact)) <= set(values)
