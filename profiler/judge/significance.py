"""Is a change real or noise? Paired tests of a candidate run against its predecessor. Pure.

- accuracy: McNemar's test on the samples both runs predicted (exact binomial below EXACT_BELOW
  discordant samples, else chi-square with continuity correction; scipy);
- precision, recall, F1 (macro, weighted, per class) and accuracy: a paired bootstrap interval of
  the difference, resampling hold-out samples (both runs' predictions for one sample stay together);
- latency percentiles: a bootstrap interval of the difference, resampling each run's HDR histogram.

The class-metric bootstrap resamples cell counts with one multinomial draw per replicate (a cell
is a distinct (label, candidate, predecessor) triple), so its cost follows the number of distinct
cells, not the hold-out size. The latency bootstrap draws each percentile replicate from its exact
distribution over the HDR buckets, so its cost follows the bucket count, not the request count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from scipy.stats import binom, binomtest, chi2

from profiler.core.hdr import recorded_buckets
from profiler.judge.catalogue import CLASS_METRICS, LATENCY_METRICS, base_metric
from profiler.judge.verdict import Predecessor, Significance

RESAMPLES = 2000
EXACT_BELOW = 25
"""McNemar uses the exact binomial test when fewer than this many samples were discordant."""
_CELLS_PER_CHUNK = 4_000_000
"""Bounds the memory of one block of bootstrap replicates (replicates x cells integers)."""


@dataclass(frozen=True, slots=True)
class Paired:
    """Labels and both runs' predictions for the same hold-out samples, as integer class codes.

    Only samples both runs predicted are kept; `classes` are all classes seen in labels or predictions.
    """

    labels: NDArray[np.int64]
    candidate: NDArray[np.int64]
    predecessor: NDArray[np.int64]
    classes: tuple[str, ...]


def pair(labels: Sequence[str], candidate: Sequence[str | None], predecessor: Sequence[str | None]) -> Paired:
    """Align by sample index; ValueError when the lengths differ (not the same hold-out set)."""
    if not len(labels) == len(candidate) == len(predecessor):
        raise ValueError(f"hold-out sizes differ: {len(labels)} labels, {len(candidate)} and "
                         f"{len(predecessor)} predictions")
    kept = [(y, c, p) for y, c, p in zip(labels, candidate, predecessor, strict=True)
            if c is not None and p is not None]
    classes = tuple(sorted({x for triple in kept for x in triple}))
    code = {c: i for i, c in enumerate(classes)}
    arrays = [np.array([code[t[k]] for t in kept], dtype=np.int64) for k in range(3)]
    return Paired(arrays[0], arrays[1], arrays[2], classes)


def mcnemar_p_value(only_candidate: int, only_predecessor: int) -> float:
    """Two-sided p-value of McNemar's test from the discordant counts (samples only one run got right).

    Under no change each discordant sample favours either run with probability 1/2. Below
    EXACT_BELOW discordant samples: the exact binomial test; from there on: the chi-square statistic
    (|b - c| - 1)^2 / (b + c) with continuity correction, 1 degree of freedom. These are the figures of
    statsmodels' mcnemar(table, exact=b + c < EXACT_BELOW, correction=True), which this replaced
    (tests/test_significance.py holds its values). No discordant sample: 1.0 (no evidence of a change).
    """
    if only_candidate < 0 or only_predecessor < 0:
        raise ValueError(f"discordant counts cannot be negative: {only_candidate}, {only_predecessor}")
    discordant = only_candidate + only_predecessor
    if discordant == 0:
        return 1.0
    if discordant < EXACT_BELOW:
        return float(binomtest(only_candidate, discordant, 0.5).pvalue)
    statistic = (abs(only_candidate - only_predecessor) - 1) ** 2 / discordant
    return float(chi2.sf(statistic, 1))


def mcnemar_accuracy(paired: Paired, alpha: float = 0.05) -> Significance | str:
    """McNemar's test of the accuracy difference (candidate minus predecessor) on paired samples."""
    n = len(paired.labels)
    if n == 0:
        return "no sample was predicted by both runs"
    right_c = paired.candidate == paired.labels
    right_p = paired.predecessor == paired.labels
    only_c = int(np.sum(right_c & ~right_p))
    only_p = int(np.sum(~right_c & right_p))
    difference = (only_c - only_p) / n
    if only_c + only_p == 0:
        return Significance("McNemar", 0.0, False, p_value=1.0, samples=n)
    exact = only_c + only_p < EXACT_BELOW
    p_value = mcnemar_p_value(only_c, only_p)
    return Significance("McNemar" + (" exact" if exact else ""), difference, p_value < alpha, p_value=p_value,
                        samples=n)


