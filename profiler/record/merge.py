"""Merge the reports of generators that ran side by side (pods of an Indexed Job) into one, exactly.

Each report carries every stage's histograms HDR-encoded, so a merged stage's percentiles are
those of one histogram holding every request of every part, not an average of percentiles.
Counts, offered and achieved rates and generator CPU add up; windows add up position by position.
Pure: takes and returns plain data (the CLI reads and writes the files).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from profiler.core.results import OK
from profiler.judge.capacity import capacity_summary, judge_stage, judge_window_stage
from profiler.measure.latency import MAX_ERROR_EXAMPLES, new_histogram, spectrum_ms, value_at_ms


def merge_stages(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One stage summary from the same stage of several reports."""
    if not parts:
        raise ValueError("nothing to merge")
    names = {p["name"] for p in parts}
    if len(names) != 1:
        raise ValueError(f"cannot merge different stages: {', '.join(sorted(names))}")
    histograms = {}
    for kind in ("latency", "service", "lag"):
        histogram = new_histogram()
        for part in parts:
            encoded = (part.get("histograms") or {}).get(kind)
            if not encoded:
                raise ValueError(f"stage {part['name']} has no encoded {kind} histogram to merge")
            histogram.decode_and_add(encoded.encode("ascii"))
        histograms[kind] = histogram
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part["errors_by_kind"])
    sent = sum(p["sent"] for p in parts)
    unsent = sum(p["unsent"] for p in parts)
    error_count = sum(errors.values())
    attempted = sent + unsent
    cpu_s = sum(p["generator_cpu_s"] for p in parts)
    achieved = [p["achieved_rps"] for p in parts]
    windows: list[dict[str, Any]] = []
    for i in range(max(len(p.get("windows", [])) for p in parts)):
        column = [p["windows"][i] for p in parts if i < len(p.get("windows", []))]
        latencies = [w["latency_ms"] for w in column if w["latency_ms"] is not None]
        windows.append({"rps": round(sum(w["rps"] for w in column), 3),
                        "latency_ms": max(latencies) if latencies else None,
                        "errors": sum(w["errors"] for w in column)})
    reasons = [f"part {i}: {r}" for i, p in enumerate(parts) for r in (p.get("generator") or {}).get("reasons", [])]
    examples = [e for p in parts for e in p.get("error_examples", [])][:MAX_ERROR_EXAMPLES]
    completed = sum(p["completed"] for p in parts)
    if completed != histograms["latency"].get_total_count():
        raise ValueError(f"stage {parts[0]['name']}: {completed} completed but the histograms hold "
                         f"{histograms['latency'].get_total_count()}")
    return {
        "name": parts[0]["name"],
        "warmup": parts[0]["warmup"],
        "offered_rps": sum(p["offered_rps"] for p in parts),
        "duration_s": max(p["duration_s"] for p in parts),
        "scheduled": sum(p["scheduled"] for p in parts),
        "sent": sent,
        "unsent": unsent,
        "late": sum(p.get("late", 0) for p in parts),
        "completed": completed,
        "errors": error_count,
        "errors_by_kind": {k: n for k, n in sorted(errors.items()) if k != OK},
        "error_rate": (error_count + unsent) / attempted if attempted else None,
        "achieved_rps": sum(a for a in achieved if a is not None) if any(a is not None for a in achieved) else None,
        "latency_ms": spectrum_ms(histograms["latency"]),
        "service_time_ms": spectrum_ms(histograms["service"]),
        "schedule_lag_ms": {"p50": value_at_ms(histograms["lag"], 50.0), "p99": value_at_ms(histograms["lag"], 99.0)},
        "generator_cpu_s": round(cpu_s, 4),
        "generator_cpu_us_per_request": round(cpu_s / sent * 1e6, 1) if sent else None,
        "generator": {"limited": bool(reasons), "cpu_share": None, "reasons": reasons},
        "processes": sum(p.get("processes", 1) for p in parts),
        "windows": windows,
        "error_examples": examples,
        "histograms": {k: h.encode().decode("ascii") for k, h in histograms.items()},
    }


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several: stages merged by name (in the first report's order), capacity re-judged.

    Accuracy is taken from the first report (every part replays the same hold-out set), with
    the consistency counts of all parts added. Resources are the first report's (each part
    watched its own node). The verdict is left to the caller, which re-judges the gates.
    """
    if not reports:
        raise ValueError("nothing to merge")
    first = reports[0]
    order = [s["name"] for s in first["stages"]]
    for index, report in enumerate(reports[1:], start=2):
        names = [s["name"] for s in report["stages"]]
        if names != order:
            raise ValueError(f"report {index} has stages {names}, the first has {order}")
    objective = first["objective"]
    search = (first.get("capacity") or {}).get("method") == "search"
    stages = []
    for position, _ in enumerate(order):
        merged = merge_stages([r["stages"][position] for r in reports])
        if not merged["warmup"]:
            if search:
                merged["objective"] = judge_window_stage(merged, objective["percentile"], objective["latency_ms"],
                                                         objective["max_error_rate"])
            else:
                merged["objective"] = judge_stage(merged, objective["percentile"], objective["latency_ms"],
                                                  objective["max_error_rate"])
        stages.append(merged)
    out = dict(first)
    out["stages"] = stages
    out["capacity"] = {**capacity_summary(stages), "method": "search" if search else "stages"}
    out["run"] = {**first["run"], "id": "merged-" + "+".join(r["run"]["id"] for r in reports),
                  "status": "completed" if all(r["run"]["status"] == "completed" for r in reports) else "partial",
                  "merged_from": [r["run"]["id"] for r in reports]}
    accuracy = dict(first.get("accuracy") or {})
    if accuracy.get("consistency") is not None:
        accuracy["consistency"] = {
            "compared": sum((r.get("accuracy") or {}).get("consistency", {}).get("compared", 0) for r in reports),
            "inconsistent": sum((r.get("accuracy") or {}).get("consistency", {}).get("inconsistent", 0)
                                for r in reports)}
    out["accuracy"] = accuracy
    return out
