"""Merge the reports of generators that ran side by side (pods of an Indexed Job) into one, exactly.

Each report carries every stage's histograms HDR-encoded, so a merged stage's percentiles are
those of one histogram holding every request of every part, not an average of percentiles.
Counts, offered and achieved rates and generator CPU add up; windows add up position by position.
Pure: takes and returns plain data (the CLI reads and writes the files).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

from profiler.core.results import OK
from profiler.judge.capacity import capacity_summary, judge_stage, judge_window_stage
from profiler.measure.latency import MAX_ERROR_EXAMPLES, new_histogram, spectrum_ms, value_at_ms


def merge_stages(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One stage summary from the same stage of several reports (generators that each offered the whole rate,
    or the parts of one split timetable, `--part K/N`, each offering its share: either way the rates add up)."""
    _check_same_stage(parts)
    histograms = {kind: _merged_histogram(parts, kind) for kind in ("latency", "service", "lag")}
    completed = _count(parts, "completed")
    if completed != histograms["latency"].get_total_count():
        raise ValueError(f"stage {parts[0]['name']}: {completed} completed but the histograms hold "
                         f"{histograms['latency'].get_total_count()}")
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part["errors_by_kind"])
    sent = _count(parts, "sent")
    unsent = _count(parts, "unsent")
    error_count = sum(errors.values())
    attempted = sent + unsent
    cpu_s = sum(p["generator_cpu_s"] for p in parts)
    reasons = _generator_reasons(parts)
    return {
        "name": parts[0]["name"],
        "warmup": parts[0]["warmup"],
        "offered_rps": round(sum(p["offered_rps"] for p in parts), 9),
        "duration_s": max(p["duration_s"] for p in parts),
        "scheduled": _count(parts, "scheduled"),
        "sent": sent,
        "unsent": unsent,
        "late": _count(parts, "late", missing=0),
        "completed": completed,
        "errors": error_count,
        "errors_by_kind": {k: n for k, n in sorted(errors.items()) if k != OK},
        "error_rate": (error_count + unsent) / attempted if attempted else None,
        "achieved_rps": _sum_known(p["achieved_rps"] for p in parts),
        "latency_ms": spectrum_ms(histograms["latency"]),
        "service_time_ms": spectrum_ms(histograms["service"]),
        "schedule_lag_ms": {"p50": value_at_ms(histograms["lag"], 50.0), "p99": value_at_ms(histograms["lag"], 99.0)},
        **_start_skew(parts),
        "generator_cpu_s": round(cpu_s, 4),
        "generator_cpu_us_per_request": round(cpu_s / sent * 1e6, 1) if sent else None,
        "generator": {"limited": bool(reasons), "cpu_share": None, "reasons": reasons},
        "processes": _count(parts, "processes", missing=1),
        "windows": _merged_windows(parts),
        "error_examples": [e for p in parts for e in p.get("error_examples", [])][:MAX_ERROR_EXAMPLES],
        "histograms": {k: h.encode().decode("ascii") for k, h in histograms.items()},
    }


def _start_skew(parts: list[dict[str, Any]]) -> dict[str, float | None]:
    """The latest part's first send after the stage's shared start, and the spread between the parts' first
    sends (ms): how far apart the parts really started, each measured on its own clock from the same instant.
    None when a part did not say (a report from before parts, or a stage that sent nothing)."""
    firsts = [p.get("first_send_ms") for p in parts]
    known = [f for f in firsts if f is not None]
    if len(known) != len(firsts) or not known:
        return {"first_send_ms": None, "start_skew_ms": None}
    return {"first_send_ms": max(known), "start_skew_ms": round(max(known) - min(known), 3)}


def _check_same_stage(parts: list[dict[str, Any]]) -> None:
    if not parts:
        raise ValueError("nothing to merge")
    names = {p["name"] for p in parts}
    if len(names) != 1:
        raise ValueError(f"cannot merge different stages: {', '.join(sorted(names))}")


def _merged_histogram(parts: list[dict[str, Any]], kind: str) -> HdrHistogram:
    """Every part's encoded `kind` histogram added bucket by bucket (each part must carry one)."""
    histogram = new_histogram()
    for part in parts:
        encoded = (part.get("histograms") or {}).get(kind)
        if not encoded:
            raise ValueError(f"stage {part['name']} has no encoded {kind} histogram to merge")
        histogram.decode_and_add(encoded.encode("ascii"))
    return histogram


def _count(parts: list[dict[str, Any]], key: str, missing: int | None = None) -> int:
    """The parts' count `key` added up; a part without it counts as `missing` (None: every part must have it)."""
    if missing is None:
        return sum(int(p[key]) for p in parts)
    return sum(int(p.get(key, missing)) for p in parts)