@dataclass(frozen=True, slots=True)
class _Tallies:
    """Per replicate (row): true positives, true and predicted counts per class, and right answers."""

    tp: NDArray[np.float64]
    true_n: NDArray[np.float64]
    pred_n: NDArray[np.float64]
    correct: NDArray[np.float64]
    total: NDArray[np.float64]


def _tallies(weights: NDArray[np.float64], truth: NDArray[np.int64], pred: NDArray[np.int64], k: int) -> _Tallies:
    """Confusion tallies of every replicate; `weights` is replicates x cells, a cell a (truth, pred) pair."""
    cells = len(truth)
    rows = np.arange(cells)
    hit = (truth == pred).astype(np.float64)
    # Sparse one-hot maps (cells x classes): the cost is replicates x cells, whatever the class count.
    by_truth = csr_matrix((np.ones(cells), (rows, truth)), shape=(cells, k))
    by_pred = csr_matrix((np.ones(cells), (rows, pred)), shape=(cells, k))
    hits = csr_matrix((hit, (rows, truth)), shape=(cells, k))
    return _Tallies(np.asarray((hits.T @ weights.T).T), np.asarray((by_truth.T @ weights.T).T),
                    np.asarray((by_pred.T @ weights.T).T), weights @ hit, weights.sum(axis=1))


