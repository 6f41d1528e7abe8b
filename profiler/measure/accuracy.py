"""Predictions against labels: scikit-learn metrics, coverage, and consistency under load."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from profiler.core.results import Prediction
from profiler.measure.text import TextRule


def label_key(value: Any) -> str:
    """A comparable form of a label or prediction: 3, 3.0 and "3" are the same class."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class PredictionLog:
    """The first prediction seen for each sample, and how often a later one disagreed with it.

    Memory is one slot per hold-out sample, whatever the run's length.
    """

    def __init__(self, sample_count: int) -> None:
        self.reference: list[str | None] = [None] * sample_count
        self.compared = 0
        self.inconsistent = 0

    def add(self, prediction: Prediction) -> None:
        """Take the predictions of a successful request (a Result from the engine is one too)."""
        if prediction.predictions is None:
            return
        n = len(self.reference)
        first = prediction.first_sample
        for offset, value in enumerate(prediction.predictions):
            index = (first + offset) % n
            key = label_key(value)
            seen = self.reference[index]
            if seen is None:
                self.reference[index] = key
            else:
                self.compared += 1
                if seen != key:
                    self.inconsistent += 1


def text_metrics(labels: Sequence[Any], answers: Sequence[str | None], rule: TextRule) -> dict[str, Any]:
    """Generated text against labels under `rule`: the share of answered samples whose answer matched, as
    `accuracy` and as `<mode>_match` (exact_match, normalised_match, regex_match, contains_match)."""
    pairs = [(y, a) for y, a in zip(labels, answers, strict=True) if a is not None]
    total = len(labels)
    matched = sum(1 for y, a in pairs if rule.matches(a, y))
    share = matched / len(pairs) if pairs else None
    return {"samples": total, "scored": len(pairs), "coverage": len(pairs) / total if total else 0.0,
            "match": rule.mode, "matched": matched, "accuracy": share, f"{rule.mode}_match": share}


def accuracy_metrics(labels: Sequence[Any], predictions: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy, macro and weighted precision/recall/F1, per class, confusion, over predicted samples."""
    pairs = [(label_key(y), p) for y, p in zip(labels, predictions, strict=True) if p is not None]
    total = len(labels)
    result: dict[str, Any] = {"samples": total, "scored": len(pairs), "coverage": len(pairs) / total if total else 0.0}
    if not pairs:
        for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                    "recall_weighted", "f1_weighted"):
            result[key] = None
        result["per_class"] = {}
        return result
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    classes = sorted(set(y_true) | set(y_pred), key=_class_order)
    result["accuracy"] = float(accuracy_score(y_true, y_pred))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=classes, average=average, zero_division=0.0
        )
        result[f"precision_{average}"] = float(p)
        result[f"recall_{average}"] = float(r)
        result[f"f1_{average}"] = float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0.0)
    result["per_class"] = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(classes)
    }
    result["confusion"] = {
        "labels": classes,
        "matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }
    return result


def _class_order(key: str) -> tuple[int, float, str]:
    try:
        number = float(key)
    except ValueError:
        return (1, 0.0, key)
    return (0, number, key) if math.isfinite(number) else (1, 0.0, key)
