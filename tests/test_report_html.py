"""The report page's pure parts: the view it draws (spectra, CPU, memory trend, predecessor), the page's safety
against what a report may hold, and the progress lines read from a run's state. The page in a browser:
tests/test_report_page.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hdrh.histogram import HdrHistogram

from profiler.app.progress import RunProgress
from profiler.config import load_config
from profiler.record.html import cpu_series, memory_fit, page_view, render_page, report_html, spectrum_points
from profiler.state import new_state


def _histogram(values_us: list[int]) -> str:
    histogram = HdrHistogram(1, 3_600_000_000, 3)
    for value in values_us:
        histogram.record_value(value)
    return histogram.encode().decode("ascii")


def test_the_spectrum_runs_from_the_median_to_the_maximum_on_the_nines_axis() -> None:
    # 1,000 answers: 990 at 1 ms, 9 at 10 ms, 1 at 100 ms.
    points = spectrum_points(_histogram([1000] * 990 + [10_000] * 9 + [100_000]))
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    assert xs == sorted(xs) and ys == sorted(ys)  # 1/(1-q) and latency both grow
    assert xs[0] == 1 and ys[0] == 1.0  # q = 0: the lowest value
    assert xs[-1] == 1000 and 99.9 <= ys[-1] <= 100.1  # the maximum, at q = 1 - 1/count
    assert len(points) == 31  # 10 points a decade over 3 decades, and the maximum
    at_99 = dict(points)[100.0]  # q = 0.99: still 1 ms (990 of 1,000)
    assert at_99 == 1.0
    assert spectrum_points(_histogram([])) == []


def test_cpu_is_the_slope_of_cumulative_cpu_seconds() -> None:
    series = [{"t_s": 0.0, "cpu_s": 1.0}, {"t_s": 2.0, "cpu_s": 2.0}, {"t_s": 3.0, "cpu_s": None},
              {"t_s": 4.0, "cpu_s": 5.0}, {"t_s": 4.0, "cpu_s": 6.0}]
    assert cpu_series(series) == [{"t": 2.0, "cores": 0.5}]  # gaps and zero-length intervals skipped


def _series(slope_bytes_per_request: float) -> list[dict[str, object]]:
    return [{"t_s": float(i), "phase": "load", "requests": 100 * i,
             "memory_bytes": int(1e8 + slope_bytes_per_request * 100 * i)} for i in range(20)]


def test_the_memory_trend_is_the_leak_tests_own_fit_where_it_has_one() -> None:
    leak = {"status": "leaked", "method": "theil-sen", "bytes_per_request": 50.0, "bytes_per_request_low": 40.0,
            "bytes_per_request_high": 60.0, "window_requests": [500, 1900]}
    fit = memory_fit({"series": _series(50.0), "leak": leak})
    assert fit is not None and fit["cut_t"] == 5.0  # the warm-up cut: the window's first reading
    (t0, y0, low0, high0), (t1, y1, _, _) = fit["points"][0], fit["points"][-1]
    assert (y1 - y0) / ((t1 - t0) * 100) == 50.0  # 50 bytes per request, 100 requests a second
    assert low0 > y0 > high0  # before the pivot the low slope lies above
    assert "50 bytes per request (40 to 60)" in fit["caption"]


def test_without_a_slope_the_trend_says_it_is_for_display_only() -> None:
    fit = memory_fit({"series": _series(20.0), "leak": {"status": "inconclusive", "reason": "too few cycles"}})
    assert fit is not None and "for display only" in fit["caption"] and "too few cycles" in fit["caption"]
    assert abs((fit["points"][-1][1] - fit["points"][0][1]) / (19 * 100) - 20.0) < 0.01
    assert memory_fit({"series": _series(0.0)[:2], "leak": {}}) is None  # too few readings: no line


def test_the_page_holds_no_histogram_and_no_way_out_of_its_script() -> None:
    hostile = "</script><script>alert(1)</script><!--"
    report = {"run": {"id": "r1"}, "target": {"model": hostile},
              "stages": [{"name": "stage-1", "offered_rps": 10.0, "warmup": False,
                          "histograms": {"latency": _histogram([1000, 2000])}}],
              "resources": {"series": []}, "predecessor": None}
    page = report_html(report)
    assert hostile not in page and "alert(1)" in page  # escaped, not dropped
    assert len(re.findall(r"<script[ >]", page)) == 4  # the data and the three inlined scripts, nothing more
    data = json.loads(re.search(r'<script id="profiler-data" type="application/json">(.*?)</script>', page,
                                re.S).group(1))
    assert data["page"]["report"]["target"]["model"] == hostile
    assert "histograms" not in data["page"]["report"]["stages"][0]
    assert data["page"]["plot"]["spectra"][0]["label"] == "stage-1 (10 rps)"
    assert data["live_interval_ms"] is None
    live = render_page({"status": "idle"}, title="t", live_interval_ms=2000)
    assert '"live_interval_ms":2000' in live and "connect-src 'self'" in live


def test_the_predecessor_is_drawn_from_its_own_report() -> None:
    predecessor = {"run": {"id": "p"}, "stages": [{"name": "warmup", "warmup": True},
                                                  {"name": "stage-1", "offered_rps": 5, "latency_ms": {"p50": 1}}],
                   "resources": {"series": [{"t_s": 1.0, "memory_bytes": 10}, {"t_s": 2.0, "memory_bytes": None}]},
                   "accuracy": {"per_class": {"0": {"f1": 0.5}}}}
    view = page_view({"run": {"id": "r"}, "stages": []}, predecessor)["plot"]["predecessor"]
    assert view == {"id": "p", "stages": [{"name": "stage-1", "offered_rps": 5, "latency_ms": {"p50": 1}}],
                    "series": [[1.0, 10]], "per_class": {"0": {"f1": 0.5}}}


def test_progress_says_what_it_waits_for_and_the_time_left(tmp_path: Path) -> None:
    (tmp_path / "h.jsonl").write_text('{"x": [1]}\n')
    (tmp_path / "p.yaml").write_text(
        "target: {url: 'http://user:secret@127.0.0.1:9/', model: m, ready_timeout_s: 60}\n"
        "dataset: {path: h.jsonl, inputs: x}\nload: {stages: [{rate_rps: 1, duration_s: 1}]}\n")
    state = new_state(load_config(tmp_path / "p.yaml"))
    progress = RunProgress(state)
    state.phase = "waiting for target"
    progress.observe(100.0)
    line = progress.status(115.0)
    assert line.startswith("waiting for the target to be ready: http://REDACTED@127.0.0.1:9") and "secret" not in line
    assert "/v2/models/m/ready" in line and line.endswith("45s left")
    state.phase = "before"
    progress.observe(120.0)
    assert progress.status(121.0) == "before (1s)"
    assert progress.finished_lines() == []