def _score(t: _Tallies, metric: str, cls: int | None) -> NDArray[np.float64]:
    """One score per replicate, as scikit-learn computes it (zero_division=0)."""
    if metric == "accuracy":
        return np.asarray(t.correct / np.where(t.total > 0, t.total, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(t.pred_n > 0, t.tp / t.pred_n, 0.0)
        recall = np.where(t.true_n > 0, t.tp / t.true_n, 0.0)
        f1 = np.where(t.pred_n + t.true_n > 0, 2 * t.tp / (t.pred_n + t.true_n), 0.0)
    family = base_metric(metric).split("_")[0]
    score = {"precision": precision, "recall": recall, "f1": f1}[family]
    if cls is not None:
        return np.asarray(score[:, cls])
    if metric.endswith("_weighted"):
        support = t.true_n.sum(axis=1)
        return np.asarray((score * t.true_n).sum(axis=1) / np.where(support > 0, support, 1))
    return np.asarray(score.mean(axis=1))


def _class_scores(counts: NDArray[np.int64], truth: NDArray[np.int64], pred: NDArray[np.int64], k: int,
                  metric: str, cls: int | None) -> NDArray[np.float64]:
    """One score per row of `counts` (replicates x cells), each cell being (truth, pred) codes."""
    return _score(_tallies(counts.astype(np.float64), truth, pred, k), metric, cls)


class ClassBootstrap:
    """Paired bootstrap replicates of both runs' confusion tallies, drawn once for every class metric.

    A replicate resamples the hold-out samples with replacement (one multinomial draw over the
    distinct (label, candidate, predecessor) cells), so both runs' answers for a sample stay paired.
    """

    def __init__(self, paired: Paired, resamples: int = RESAMPLES, seed: int = 0) -> None:
        if resamples < 10:
            raise ValueError("at least 10 bootstrap resamples are needed")
        self.paired = paired
        self.n = len(paired.labels)
        self.k = k = max(len(paired.classes), 1)
        joint = (paired.labels * k + paired.candidate) * k + paired.predecessor
        cells, counts = np.unique(joint, return_counts=True)
        truth, cand, prev = cells // (k * k), (cells // k) % k, cells % k
        base = counts[np.newaxis, :].astype(np.float64)
        self.observed = (_tallies(base, truth, cand, k), _tallies(base, truth, prev, k))
        parts: list[tuple[_Tallies, _Tallies]] = []
        rng = np.random.default_rng(seed)
        chunk = max(1, _CELLS_PER_CHUNK // max(len(cells), 1))
        for start in range(0, resamples if self.n else 0, chunk):
            draws = rng.multinomial(self.n, counts / self.n, size=min(chunk, resamples - start)).astype(np.float64)
            parts.append((_tallies(draws, truth, cand, k), _tallies(draws, truth, prev, k)))
        self.replicates = [
            _Tallies(*(np.concatenate([getattr(p[side], f) for p in parts]) for f in _Tallies.__slots__))
            for side in (0, 1)
        ] if parts else []

    def interval(self, metric: str, alpha: float = 0.05) -> Significance | str:
        """The interval of candidate minus predecessor for 'f1_macro', 'accuracy', 'recall[3]', ..."""
        if self.n == 0:
            return "no sample was predicted by both runs"
        cls: int | None = None
        if "[" in metric:
            name = metric[metric.index("[") + 1:-1]
            if name not in self.paired.classes:
                return f"class {name!r} does not occur in the paired samples"
            cls = self.paired.classes.index(name)
        observed = float(_score(self.observed[0], metric, cls)[0] - _score(self.observed[1], metric, cls)[0])
        diffs = _score(self.replicates[0], metric, cls) - _score(self.replicates[1], metric, cls)
        return _interval("paired bootstrap", observed, diffs, alpha, self.n)


def bootstrap_class_metric(paired: Paired, metric: str, alpha: float = 0.05, resamples: int = RESAMPLES,
                           seed: int = 0) -> Significance | str:
    """Paired bootstrap interval of candidate minus predecessor for accuracy/precision/recall/F1.

    `metric`: 'f1_macro', 'precision_weighted', 'accuracy', 'f1[3]', ... Scores follow scikit-learn
    (zero_division=0; macro over every class seen in labels or predictions of the paired samples).
    """
    return ClassBootstrap(paired, resamples, seed).interval(metric, alpha)


def _interval(method: str, observed: float, diffs: NDArray[np.float64], alpha: float, n: int) -> Significance:
    low, high = (float(x) for x in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    significant = low > 0 or high < 0
    return Significance(method, observed, significant, ci_low=low, ci_high=high, confidence=1 - alpha, samples=n)


def histogram_counts(encoded: str | bytes) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """An encoded HDR histogram as (bucket values in its unit, counts), non-empty buckets only."""
    values, counts = recorded_buckets(HdrHistogram.decode(encoded))
    return values.astype(np.float64), counts.astype(np.int64)


def _percentiles(values: NDArray[np.float64], counts: NDArray[np.int64], percentile: float) -> NDArray[np.float64]:
    """Percentile per row of `counts`, as HdrHistogram.get_value_at_percentile computes it."""
    total = counts.sum(axis=1)
    wanted = np.maximum(np.floor(percentile / 100 * total + 0.5), 1)
    cumulative = np.cumsum(counts, axis=1)
    index = np.argmax(cumulative >= wanted[:, np.newaxis], axis=1)
    return np.asarray(values[index])


def bootstrap_percentile_difference(candidate: tuple[NDArray[np.float64], NDArray[np.int64]],
                                    predecessor: tuple[NDArray[np.float64], NDArray[np.int64]],
                                    percentile: float, alpha: float = 0.05, resamples: int = RESAMPLES,
                                    seed: int = 0) -> Significance | str:
    """Bootstrap interval of a latency percentile's difference (candidate minus predecessor).

    Each run's requests are resampled independently from its histogram (requests are not paired
    across runs). Requests in a load test are autocorrelated, so the interval is on the narrow side.
    """
    if not 0 < percentile <= 100 or math.isnan(percentile):
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    sides = []
    for values, counts in (candidate, predecessor):
        n = int(counts.sum())
        if n == 0:
            return "a run has no successful request to compare"
        sides.append((values, counts, n))
    observed = float(_percentiles(sides[0][0], sides[0][1][np.newaxis, :], percentile)[0]
                     - _percentiles(sides[1][0], sides[1][1][np.newaxis, :], percentile)[0])
    rng = np.random.default_rng(seed)
    draws = [_draw_percentiles(values, counts, percentile, resamples, rng) for values, counts, _ in sides]
    return _interval("bootstrap", observed, draws[0] - draws[1], alpha, min(sides[0][2], sides[1][2]))


def _draw_percentiles(values: NDArray[np.float64], counts: NDArray[np.int64], percentile: float, resamples: int,
                      rng: np.random.Generator) -> NDArray[np.float64]:
    """Bootstrap replicates of a histogram's percentile, drawn from their exact distribution.

    In a resample of n requests, the count at or below bucket j is Binomial(n, F_j), so the
    resampled percentile is <= v_j exactly when that count reaches the percentile's rank t:
    P(p* <= v_j) = P(Binomial(n, F_j) >= t). Inverting this CDF draws replicates without
    resampling n requests (the same distribution as a multinomial bootstrap, at O(buckets)).
    """
    n = int(counts.sum())
    rank = max(int(np.floor(percentile / 100 * n + 0.5)), 1)
    share = np.minimum(np.cumsum(counts) / n, 1.0)
    cdf = binom.sf(rank - 1, n, share)
    cdf[-1] = 1.0
    return np.asarray(values[np.searchsorted(cdf, rng.random(resamples), side="left")])


@dataclass(frozen=True, slots=True)
class StageLatency:
    """One measured stage's encoded HDR latency histogram (microseconds) and its offered rate."""

    stage: str
    offered_rps: float
    encoded: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one run leaves for paired tests: labels and predictions by sample index, latency by stage."""

    labels: list[str | None]
    predictions: list[str | None]
    latency: list[StageLatency]


class PairedTests:
    """Every paired test between two runs, sharing the work: pairing, bootstrap draws, decoded histograms."""

    def __init__(self, candidate: Evidence, predecessor: Evidence, resamples: int = RESAMPLES) -> None:
        self.candidate = candidate
        self.predecessor = predecessor
        self.resamples = resamples
        self._paired: Paired | str | None = None
        self._bootstrap: ClassBootstrap | None = None
        self._decoded: dict[str, tuple[NDArray[np.float64], NDArray[np.int64]]] = {}

    def _pairs(self) -> Paired | str:
        if self._paired is None:
            labels = self.candidate.labels
            if self.predecessor.labels and any(a != b for a, b in zip(labels, self.predecessor.labels,
                                                                       strict=False)):
                self._paired = "the two runs' hold-out labels differ"
            elif not labels or any(label is None for label in labels):
                self._paired = "per-sample labels are not available"
            else:
                try:
                    self._paired = pair([str(label) for label in labels], self.candidate.predictions,
                                        self.predecessor.predictions)
                except ValueError as exc:
                    self._paired = str(exc)
        return self._paired

    def _histogram(self, stage: StageLatency) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        if stage.encoded not in self._decoded:
            values_us, counts = histogram_counts(stage.encoded)
            self._decoded[stage.encoded] = (values_us / 1000.0, counts)
        return self._decoded[stage.encoded]

    def _worst_stage(self, stages: list[StageLatency], percentile: float, rate: float | None
                     ) -> tuple[NDArray[np.float64], NDArray[np.int64]] | None:
        """The histogram (ms) of the stage with the highest percentile, among those at `rate` if given."""
        best: tuple[float, tuple[NDArray[np.float64], NDArray[np.int64]]] | None = None
        for stage in stages:
            if rate is not None and not math.isclose(stage.offered_rps, rate, rel_tol=1e-9):
                continue
            values, counts = self._histogram(stage)
            if counts.sum() == 0:
                continue
            value = float(_percentiles(values, counts[np.newaxis, :], percentile)[0])
            if best is None or value > best[0]:
                best = (value, (values, counts))
        return None if best is None else best[1]

    def test(self, metric: str, alpha: float = 0.05) -> Significance | str | None:
        """The paired test for one metric: Significance, why it cannot be done (str), or None if none exists."""
        family = base_metric(metric)
        if family in CLASS_METRICS:
            paired = self._pairs()
            if isinstance(paired, str):
                return paired
            if metric == "accuracy":
                return mcnemar_accuracy(paired, alpha)
            if len(paired.labels) == 0:
                return "no sample was predicted by both runs"
            if self._bootstrap is None:
                self._bootstrap = ClassBootstrap(paired, self.resamples)
            return self._bootstrap.interval(metric, alpha)
        if family in LATENCY_METRICS:
            percentile = float(family.removeprefix("latency_p").removesuffix("_ms").replace("999", "99.9"))
            rate = float(metric.split("@", 1)[1].removesuffix("rps")) if "@" in metric else None
            sides = [self._worst_stage(run.latency, percentile, rate) for run in (self.candidate, self.predecessor)]
            if sides[0] is None or sides[1] is None:
                where = f" at {rate:g} rps" if rate is not None else ""
                return f"no latency histogram{where} in {'the candidate' if sides[0] is None else 'the predecessor'}"
            return bootstrap_percentile_difference(sides[0], sides[1], percentile, alpha, self.resamples)
        return None


def compare_metric(metric: str, alpha: float, candidate: Evidence, predecessor: Evidence,
                   resamples: int = RESAMPLES) -> Significance | str | None:
    """One paired test (see PairedTests, which shares the work across many metrics)."""
    return PairedTests(candidate, predecessor, resamples).test(metric, alpha)


@dataclass(frozen=True, slots=True)
class Baseline:
    """The predecessor found before the run (None on a first run) and its evidence for paired tests."""

    predecessor: Predecessor | None = None
    evidence: Evidence | None = None
