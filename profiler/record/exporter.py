"""Prometheus metrics built at scrape time from the run's live state (no figure stored twice).

Live figures (requests, latency, rates, memory, CPU) come from the run's accumulators while it runs;
judged figures (accuracy, capacity, leak, verdict) come from the report once the run has one.
docs/sidecar.md lists every name; `promtool check metrics` accepts them (tests/test_prometheus.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from hdrh.histogram import HdrHistogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from profiler.core.hdr import counts_at_or_below, total_of, values_at_percentiles
from profiler.core.results import OUTCOMES
from profiler.measure.latency import PERCENTILES, StageRecorder
from profiler.measure.resources.sampler import ResourceSampler
from profiler.measure.resources.series import BoundedSeries
from profiler.state import RunView

BUCKET_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)
"""Buckets at these multiples of the latency objective, so histogram_quantile is sharp where the verdict is."""
BUCKET_STEPS = (1.0, 2.5, 5.0)
"""And a 1-2.5-5 ladder per decade, from BUCKET_FLOOR_S (or 1/20 of a faster objective) to 10x the objective:
a fast model's p50 (the demo's is ~1.3 ms) falls in a bucket of its own, not below the lowest one."""
BUCKET_FLOOR_S = 1e-4

VERDICT_CODES = {"pass": 1.0, "inconclusive": 0.0, "fail": -1.0}
LEAK_CODES = {"leaked": 1.0, "no leak": 0.0, "inconclusive": -1.0}
ACCURACY_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                 "recall_weighted", "f1_weighted", "coverage")


def bucket_bounds_s(objective_ms: float) -> list[float]:
    """Upper bounds in seconds: a 1-2.5-5 ladder from 100 µs (lower for an objective under 2 ms) to 10x the
    objective, and the objective's neighbourhood (BUCKET_FACTORS); empty for a non-positive objective."""
    if not objective_ms > 0 or not math.isfinite(objective_ms):
        return []
    objective_s = objective_ms / 1000
    floor_s = min(BUCKET_FLOOR_S, objective_s / 20)
    bounds = {round(objective_s * f, 9) for f in BUCKET_FACTORS}
    decade = math.floor(math.log10(floor_s))
    while 10.0 ** decade <= objective_s * 10:
        for step in BUCKET_STEPS:
            bound = step * 10.0 ** decade
            if floor_s * 0.999 <= bound <= objective_s * 10 * 1.001:
                bounds.add(round(bound, 9))
        decade += 1
    return sorted(bounds)


def histogram_buckets(histogram: HdrHistogram, bounds_s: list[float]) -> list[tuple[str, float]]:
    """Cumulative counts at each bound (seconds) read from an HDR histogram of microseconds, then +Inf."""
    counts = counts_at_or_below(histogram, [round(bound * 1e6, 3) for bound in bounds_s])
    buckets = [(f"{bound:g}", float(count)) for bound, count in zip(bounds_s, counts, strict=True)]
    buckets.append(("+Inf", float(histogram.get_total_count())))
    return buckets