def _generator_reasons(parts: list[dict[str, Any]]) -> list[str]:
    """Every part's generator self-check reasons, each named after its part."""
    return [f"part {i}: {r}" for i, p in enumerate(parts) for r in (p.get("generator") or {}).get("reasons", [])]


def _sum_known(values: Iterable[float | None]) -> float | None:
    """The sum of the values that are known; None when none is."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _merged_windows(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Windows position by position: rates and errors added, latency the worst of the parts (an upper bound)."""
    columns = [p.get("windows", []) for p in parts]
    windows = []
    for i in range(max(len(c) for c in columns)):
        column = [c[i] for c in columns if i < len(c)]
        latencies = [w["latency_ms"] for w in column if w["latency_ms"] is not None]
        windows.append({"rps": round(sum(w["rps"] for w in column), 3),
                        "latency_ms": max(latencies) if latencies else None,
                        "errors": sum(w["errors"] for w in column)})
    return windows


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several: stages merged by name (in the first report's order), capacity re-judged.

    Accuracy is taken from the first report (every part replays the same hold-out set), with
    the consistency counts of all parts added. Resources are the first report's (each part
    watched its own node). The verdict is left to the caller, which re-judges the gates.
    """
    if not reports:
        raise ValueError("nothing to merge")
    first = reports[0]
    order = _stage_order(reports)
    objective = first["objective"]
    search = (first.get("capacity") or {}).get("method") == "search"
    shares = _check_parts(reports)
    stages = [_judged(merge_stages([r["stages"][position] for r in reports]), objective, search)
              for position in range(len(order))]
    out = dict(first)
    out["stages"] = stages
    out["capacity"] = {**capacity_summary(stages), "method": "search" if search else "stages"}
    out["run"] = _merged_run(reports)
    out["accuracy"] = _merged_accuracy(reports)
    if shares:
        out["load"] = {**first["load"], "part": None, "parts": len(reports)}
    return out


def _check_parts(reports: list[dict[str, Any]]) -> bool:
    """Whether the reports are the parts of one split run (`--part K/N`): then they must be every part 0 to N-1
    once, with the same start instant, or the merged counts would not be the run's. False for reports of
    generators that each ran the whole timetable."""
    given = [(r.get("load") or {}).get("part") for r in reports]
    if all(p is None for p in given):
        return False
    parts: list[dict[str, int]] = [p for p in given if p is not None]
    if len(parts) != len(given):
        raise ValueError("some reports are parts of a split run (--part) and some are not")
    count = parts[0]["count"]
    indices = sorted(p["index"] for p in parts)
    if any(p["count"] != count for p in parts) or indices != list(range(count)):
        have = ", ".join(f"{p['index']}/{p['count']}" for p in parts)
        raise ValueError(f"the parts of a split run must be 0 to N-1 of N, each once; got {have}")
    starts = {(r.get("load") or {}).get("start_at") for r in reports}
    if len(starts) != 1:
        raise ValueError(f"the parts started at different instants: {sorted(map(str, starts))}")
    return True


def _stage_order(reports: list[dict[str, Any]]) -> list[str]:
    """The first report's stage names, which every other report must have in the same order."""
    order = [s["name"] for s in reports[0]["stages"]]
    for index, report in enumerate(reports[1:], start=2):
        names = [s["name"] for s in report["stages"]]
        if names != order:
            raise ValueError(f"report {index} has stages {names}, the first has {order}")
    return order


def _judged(stage: dict[str, Any], objective: dict[str, Any], search: bool) -> dict[str, Any]:
    """The merged stage with its objective re-judged (by windows in a search); warm-ups are not judged."""
    if stage["warmup"]:
        return stage
    judge = judge_window_stage if search else judge_stage
    stage["objective"] = judge(stage, objective["percentile"], objective["latency_ms"], objective["max_error_rate"])
    return stage


def _merged_run(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The first report's run block, named after every part; completed only if every part completed."""
    ids = [r["run"]["id"] for r in reports]
    status = "completed" if all(r["run"]["status"] == "completed" for r in reports) else "partial"
    return {**reports[0]["run"], "id": "merged-" + "+".join(ids), "status": status, "merged_from": ids}


def _merged_accuracy(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The first report's accuracy, with every part's consistency counts added."""
    accuracy = dict(reports[0].get("accuracy") or {})
    if accuracy.get("consistency") is not None:
        counts = [(r.get("accuracy") or {}).get("consistency", {}) for r in reports]
        accuracy["consistency"] = {"compared": sum(c.get("compared", 0) for c in counts),
                                   "inconsistent": sum(c.get("inconsistent", 0) for c in counts)}
    return accuracy
