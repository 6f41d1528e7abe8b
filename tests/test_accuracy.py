from __future__ import annotations

import pytest
from sklearn.metrics import f1_score

from profiler.core.results import OK, Prediction, Result
from profiler.measure.accuracy import PredictionLog, accuracy_metrics, label_key


@pytest.mark.parametrize(("value", "key"), [(3, "3"), (3.0, "3"), ("3", "3"), (True, "true"), ("cat", "cat"),
                                            (2.5, "2.5")])
def test_label_key(value: object, key: str) -> None:
    assert label_key(value) == key


def test_metrics_match_scikit_learn() -> None:
    labels = [0, 1, 2, 2, 1, 0, 2, 1]
    preds = ["0", "2", "2", "2", "1", "0", "1", "1"]
    m = accuracy_metrics(labels, preds)
    y = [str(v) for v in labels]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["f1_macro"] == pytest.approx(f1_score(y, preds, average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, preds, average="weighted"))
    assert m["coverage"] == 1.0
    assert m["per_class"]["2"]["support"] == 3
    assert m["confusion"]["matrix"][1] == [0, 2, 1]


def test_unpredicted_samples_lower_coverage_not_accuracy() -> None:
    m = accuracy_metrics([1, 1, 0, 0], ["1", None, "0", None])
    assert (m["accuracy"], m["coverage"], m["scored"]) == (1.0, 0.5, 2)


def test_no_predictions_gives_none_not_zero() -> None:
    m = accuracy_metrics([1, 0], [None, None])
    assert m["accuracy"] is None and m["f1_macro"] is None and m["coverage"] == 0.0


def test_prediction_log_keeps_first_and_counts_disagreements() -> None:
    log = PredictionLog(3)
    log.add(Prediction(2, 2, OK, [5, 6]))  # samples 2 and 0 (wraps)
    log.add(Prediction(0, 1, OK, [6]))  # agrees
    log.add(Result(1, 2, 1, 10, 11, 12, OK, [4]))  # disagrees; the engine's Result is a Prediction too
    log.add(Prediction(1, 1, "timeout", None))
    assert log.reference == ["6", None, "5"]
    assert (log.compared, log.inconsistent) == (2, 1)
