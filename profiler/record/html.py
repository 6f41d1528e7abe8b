"""`report.html`: one self-contained page that draws a report, and the view of a report that it draws.

The page inlines everything it needs (Vega and Vega-Lite, its own script and styles, the data), so it opens
offline and asks no network for anything. The charts are drawn in the browser by Vega-Lite from a *view* of
the report that `page_view` builds here: the report without its encoded histograms, plus what the browser
cannot derive from the JSON alone (each stage's HDR percentile spectrum, decoded; the CPU series; the memory
trend over the load window; the predecessor's curves). The sidecar's live page (`GET /`) is the same page,
polling `/report` while a run is under way.

Pure: no clock, no sockets, no files but the page's own packaged assets, read once.
"""

from __future__ import annotations

import html
import importlib.resources
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram
from scipy.stats import theilslopes

from profiler.core.hdr import values_at_percentiles

NINES_STEPS_PER_DECADE = 10
"""Points of the percentile spectrum per decade of 1/(1-q): ~50 points for a stage of 100,000 requests."""
MAX_SERIES_POINTS = 600
"""The predecessor's memory series is thinned to this many points (the page stays small)."""


@cache
def _asset(name: str) -> str:
    """One of the page's packaged assets (profiler/record/assets), as text."""
    return importlib.resources.files("profiler.record").joinpath("assets", name).read_text("utf-8")


def spectrum_points(encoded: str, steps_per_decade: int = NINES_STEPS_PER_DECADE) -> list[list[float]]:
    """An encoded latency histogram (microseconds) as [1/(1-q), latency ms] points: q from 0 up to the last
    recorded value, log-spaced in 1/(1-q) (the HdrHistogram "nines" plot). Empty for an empty histogram."""
    histogram = HdrHistogram.decode(encoded)
    total = histogram.get_total_count()
    if total == 0:
        return []
    decades = math.log10(total)
    steps = math.ceil(decades * steps_per_decade)
    quantiles = [1 - 10 ** (-k / steps_per_decade) for k in range(steps)]
    values = values_at_percentiles(histogram, [q * 100 for q in quantiles])
    points = [[round(1 / (1 - q), 4), round(v / 1000, 4)] for q, v in zip(quantiles, values, strict=True)]
    points.append([float(total), round(histogram.get_max_value() / 1000, 4)])  # the maximum, at q = 1 - 1/total
    return points


def _stage_label(stage: Mapping[str, Any]) -> str:
    return f"{stage.get('name')} ({stage.get('offered_rps'):g} rps)"


