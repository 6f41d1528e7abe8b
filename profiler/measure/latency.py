"""Latency per stage in HDR histograms: from the intended send time, from the actual send, and lag."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from profiler.core.hdr import values_at_percentiles
from profiler.core.results import OK, Result, StageAccount, StageTally, TokenTimes
from profiler.schedule import Stage

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
MAX_ERROR_EXAMPLES = 5
TOKEN_HISTOGRAMS = ("ttft", "itl", "tpot")
"""A generative stage's histograms, beside latency, service and lag."""
MAX_WINDOWS = 10_000
"""Measurement windows kept per stage (each a few numbers), so a long stage stays bounded."""
GENERATOR_CPU_LIMIT = 0.85
"""A generator process busier than this share of one core was probably the limit, not the model."""
GENERATOR_LAG_LIMIT_MS = 10.0
"""Schedule lag p99 above this means the generator could not keep its own timetable."""


def new_histogram() -> HdrHistogram:
    """A histogram of microseconds from 1 us to 1 h at 3 significant digits (fixed size)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


BUFFER_VALUES = 4096
"""Values held before a vectorised flush into the histogram (hdrh's record_value costs ~3 us each in Python)."""


class Recording:
    """An HDR histogram of microseconds fed in nanoseconds through a small buffer.

    `add(value_ns)` appends to a fixed-size array; every BUFFER_VALUES values (and whenever the
    histogram is read through `histogram`) they are binned with numpy using hdrh's own index
    formula, so the histogram is exactly what record_value would have built, at ~1/20 the cost.
    """

    __slots__ = ("_buffer", "_histogram")

    def __init__(self) -> None:
        self._histogram = new_histogram()
        self._buffer = array("q")

    def add(self, value_ns: int) -> None:
        """Record one duration (clamped into 1 us .. 1 h)."""
        buffer = self._buffer
        buffer.append(value_ns)
        if len(buffer) >= BUFFER_VALUES:
            self.flush()

    def flush(self) -> None:
        """Bin the buffered values into the histogram."""
        if not self._buffer:
            return
        h = self._histogram
        values = np.frombuffer(self._buffer, dtype=np.int64) // 1000
        np.clip(values, LOWEST_US, HIGHEST_US, out=values)
        _, exponents = np.frexp((values | h.sub_bucket_mask).astype(np.float64))
        bucket = exponents.astype(np.int64) - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
        sub = values >> (bucket + h.unit_magnitude)
        index = ((bucket + 1) << h.sub_bucket_half_count_magnitude) + (sub - h.sub_bucket_half_count)
        counts = np.ctypeslib.as_array(h.counts)[: h.counts_len]
        binned = np.bincount(index, minlength=h.counts_len).astype(counts.dtype)
        np.add(counts, binned, out=counts)
        h.total_count += len(values)
        low, high = int(values.min()), int(values.max())
        h.min_value = low if h.total_count == len(values) else min(h.min_value, low)
        h.max_value = max(h.max_value, high)
        self._buffer = array("q")

    @property
    def histogram(self) -> HdrHistogram:
        """The histogram with every value recorded so far."""
        self.flush()
        return self._histogram


def record_ns(histogram: HdrHistogram, value_ns: int) -> None:
    """Record a duration, clamped into the histogram's range."""
    histogram.record_value(min(max(value_ns // 1000, LOWEST_US), HIGHEST_US))


def spectrum_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """p50..p99.9 and max in milliseconds; None for an empty histogram (never a fake zero)."""
    keys = [_pkey(p) for p in PERCENTILES] + ["max"]
    if histogram.get_total_count() == 0:
        return dict.fromkeys(keys)
    values = [v / 1000 for v in values_at_percentiles(histogram, PERCENTILES)]
    values.append(histogram.get_max_value() / 1000)
    return dict(zip(keys, values, strict=True))


def _pkey(percentile: float) -> str:
    return "p" + f"{percentile:g}".replace(".", "")


@dataclass(frozen=True, slots=True)
class TokenSlo:
    """Goodput's per-request SLOs in ms (None: not bounded), after vLLM's `bench serve --goodput`: a request is
    good when its TTFT, TPOT and end-to-end latency each met theirs."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @property
    def given(self) -> bool:
        """Whether any SLO is set (goodput is reported only then)."""
        return self.ttft_ms is not None or self.tpot_ms is not None or self.e2e_ms is not None


@dataclass
class TokenFigures:
    """A stage's generative figures: TTFT, inter-token gaps and TPOT in HDR histograms, token counts, goodput.

    TTFT is taken from the intended send time, like latency (vLLM takes it from the actual send, which a
    closed loop shares; an open loop that falls behind shows it here). TPOT is (end - first token) / (output
    tokens - 1) for answers of two tokens or more, as in vLLM.
    """

    ttft: Recording = field(default_factory=Recording)
    itl: Recording = field(default_factory=Recording)
    tpot: Recording = field(default_factory=Recording)
    requests: int = 0
    timed: int = 0
    counted: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    good: int = 0

    def add(self, result: Result, tokens: TokenTimes, slo: TokenSlo | None) -> None:
        """One successful generative answer."""
        self.requests += 1
        self.output_tokens += tokens.output_tokens
        if tokens.prompt_tokens > 0:
            self.prompt_tokens += tokens.prompt_tokens
        if tokens.counted:
            self.counted += 1
        e2e_ns = result.done_ns - result.intended_ns
        ttft_ns = tpot_ns = -1
        if tokens.first_ns:
            self.timed += 1
            ttft_ns = tokens.first_ns - result.intended_ns
            self.ttft.add(ttft_ns)
            itl = self.itl
            for gap in tokens.gaps_ns:
                itl.add(gap)
            if tokens.output_tokens > 1:
                tpot_ns = (result.done_ns - tokens.first_ns) // (tokens.output_tokens - 1)
                self.tpot.add(tpot_ns)
        if slo is not None and _good(slo, ttft_ns, tpot_ns, e2e_ns):
            self.good += 1


def _good(slo: TokenSlo, ttft_ns: int, tpot_ns: int, e2e_ns: int) -> bool:
    """Every SLO given was met (a TTFT SLO needs a timed answer; an answer of one token meets any TPOT SLO)."""
    if slo.ttft_ms is not None and not 0 <= ttft_ns <= slo.ttft_ms * 1e6:
        return False
    if slo.tpot_ms is not None and tpot_ns > slo.tpot_ms * 1e6:
        return False
    return slo.e2e_ms is None or e2e_ns <= slo.e2e_ms * 1e6


@dataclass
class StageRecorder:
    """Accumulates one stage's results: counts by outcome, three histograms, windows, first error examples.

    `scheduled` requests were due; each was sent or counted `unsent` (it could not get an in-flight
    slot within the timeout of its intended time). `late` ones were sent, but only after waiting
    for a slot. The lag histogram holds how late the generator itself woke up for each send.
    The generator opens the recorder when the stage starts and closes it with the stage's account
    (`open`, `close`); a recorder fed by worker processes is `rebuild`-ed from their figures instead.

    While the stage runs its figures are live: the counts come from the engine's `StageTally` (or, rebuilt
    from workers, from their partial figures, as of `as_of_ns`), `achieved_rps` is completions over the
    time elapsed so far (not the planned duration), `generator_cpu_s` the CPU so far, and `sent` counts
    requests sent, `in_flight` of them not yet answered.
    """

    stage: Stage
    share: float = 1.0
    """The fraction of the stage's timetable this process sends: 1/N for a part of N (`--part`), else 1."""
    started_ns: int = 0
    ended_ns: int = 0
    first_sent_ns: int = 0
    _latency: Recording = field(default_factory=Recording)
    _service: Recording = field(default_factory=Recording)
    _lag: Recording = field(default_factory=Recording)
    outcomes: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    scheduled: int = 0
    unsent: int = 0
    late: int = 0
    last_done_ns: int = 0
    cpu_s: float = 0.0
    processes: int = 1
    cut_short: bool = False
    """The stage ended before its timetable did (stop, or a capacity-search stage that settled early)."""
    window_ns: int = 0
    window_percentile: float = 99.0
    windows: list[tuple[float, float | None, int]] = field(default_factory=list)
    """Closed windows: (completed per second, latency at window_percentile in ms, errors)."""
    _window_hist: HdrHistogram | None = None
    _window_index: int = 0
    _window_done: int = 0
    _window_errors: int = 0
    _rebuilt: bool = False
    live: StageTally | None = None
    """The engine's running count while the stage runs in this process; None once closed."""
    launched: int = 0
    """Requests sent so far while the stage runs (once closed, `sent` counts the answered ones)."""
    as_of_ns: int = 0
    """While the stage runs: when its live figures were taken (monotonic); 0 once closed."""
    slo: TokenSlo | None = None
    """Goodput's SLOs, for generative answers."""
    tokens: TokenFigures | None = None
    """A generative model's figures (None until a successful answer brings a token timeline)."""

    def add(self, result: Result) -> None:
        """Count the result; only successful requests enter the latency histograms."""
        self.outcomes[result.outcome] += 1
        if result.done_ns > self.last_done_ns:
            self.last_done_ns = result.done_ns
        ok = result.outcome == OK
        if ok:
            self._latency.add(result.done_ns - result.intended_ns)
            self._service.add(result.done_ns - result.sent_ns)
            if result.tokens is not None:
                if self.tokens is None:
                    self.tokens = TokenFigures()
                self.tokens.add(result, result.tokens, self.slo)
        elif len(self.error_examples) < MAX_ERROR_EXAMPLES and result.error:
            self.error_examples.append(f"{result.outcome}: {result.error}"[:300])
        if self.window_ns:
            self._window_add(result, ok)

    def open(self, started_ns: int, tally: StageTally | None = None) -> None:
        """The stage starts at `started_ns` (monotonic): windows and rates count from it while it runs.

        `tally` is the engine's running count of the stage, read for live figures until `close`; without
        one (a stage run by worker processes) the figures are live as of the last `rebuild`.
        """
        self.started_ns = started_ns
        self.live = tally
        self.as_of_ns = started_ns

    @property
    def running(self) -> bool:
        """Whether the stage is under way: opened and not yet closed, so its figures are live."""
        return not self.ended_ns and (self.live is not None or self.as_of_ns > 0)

    def _sync(self) -> None:
        """Copy the engine's running count (when the stage runs in this process): what live figures read."""
        tally = self.live
        if tally is None or self.ended_ns:
            return
        self.scheduled, self.unsent, self.late, self.launched = tally.scheduled, tally.unsent, tally.late, tally.sent
        self.cpu_s = tally.cpu_s()
        self.as_of_ns = tally.now_ns()

    def close(self, account: StageAccount) -> None:
        """The stage's account, in one piece once it has ended (its requests drained)."""
        self.live = None
        self.as_of_ns = 0
        self.started_ns = account.started_ns
        self.ended_ns = account.ended_ns
        self.scheduled = account.scheduled
        self.unsent = account.unsent
        self.late = account.late
        self.cut_short = account.cut_short
        self.cpu_s = account.cpu_s
        self.first_sent_ns = account.first_sent_ns
        # Binned now, so that reading an ended stage changes nothing: its summary may be built in a thread
        # (the sidecar's /report) while the loop reads it too.
        recordings = [self._latency, self._service, self._lag]
        if self.tokens is not None:
            recordings += [self.tokens.ttft, self.tokens.itl, self.tokens.tpot]
        for recording in recordings:
            recording.flush()

    def record_lag(self, lag_ns: int) -> None:
        """How late the generator woke up for one send (its own lateness, not the model's)."""
        self._lag.add(lag_ns)

    def _window_add(self, result: Result, ok: bool) -> None:
        index = (result.done_ns - self.started_ns) // self.window_ns
        if index > self._window_index:
            self._close_windows(index)
        if self._window_hist is None:
            self._window_hist = new_histogram()
        if ok:
            self._window_done += 1
            record_ns(self._window_hist, result.done_ns - result.intended_ns)
        else:
            self._window_errors += 1

    def _close_windows(self, upto: int) -> None:
        while self._window_index < upto:
            hist = self._window_hist
            p = (float(values_at_percentiles(hist, [self.window_percentile])[0]) / 1000
                 if hist is not None and hist.get_total_count() else None)
            if len(self.windows) < MAX_WINDOWS:
                self.windows.append((self._window_done / (self.window_ns / 1e9), p, self._window_errors))
            if hist is not None:
                hist.reset()
            self._window_done = 0
            self._window_errors = 0
            self._window_index += 1

    def close_windows_until(self, now_ns: int) -> None:
        """Close every window that ended before `now_ns` (windows with no answer count as empty).

        A recorder rebuilt from worker processes' figures holds only the windows they closed.
        """
        if self.window_ns and not self._rebuilt:
            self._close_windows((now_ns - self.started_ns) // self.window_ns)

    @property
    def latency(self) -> HdrHistogram:
        """Latency from the intended send time (successful requests), us."""
        return self._latency.histogram

    @property
    def service(self) -> HdrHistogram:
        """Service time from the actual send (successful requests), us."""
        return self._service.histogram

    @property
    def lag(self) -> HdrHistogram:
        """How late the generator woke for each send, us."""
        return self._lag.histogram

    @property
    def completed(self) -> int:
        """Requests that came back with a prediction."""
        return self.outcomes[OK]

    @property
    def errors(self) -> int:
        """Requests sent that failed, by any cause."""
        return sum(n for outcome, n in self.outcomes.items() if outcome != OK)

    def _wall_s(self) -> float:
        """The dispatch's wall time: start to last send once ended, start to the live figures while running."""
        end_ns = self.ended_ns or (self.as_of_ns if self.running else self.started_ns)
        return (end_ns - self.started_ns) / 1e9

    def achieved_rps(self) -> float | None:
        """Completions per second: over the time elapsed so far while the stage runs; once ended, over its
        planned duration (its actual one when cut short), stretched to the last answer."""
        self._sync()
        if self.running:
            elapsed_s = self._wall_s()
            return self.completed / elapsed_s if elapsed_s > 0 else None
        planned_s = (self.ended_ns - self.started_ns) / 1e9 if self.cut_short else self.stage.duration_s
        window_s = max(planned_s, (max(self.last_done_ns, self.ended_ns) - self.started_ns) / 1e9)
        return self.completed / window_s if window_s > 0 else None

    def generator_check(self) -> dict[str, Any]:
        """Whether the generator, not the model, was the limit: its CPU share per process and its lag."""
        self._sync()
        wall_s = self._wall_s()
        share = self.cpu_s / self.processes / wall_s if wall_s > 0 else None
        lag_p99 = value_at_ms(self.lag, 99.0)
        reasons = []
        if share is not None and share > GENERATOR_CPU_LIMIT:
            reasons.append(f"generator CPU {share:.0%} of a core per process > {GENERATOR_CPU_LIMIT:.0%}")
        if lag_p99 is not None and lag_p99 > GENERATOR_LAG_LIMIT_MS:
            reasons.append(f"schedule lag p99 {lag_p99:.1f} ms > {GENERATOR_LAG_LIMIT_MS:g} ms")
        return {"limited": bool(reasons), "cpu_share": None if share is None else round(share, 3),
                "reasons": reasons}

    def summary(self) -> dict[str, Any]:
        """The stage's figures as plain data for the report (live while the stage runs, see the class)."""
        achieved_rps = self.achieved_rps()  # syncs the live counts first
        answered = sum(self.outcomes.values())
        sent = max(self.launched, answered) if self.running else answered
        attempted = answered + self.unsent
        live = {"in_flight": sent - answered} if self.running else {}
        return {
            "name": self.stage.name,
            "warmup": self.stage.warmup,
            "offered_rps": self.stage.rate_rps * self.share,
            "duration_s": self.stage.duration_s,
            "scheduled": self.scheduled,
            "sent": sent,
            **live,
            "unsent": self.unsent,
            "late": self.late,
            "completed": self.completed,
            "errors": self.errors,
            "errors_by_kind": {k: n for k, n in sorted(self.outcomes.items()) if k != OK},
            "error_rate": (self.errors + self.unsent) / attempted if attempted else None,
            "achieved_rps": achieved_rps,
            "latency_ms": spectrum_ms(self.latency),
            "service_time_ms": spectrum_ms(self.service),
            "schedule_lag_ms": {"p50": value_at_ms(self.lag, 50.0), "p99": value_at_ms(self.lag, 99.0)},
            "first_send_ms": self.first_send_ms(),
            "generator_cpu_s": round(self.cpu_s, 4),
            "generator_cpu_us_per_request": round(self.cpu_s / sent * 1e6, 1) if sent else None,
            "generator": self.generator_check(),
            "processes": self.processes,
            "windows": [{"rps": round(r, 3), "latency_ms": p, "errors": e} for r, p, e in self.windows],
            "error_examples": list(self.error_examples),
            "histograms": self.encoded(),
            "mode": "closed-loop" if self.stage.closed_loop else "open-loop",
            **({"concurrency": self.stage.concurrency} if self.stage.closed_loop else {}),
            **self.token_summary(),
        }

    def first_send_ms(self) -> float | None:
        """How long after the stage's start its first request went out (ms; None before one did): the part of a
        split load's start skew that is this process's own."""
        if not (self.first_sent_ns and self.started_ns):
            return None
        return round((self.first_sent_ns - self.started_ns) / 1e6, 3)

    def token_summary(self) -> dict[str, Any]:
        """A generative stage's figures (nothing for other models): TTFT, ITL and TPOT percentiles (ms, the keys
        of latency_ms), output tokens per second, goodput, and where the token counts came from."""
        figures = self.tokens
        if figures is None:
            return {}
        span_s = self._rate_window_s()
        out: dict[str, Any] = {
            "ttft_ms": spectrum_ms(figures.ttft.histogram),
            "itl_ms": spectrum_ms(figures.itl.histogram),
            "tpot_ms": spectrum_ms(figures.tpot.histogram),
            "output_tokens": figures.output_tokens,
            "prompt_tokens": figures.prompt_tokens,
            "output_tokens_per_s": figures.output_tokens / span_s if span_s else None,
            "token_counts": ("usage" if not figures.counted else
                             "counted chunks" if figures.counted == figures.requests else "usage and counted chunks"),
            "timed_requests": figures.timed,
        }
        if self.slo is not None and self.slo.given:
            out["goodput_rps"] = figures.good / span_s if span_s else None
            out["good_requests"] = figures.good
        return out

    def _rate_window_s(self) -> float | None:
        """The seconds achieved_rps divides by (see there)."""
        rps = self.achieved_rps()
        return self.completed / rps if rps else None

    def encoded(self) -> dict[str, str]:
        """The histograms, HDR-encoded (compressed, base64): merge them exactly with `merge` (a generative
        stage's ttft, itl and tpot too)."""
        names = ("latency", "service", "lag") + (TOKEN_HISTOGRAMS if self.tokens is not None else ())
        return {name: getattr(self, name).encode().decode("ascii") for name in names}

    @property
    def ttft(self) -> HdrHistogram:
        """Time to first token from the intended send time (timed generative answers), us."""
        return self._token_figures().ttft.histogram

    @property
    def itl(self) -> HdrHistogram:
        """Gaps between successive content events of streamed answers, us."""
        return self._token_figures().itl.histogram

    @property
    def tpot(self) -> HdrHistogram:
        """Time per output token after the first, per answer of two tokens or more, us."""
        return self._token_figures().tpot.histogram

    def _token_figures(self) -> TokenFigures:
        if self.tokens is None:
            self.tokens = TokenFigures()
        return self.tokens

    def to_wire(self) -> dict[str, Any]:
        """Everything needed to merge this stage into another recorder exactly (plain, JSON-able data); while
        the stage runs, its live figures so far, as of `as_of_ns`."""
        self._sync()
        running = self.running
        answered = sum(self.outcomes.values())
        return {"histograms": self.encoded(), "outcomes": dict(self.outcomes), "scheduled": self.scheduled,
                "sent": max(self.launched, answered) if running else answered,
                "as_of_ns": self.as_of_ns if running else 0,
                "unsent": self.unsent, "late": self.late, "started_ns": self.started_ns,
                "first_sent_ns": self.first_sent_ns, "ended_ns": self.ended_ns, "last_done_ns": self.last_done_ns,
                "cpu_s": self.cpu_s,
                "processes": self.processes, "cut_short": self.cut_short,
                "error_examples": list(self.error_examples),
                "windows": [list(w) for w in self.windows]}

    def rebuild(self, wires: list[dict[str, Any]]) -> None:
        """Start over from other recorders' `to_wire` figures (the live view of a stage run by workers)."""
        self._latency, self._service, self._lag = Recording(), Recording(), Recording()
        self.outcomes = Counter()
        self.error_examples = []
        self.scheduled = self.unsent = self.late = 0
        self.cpu_s = 0.0
        self.ended_ns = self.last_done_ns = self.first_sent_ns = 0
        self.cut_short = False
        self.windows = []
        self._rebuilt = True
        self.live = None
        self.launched = self.as_of_ns = 0
        for position, wire in enumerate(wires):
            self.merge(wire, first=position == 0)
        if wires:
            # A window counts once every part has closed it (parts report at slightly different times).
            del self.windows[min(len(w.get("windows", [])) for w in wires):]

    def merge(self, wire: dict[str, Any], *, first: bool = False) -> None:
        """Add another recorder's `to_wire` figures: counts summed, histograms added bucket by bucket.

        Windows are added position by position (the processes ran the same stage side by side);
        a window's latency percentile becomes the worst of the parts (an upper bound).
        """
        for name, text in wire["histograms"].items():
            if text:
                getattr(self, name).decode_and_add(text.encode("ascii"))
        self.outcomes.update(wire["outcomes"])
        self.scheduled += int(wire["scheduled"])
        self.launched += int(wire.get("sent", sum(wire["outcomes"].values())))
        self.as_of_ns = max(self.as_of_ns, int(wire.get("as_of_ns", 0)))
        self.unsent += int(wire["unsent"])
        self.late += int(wire.get("late", 0))
        self.cut_short = self.cut_short or bool(wire.get("cut_short"))
        self.cpu_s += float(wire["cpu_s"])
        self.processes = int(wire["processes"]) if first else self.processes + int(wire["processes"])
        starts = [v for v in (self.started_ns, int(wire["started_ns"])) if v]
        self.started_ns = min(starts) if starts else 0
        firsts = [v for v in (self.first_sent_ns, int(wire.get("first_sent_ns", 0))) if v]
        self.first_sent_ns = min(firsts) if firsts else 0
        self.ended_ns = max(self.ended_ns, int(wire["ended_ns"]))
        self.last_done_ns = max(self.last_done_ns, int(wire["last_done_ns"]))
        room = MAX_ERROR_EXAMPLES - len(self.error_examples)
        self.error_examples.extend(wire["error_examples"][:max(room, 0)])
        merged = []
        theirs = [tuple(w) for w in wire.get("windows", [])]
        for i in range(max(len(self.windows), len(theirs))):
            a = self.windows[i] if i < len(self.windows) else (0.0, None, 0)
            b = theirs[i] if i < len(theirs) else (0.0, None, 0)
            lats = [v for v in (a[1], b[1]) if v is not None]
            merged.append((float(a[0]) + float(b[0]), max(lats) if lats else None, int(a[2]) + int(b[2])))
        self.windows = merged


def value_at_ms(histogram: HdrHistogram, percentile: float) -> float | None:
    """The value at `percentile` in ms; None for an empty histogram."""
    if histogram.get_total_count() == 0:
        return None
    return float(values_at_percentiles(histogram, [percentile])[0]) / 1000


def finite_or_none(value: float | None) -> float | None:
    """A number for the report, or None for a missing or non-finite one (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else value