def _number(value: Any) -> float | None:
    """A finite float from a report field, or None (missing, bool, NaN and text are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class RunCollector(Collector):
    """Exports the current run (from `get_state`) on every scrape."""

    def __init__(self, get_state: Callable[[], RunView | None]) -> None:
        self._get_state = get_state

    def collect(self) -> Iterator[Metric]:
        """Every family for the current run; nothing before the first run."""
        state = self._get_state()
        if state is None:
            return
        model = state.config.target.model
        info = GaugeMetricFamily("profiler_run_info", "The run being reported (value 1).",
                                 labels=["model", "run_id", "phase"])
        info.add_metric([model, state.run_id, state.phase], 1.0)
        yield info
        yield from load_families(state.recorders, state.config.objective.latency_ms, model)
        yield from token_families(state.recorders, model)
        yield from resource_families(state.series, state.sampler, model)
        if state.report is not None:
            yield from report_families(state.report, model)


def load_families(recorders: Sequence[StageRecorder], objective_ms: float, model: str) -> Iterator[Metric]:
    """Requests by outcome, latency histogram (buckets around the `objective_ms` latency objective) and HDR
    percentiles, offered and achieved rate, per stage."""
    bounds = bucket_bounds_s(objective_ms)
    requests = CounterMetricFamily("profiler_requests", "Requests sent, by stage and outcome.",
                                   labels=["model", "stage", "outcome"])
    unsent = CounterMetricFamily("profiler_requests_unsent", "Requests the generator could not send in time.",
                                 labels=["model", "stage"])
    latency = HistogramMetricFamily("profiler_request_latency_seconds",
                                    "Latency from the intended send time, successful requests.",
                                    labels=["model", "stage"])
    quantiles = GaugeMetricFamily("profiler_request_latency_percentile_seconds",
                                  "HDR latency percentiles from the intended send time.",
                                  labels=["model", "stage", "percentile"])
    service = GaugeMetricFamily("profiler_service_time_percentile_seconds",
                                "HDR percentiles of the service time (from the actual send).",
                                labels=["model", "stage", "percentile"])
    offered = GaugeMetricFamily("profiler_offered_rate_requests_per_second", "Offered request rate.",
                                labels=["model", "stage"])
    achieved = GaugeMetricFamily("profiler_achieved_rate_requests_per_second",
                                 "Achieved (successful) request rate.", labels=["model", "stage"])
    for recorder in list(recorders):
        stage = recorder.stage.name
        for outcome in OUTCOMES:
            requests.add_metric([model, stage, outcome], float(recorder.outcomes[outcome]))
        # Live while the stage runs: the count so far, and the rate over the time elapsed so far.
        rate = _number(recorder.achieved_rps())
        unsent.add_metric([model, stage], float(recorder.unsent))
        hist = recorder.latency
        total_s = total_of(hist) / 1e6
        latency.add_metric([model, stage], histogram_buckets(hist, bounds), total_s)
        for family, source in ((quantiles, hist), (service, recorder.service)):
            if source.get_total_count():
                for p, value_us in zip(PERCENTILES, values_at_percentiles(source, PERCENTILES), strict=True):
                    family.add_metric([model, stage, f"{p:g}"], value_us / 1e6)
        offered.add_metric([model, stage], recorder.stage.rate_rps)
        if rate is not None:
            achieved.add_metric([model, stage], rate)
    yield from (requests, unsent, latency, quantiles, service, offered, achieved)


def token_families(recorders: Sequence[StageRecorder], model: str) -> Iterator[Metric]:
    """A generative model's families per stage (none for other models): TTFT, inter-token latency and TPOT HDR
    percentiles, output tokens, output tokens and goodput per second, and a closed-loop stage's concurrency."""
    tokened = [r for r in list(recorders) if r.tokens is not None]
    if not tokened:
        return
    labels = ["model", "stage", "percentile"]
    families = {
        "ttft": GaugeMetricFamily("profiler_ttft_percentile_seconds",
                                  "Time to first token from the intended send time, HDR percentiles.", labels=labels),
        "itl": GaugeMetricFamily("profiler_itl_percentile_seconds",
                                 "Gaps between successive streamed tokens, HDR percentiles.", labels=labels),
        "tpot": GaugeMetricFamily("profiler_tpot_percentile_seconds",
                                  "Time per output token after the first, HDR percentiles.", labels=labels),
    }
    tokens = CounterMetricFamily("profiler_output_tokens", "Tokens generated, successful requests.",
                                 labels=["model", "stage"])
    tokens_rate = GaugeMetricFamily("profiler_output_tokens_per_second", "Tokens generated per second.",
                                    labels=["model", "stage"])
    goodput = GaugeMetricFamily("profiler_goodput_requests_per_second",
                                "Requests per second that met every SLO of the objective (ttft, tpot, e2e).",
                                labels=["model", "stage"])
    concurrency = GaugeMetricFamily("profiler_stage_concurrency", "Requests kept in flight (closed-loop stages).",
                                    labels=["model", "stage"])
    for recorder in tokened:
        stage = recorder.stage.name
        for name, family in families.items():
            source = getattr(recorder, name)
            if source.get_total_count():
                for p, value_us in zip(PERCENTILES, values_at_percentiles(source, PERCENTILES), strict=True):
                    family.add_metric([model, stage, f"{p:g}"], value_us / 1e6)
        summary = recorder.token_summary()
        tokens.add_metric([model, stage], float(summary["output_tokens"]))
        for family, key in ((tokens_rate, "output_tokens_per_s"), (goodput, "goodput_rps")):
            value = _number(summary.get(key))
            if value is not None:
                family.add_metric([model, stage], value)
        if recorder.stage.closed_loop:
            concurrency.add_metric([model, stage], float(recorder.stage.concurrency))
    yield from (*families.values(), tokens, tokens_rate, goodput, concurrency)