def spectra(stages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The percentile spectrum of every measured stage that has a latency histogram."""
    out = []
    for stage in stages:
        encoded = (stage.get("histograms") or {}).get("latency")
        if stage.get("warmup") or not encoded:
            continue
        points = spectrum_points(encoded)
        if points:
            out.append({"stage": stage.get("name"), "label": _stage_label(stage), "points": points})
    return out


def cpu_series(series: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Cores busy between consecutive readings: the difference of cumulative CPU seconds over the time between."""
    out = []
    for before, after in itertools.pairwise(series):
        cpu_a, cpu_b = before.get("cpu_s"), after.get("cpu_s")
        dt_s = after["t_s"] - before["t_s"]
        if cpu_a is None or cpu_b is None or dt_s <= 0 or cpu_b < cpu_a:
            continue
        out.append({"t": round(after["t_s"], 3), "cores": round((cpu_b - cpu_a) / dt_s, 4)})
    return out


def _load_window(series: Sequence[Mapping[str, Any]], leak: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The readings the leak test looked at: the load phase, from the warm-up cut (its first request) on."""
    load = [p for p in series if p.get("phase") == "load" and p.get("memory_bytes") is not None]
    window = leak.get("window_requests") or []
    if len(window) == 2 and window[0] is not None:
        load = [p for p in load if window[0] <= p.get("requests", 0) <= (window[1] or math.inf)]
    return load


def memory_fit(resources: Mapping[str, Any]) -> dict[str, Any] | None:
    """The memory trend over the load window for the chart: memory against requests served, as fitted by the
    leak test (its slope and band) where it gave one, else a Theil-Sen line drawn for display only (the caption
    says which). Points are [t_s, fitted bytes, low, high] at the window's readings; `cut_t` is the warm-up cut."""
    series = resources.get("series") or []
    leak = resources.get("leak") or {}
    window = _load_window(series, leak)
    if len(window) < 3:
        return None
    requests = np.array([p.get("requests", 0) for p in window], dtype=np.float64)
    memory = np.array([p["memory_bytes"] for p in window], dtype=np.float64)
    slope = leak.get("bytes_per_request")
    if slope is not None:
        low = leak.get("bytes_per_request_low", slope)
        high = leak.get("bytes_per_request_high", slope)
        caption = (f"The leak test ({leak.get('method')}): {slope:.4g} bytes per request "
                   f"({low if low is not None else slope:.4g} to {high if high is not None else slope:.4g}); "
                   f"{leak.get('status')}.")
    elif np.ptp(requests) > 0:
        slope, _, low, high = (float(x) for x in theilslopes(memory, requests))
        caption = (f"The leak test gave no slope ({leak.get('status', 'not run')}: {leak.get('reason', '-')}); "
                   f"the red line is a Theil-Sen fit drawn for display only ({slope:.4g} bytes per request).")
    else:
        return None
    low = slope if low is None else low
    high = slope if high is None else high
    pivot = float(np.median(requests))
    centre = float(np.median(memory - slope * (requests - pivot)))
    points = [[round(float(p["t_s"]), 3), *(round(centre + s * (r - pivot), 1) for s in (slope, low, high))]
              for p, r in zip(window, requests, strict=True)]
    return {"points": points, "cut_t": round(float(window[0]["t_s"]), 3), "caption": caption}


def predecessor_view(predecessor: Mapping[str, Any]) -> dict[str, Any]:
    """What the page overlays of the predecessor's report: its measured stages' latency, its memory series
    (thinned) and its per-class metrics."""
    stages = [{"name": s.get("name"), "offered_rps": s.get("offered_rps"), "latency_ms": s.get("latency_ms")}
              for s in predecessor.get("stages") or [] if not s.get("warmup")]
    series = [[p["t_s"], p["memory_bytes"]] for p in (predecessor.get("resources") or {}).get("series") or []
              if p.get("memory_bytes") is not None]
    step = max(1, math.ceil(len(series) / MAX_SERIES_POINTS))
    return {"id": (predecessor.get("run") or {}).get("id"), "stages": stages, "series": series[::step],
            "per_class": (predecessor.get("accuracy") or {}).get("per_class")}


def page_view(report: Mapping[str, Any], predecessor: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The document the page draws: the report without its encoded histograms, and the plot data derived from
    it (spectra, CPU, memory trend) and from the predecessor's report when there is one."""
    stages = report.get("stages") or []
    resources = report.get("resources") or {}
    slim = {**report, "stages": [{k: v for k, v in s.items() if k != "histograms"} for s in stages]}
    plot = {"spectra": spectra(stages), "cpu": cpu_series(resources.get("series") or []),
            "memory_fit": memory_fit(resources),
            "predecessor": predecessor_view(predecessor) if predecessor is not None else None}
    return {"report": slim, "plot": plot}


def encode_json(document: Any) -> str:
    """Compact JSON by the pure-Python encoder (json's iterencode): slower than json.dumps, but it lets go of
    the GIL as it goes, where the C encoder holds it for the whole document (tens of milliseconds for a long
    capacity search's page), so the sidecar's event loop is never held up that long."""
    encoder = json.JSONEncoder(allow_nan=False, default=str, separators=(",", ":"))
    return "".join(encoder.iterencode(document))


def _script_json(document: Any) -> str:
    """JSON safe inside a <script> element: no '</' can end it early, no HTML comment can open."""
    text = encode_json(document)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(page: Mapping[str, Any], *, title: str, live_interval_ms: int | None = None) -> str:
    """The HTML page drawing `page` (a `page_view`, or the sidecar's progress document); with
    `live_interval_ms` it polls the sidecar's /report that often (the live page at GET /)."""
    data = {"page": page, "live_interval_ms": live_interval_ms}
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # The page may load nothing from anywhere but itself (the live page polls its own origin).
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline' "
        "'unsafe-eval'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'\">",
        f"<title>{html.escape(title)}</title>",
        f"<style>{_asset('report.css')}</style>",
        "</head><body data-state=\"loading\">",
        f'<header><h1 id="title">{html.escape(title)}</h1></header>',
        '<main id="report"><div id="charts"></div></main>',
        "<footer>profiler report · charts by Vega-Lite · this file needs no network</footer>",
        f'<script id="profiler-data" type="application/json">{_script_json(data)}</script>',
        f"<script>{_asset('vega.min.js')}</script>",
        f"<script>{_asset('vega-lite.min.js')}</script>",
        f"<script>{_asset('report.js')}</script>",
        "</body></html>",
        "",
    ])


def page_title(report: Mapping[str, Any]) -> str:
    """'Profile of MODEL — run ID'."""
    model = (report.get("target") or {}).get("model") or "a model"
    return f"Profile of {model} — run {(report.get('run') or {}).get('id', '-')}"


def report_html(report: Mapping[str, Any], predecessor: Mapping[str, Any] | None = None) -> str:
    """The self-contained page of a finished report (and its predecessor's report, overlaid, when given)."""
    return render_page(page_view(report, predecessor), title=page_title(report))
