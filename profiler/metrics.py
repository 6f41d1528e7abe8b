"""Prometheus metrics built at scrape time from the run's live state (no figure stored twice)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from hdrh.histogram import HdrHistogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from profiler.latency import PERCENTILES, cumulative_counts, mean_us, values_at_percentiles
from profiler.results import OUTCOMES
from profiler.run import RunState

BUCKET_FACTORS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)
"""Histogram buckets as multiples of the latency objective, so resolution sits where it matters."""

VERDICT_CODES = {"pass": 1.0, "inconclusive": 0.0, "fail": -1.0}
LEAK_CODES = {"leaked": 1.0, "no leak": 0.0, "inconclusive": -1.0}


def histogram_buckets(histogram: HdrHistogram, bounds_s: list[float]) -> list[tuple[str, float]]:
    """Cumulative counts at each bound (seconds) read from an HDR histogram of microseconds."""
    below = cumulative_counts(histogram, [b * 1e6 for b in bounds_s])
    counts = [below[0], *(below[i] - below[i - 1] for i in range(1, len(below)))]
    cumulative = []
    running = 0
    for bound, count in zip(bounds_s, counts, strict=True):
        running += count
        cumulative.append((f"{bound:g}", float(running)))
    cumulative.append(("+Inf", float(histogram.get_total_count())))
    return cumulative


class RunCollector(Collector):
    """Exports the current run (from `get_state`) on every scrape."""

    def __init__(self, get_state: Callable[[], RunState | None]) -> None:
        self._get_state = get_state

    def collect(self) -> Iterator[Metric]:
        state = self._get_state()
        if state is None:
            return
        config = state.config
        labels = {"model": config.target.model, "run_id": state.run_id}
        info = GaugeMetricFamily("profiler_run_info", "The run being reported (value 1).",
                                 labels=["model", "run_id", "phase"])
        info.add_metric([labels["model"], labels["run_id"], state.phase], 1.0)
        yield info

        objective_s = config.objective.latency_ms / 1000
        bounds = [round(objective_s * f, 9) for f in BUCKET_FACTORS]
        requests = CounterMetricFamily("profiler_requests", "Requests sent, by stage and outcome.",
                                       labels=["model", "stage", "outcome"])
        unsent = CounterMetricFamily("profiler_requests_unsent", "Requests the generator could not send in time.",
                                     labels=["model", "stage"])
        latency = HistogramMetricFamily("profiler_request_latency_seconds",
                                        "Latency from the intended send time, successful requests.",
                                        labels=["model", "stage"])
        quantiles = GaugeMetricFamily("profiler_request_latency_quantile_seconds",
                                      "HDR latency percentiles from the intended send time.",
                                      labels=["model", "stage", "quantile"])
        offered = GaugeMetricFamily("profiler_offered_rate_rps", "Offered request rate.", labels=["model", "stage"])
        achieved = GaugeMetricFamily("profiler_achieved_rate_rps", "Achieved (successful) request rate.",
                                     labels=["model", "stage"])
        for recorder in list(state.recorders):
            name = recorder.stage.name
            for outcome in OUTCOMES:
                requests.add_metric([labels["model"], name, outcome], float(recorder.outcomes[outcome]))
            unsent.add_metric([labels["model"], name], float(recorder.unsent))
            hist = recorder.latency
            total_s = mean_us(hist) * hist.get_total_count() / 1e6
            latency.add_metric([labels["model"], name], histogram_buckets(hist, bounds), total_s)
            if hist.get_total_count():
                for p, value in zip(PERCENTILES, values_at_percentiles(hist, PERCENTILES), strict=True):
                    quantiles.add_metric([labels["model"], name, f"{p / 100:g}"], value / 1e6)
            summary = recorder.summary()
            offered.add_metric([labels["model"], name], recorder.stage.rate_rps)
            if summary["achieved_rps"] is not None:
                achieved.add_metric([labels["model"], name], summary["achieved_rps"])
        yield from (requests, unsent, latency, quantiles, offered, achieved)

        last = state.series.last
        if last is not None:
            if last.rss_bytes is not None:
                yield GaugeMetricFamily("profiler_target_memory_rss_bytes", "RSS of the model's processes.",
                                        value=float(last.rss_bytes), labels=None)
            if last.memory_bytes is not None and state.sampler is not None:
                memory = GaugeMetricFamily("profiler_target_memory_bytes",
                                           "The model's memory, in the figure the run uses (see 'figure').",
                                           labels=["model", "figure"])
                memory.add_metric([labels["model"], state.sampler.memory_figure or "none"], float(last.memory_bytes))
                yield memory
            if last.cpu_s is not None:
                yield CounterMetricFamily("profiler_target_cpu_seconds", "CPU time of the model's processes.",
                                          value=last.cpu_s)

        report = state.report
        if report is None:
            return
        accuracy = GaugeMetricFamily("profiler_accuracy_ratio", "Accuracy metrics on the hold-out set.",
                                     labels=["model", "metric"])
        for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "coverage"):
            value = report["accuracy"].get(key)
            if value is not None:
                accuracy.add_metric([labels["model"], key], float(value))
        yield accuracy
        verdict = report["verdict"]
        yield GaugeMetricFamily("profiler_verdict", "The verdict: 1 pass, 0 inconclusive, -1 fail.",
                                value=VERDICT_CODES[verdict["status"]])
        checks = GaugeMetricFamily("profiler_check", "Each gate: 1 pass, 0 inconclusive, -1 fail.",
                                   labels=["model", "metric", "kind"])
        for check in verdict["checks"]:
            # kind (absolute/change) keeps the two checks of one gate apart as two series.
            checks.add_metric([labels["model"], check["metric"], check.get("kind", "absolute")],
                              VERDICT_CODES[check["status"]])
        yield checks
        leak = (report.get("resources") or {}).get("leak") or {}
        if leak:
            yield GaugeMetricFamily("profiler_memory_leak", "The leak test: 1 leaked, 0 no leak, -1 inconclusive.",
                                    value=LEAK_CODES.get(str(leak.get("status")), -1.0))
            if leak.get("bytes_per_request") is not None:
                yield GaugeMetricFamily("profiler_memory_growth_bytes_per_request",
                                        "Theil-Sen growth of the model's memory per request after warm-up.",
                                        value=float(leak["bytes_per_request"]))