def resource_families(series: BoundedSeries, sampler: ResourceSampler | None, model: str) -> Iterator[Metric]:
    """The model's memory and CPU from the sampler's latest reading, and the peak so far."""
    last = series.last
    if last is None:
        return
    figure = (sampler.memory_figure if sampler is not None else None) or "none"
    if last.memory_bytes is not None:
        memory = GaugeMetricFamily("profiler_target_memory_bytes",
                                   "The model's memory in the figure the run uses (label 'figure': rss, pss, ...).",
                                   labels=["model", "figure"])
        memory.add_metric([model, figure], float(last.memory_bytes))
        yield memory
    if series.peak is not None and series.peak.memory_bytes is not None:
        peak = GaugeMetricFamily("profiler_target_memory_peak_bytes", "Peak of that memory figure so far.",
                                 labels=["model", "figure"])
        peak.add_metric([model, figure], float(series.peak.memory_bytes))
        yield peak
    if last.rss_bytes is not None:
        yield _single("profiler_target_memory_rss_bytes", "RSS of the model's processes.", model,
                      float(last.rss_bytes))
    if last.cpu_s is not None:
        cpu = CounterMetricFamily("profiler_target_cpu_seconds", "CPU time of the model's processes.",
                                  labels=["model"])
        cpu.add_metric([model], last.cpu_s)
        yield cpu
    yield _single("profiler_target_processes", "How many processes the model runs.", model, float(last.processes))
    yield from gpu_families(series, model)


def gpu_families(series: BoundedSeries, model: str) -> Iterator[Metric]:
    """The model's GPU memory and utilisation from the latest reading, and the GPU memory peak so far."""
    last = series.last
    if last is not None and last.gpu_memory_bytes is not None:
        yield _single("profiler_target_gpu_memory_bytes", "GPU memory of the model (resources.gpu.source says whose).",
                      model, float(last.gpu_memory_bytes))
    if last is not None and last.gpu_utilisation_pct is not None:
        yield _single("profiler_target_gpu_utilisation_ratio", "Utilisation of the model's GPUs, 0 to 1.", model,
                      last.gpu_utilisation_pct / 100)
    if series.gpu_peak is not None and series.gpu_peak.gpu_memory_bytes is not None:
        yield _single("profiler_target_gpu_memory_peak_bytes", "Peak GPU memory of the model so far.", model,
                      float(series.gpu_peak.gpu_memory_bytes))


def report_families(report: dict[str, Any], model: str) -> Iterator[Metric]:
    """Judged figures of a finished run: accuracy, capacity, stage objectives, memory growth, leak, verdict."""
    accuracy = GaugeMetricFamily("profiler_accuracy_ratio", "Accuracy metrics on the hold-out set.",
                                 labels=["model", "metric"])
    for key in ACCURACY_KEYS:
        value = _number((report.get("accuracy") or {}).get(key))
        if value is not None:
            accuracy.add_metric([model, key], value)
    yield accuracy
    inconsistent = _number((report.get("metrics") or {}).get("inconsistent_rate"))
    if inconsistent is not None:
        yield _single("profiler_prediction_inconsistency_ratio",
                      "Share of repeated predictions that differed from the first for the same sample.",
                      model, inconsistent)
    capacity = _number((report.get("capacity") or {}).get("max_sustained_rps"))
    if capacity is not None:
        yield _single("profiler_capacity_max_sustained_requests_per_second",
                      "Highest offered rate held within the latency objective.", model, capacity)
    sustained = GaugeMetricFamily("profiler_stage_sustained", "Whether a stage met the objective: 1 yes, 0 no.",
                                  labels=["model", "stage"])
    for stage in report.get("stages") or []:
        objective = stage.get("objective")
        if isinstance(objective, dict) and isinstance(objective.get("sustained"), bool):
            sustained.add_metric([model, str(stage.get("name"))], 1.0 if objective["sustained"] else 0.0)
    yield sustained
    yield from _resources_report_families(report.get("resources") or {}, model)
    yield from _verdict_families(report, model)


def _verdict_families(report: dict[str, Any], model: str) -> Iterator[Metric]:
    """The verdict (as a code and one series per state), each check, and when the run ended."""
    verdict = report.get("verdict") or {}
    code = VERDICT_CODES.get(str(verdict.get("status")))
    if code is not None:
        yield _single("profiler_verdict", "The verdict: 1 pass, 0 inconclusive, -1 fail.", model, code)
        # One series per state (1 for the verdict's, 0 for the others): a Grafana state timeline or an alert
        # on `profiler_verdict_state{state="fail"} == 1` reads it without decoding -1/0/1.
        states = GaugeMetricFamily("profiler_verdict_state", "The verdict, one series per state: 1 for the "
                                   "run's verdict, 0 for the others.", labels=["model", "state"])
        for state in VERDICT_CODES:
            states.add_metric([model, state], 1.0 if state == verdict.get("status") else 0.0)
        yield states
    finished = _timestamp((report.get("run") or {}).get("finished_at"))
    if finished is not None:
        # Alert on `time() - profiler_last_run_end_timestamp_seconds > ...`: a PASS that is days old is stale.
        yield _single("profiler_last_run_end_timestamp_seconds", "When the last finished run ended (Unix time).",
                      model, finished)
    checks = GaugeMetricFamily("profiler_verdict_check", "Each gate: 1 pass, 0 inconclusive, -1 fail.",
                               labels=["model", "metric", "kind"])
    for check in verdict.get("checks") or []:
        check_code = VERDICT_CODES.get(str(check.get("status")))
        if check_code is not None:
            # kind (absolute, or change against a baseline) keeps a gate's two checks apart as two series.
            checks.add_metric([model, str(check.get("metric")), str(check.get("kind", "absolute"))], check_code)
    yield checks


def _leak_families(resources: dict[str, Any], model: str) -> Iterator[Metric]:
    """Memory growth from rest to rest, and the leak test's answer and growth rates, where the report has them."""
    memory = resources.get("memory")
    growth = _number(memory.get("growth_bytes")) if isinstance(memory, dict) else None
    if growth is not None:
        yield _single("profiler_target_memory_growth_bytes", "Memory at rest after the load minus at rest before.",
                      model, growth)
    leak = resources.get("leak")
    if not isinstance(leak, dict) or not leak:
        return
    yield _single("profiler_memory_leak", "The leak test: 1 leaked, 0 no leak, -1 inconclusive.", model,
                  LEAK_CODES.get(str(leak.get("status")), -1.0))
    # Prometheus wants base units: per-hour and hours from the report become per-second and seconds.
    for key, scale, name, documentation in (
        ("bytes_per_request", 1.0, "profiler_memory_growth_bytes_per_request",
         "Theil-Sen growth of the model's memory per request under load, after warm-up."),
        ("bytes_per_hour", 1 / 3600, "profiler_memory_growth_bytes_per_second",
         "Theil-Sen growth of the model's memory per second at the tested load, after warm-up."),
        ("hours_to_limit", 3600.0, "profiler_memory_limit_reached_in_seconds",
         "Time until a leaking model reaches its memory limit at the tested load."),
    ):
        value = _number(leak.get(key))
        if value is not None:
            yield _single(name, documentation, model, value * scale)


def _timestamp(value: Any) -> float | None:
    """An ISO 8601 time stamp from the report as Unix seconds; None when it is missing or not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _resources_report_families(resources: dict[str, Any], model: str) -> Iterator[Metric]:
    """Memory growth and the leak test, the GPU's figures, and replicas per node by resource."""
    yield from _leak_families(resources, model)
    yield from _gpu_report_families(resources, model)
    yield from _fit_families(resources, model)


def _gpu_report_families(resources: dict[str, Any], model: str) -> Iterator[Metric]:
    """The GPU memory leak test's answer and growth rate, and the mean GPU utilisation under load."""
    gpu = resources.get("gpu")
    if not isinstance(gpu, dict) or not gpu.get("measured"):
        return
    leak = gpu.get("leak") or {}
    yield _single("profiler_gpu_memory_leak", "The GPU memory leak test: 1 leaked, 0 no leak, -1 inconclusive.",
                  model, LEAK_CODES.get(str(leak.get("status")), -1.0))
    rate = _number(leak.get("bytes_per_request"))
    if rate is not None:
        yield _single("profiler_gpu_memory_growth_bytes_per_request",
                      "Theil-Sen growth of the model's GPU memory per request under load, after warm-up.", model, rate)
    utilisation = _number((gpu.get("utilisation") or {}).get("under_load_pct"))
    if utilisation is not None:
        yield _single("profiler_gpu_utilisation_under_load_ratio", "Mean utilisation of the model's GPUs under load.",
                      model, utilisation / 100)


def _fit_families(resources: dict[str, Any], model: str) -> Iterator[Metric]:
    """Replicas that fit a node by each resource (memory, CPU, storage, GPU memory), and the count that holds."""
    fit = resources.get("footprint")
    if not isinstance(fit, dict):
        return
    by_resource = fit.get("replicas_by_resource") or {}
    if by_resource:
        family = GaugeMetricFamily("profiler_replicas_per_node_by_resource",
                                   "Replicas that fit one node by one resource; the smallest limits the node.",
                                   labels=["model", "resource"])
        for resource, count in by_resource.items():
            family.add_metric([model, str(resource)], float(count))
        yield family
    replicas = _number(fit.get("replicas_per_node"))
    if replicas is not None:
        family = GaugeMetricFamily("profiler_replicas_per_node", "Replicas that fit one node (label: the limit).",
                                   labels=["model", "limited_by"])
        family.add_metric([model, str(fit.get("replicas_limited_by"))], replicas)
        yield family


def _single(name: str, documentation: str, model: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["model"])
    family.add_metric([model], value)
    return family
