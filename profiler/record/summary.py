"""The verdict as a Markdown summary for a CI job's page (GitHub's step summary, a GitLab MR note). Pure.

The verdict and its reason, the checks table with each check's delta against the predecessor, the
predecessor (and what made it not comparable), and where the report and the run were kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ICONS = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️"}


def _cell(text: Any) -> str:
    """Table cell text: pipes escaped, one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _num(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "–"
    return f"{float(value):.6g}"


def _delta(check: Mapping[str, Any]) -> str:
    value, previous = check.get("value"), check.get("predecessor")
    if value is None or previous is None or isinstance(value, bool) or isinstance(previous, bool):
        return "–"
    delta = float(value) - float(previous)
    pct = f" ({delta / abs(float(previous)) * 100:+.1f}%)" if previous else ""
    return f"{delta:+.4g}{pct}"


def _predecessor_lines(report: Mapping[str, Any]) -> list[str]:
    predecessor = report.get("predecessor")
    if not predecessor:
        return ["", "No predecessor: the first run of this model on this hold-out set."]
    source = f" from {_cell(predecessor['source'])}" if predecessor.get("source") else ""
    lines = ["", f"Compared with `{predecessor['id']}`{source}: {_cell(predecessor.get('summary', ''))}"]
    lines += [f"- not comparable: {_cell(d)}" for d in predecessor.get("context_differences") or []]
    if predecessor.get("capacity"):
        lines.append(f"- capacity not comparable: {_cell(predecessor['capacity'])}")
    return lines


def _check_lines(checks: list[Mapping[str, Any]]) -> list[str]:
    if not checks:
        return []
    lines = ["", "| check | status | value | bound | predecessor | delta | reason |",
             "| --- | --- | ---: | --- | ---: | ---: | --- |"]
    for c in checks:
        mark = ICONS.get(str(c.get("status")), "")
        optional = "" if c.get("required", True) else " (optional)"
        lines.append(f"| {_cell(c.get('metric'))} ({c.get('kind')}) | {mark} {c.get('status')}{optional} "
                     f"| {_num(c.get('value'))} | {_cell(c.get('bound') or '–')} | {_num(c.get('predecessor'))} "
                     f"| {_delta(c)} | {_cell(c.get('reason', ''))} |")
    return lines


def _where_lines(report: Mapping[str, Any], location: str | None) -> list[str]:
    lines = [f"Report: `{location}`"] if location else []
    history = report.get("history") or {}
    if history:
        lines.append(f"History: `{history.get('path')}` ({'saved' if history.get('saved') else 'NOT saved'})")
    tracking = report.get("tracking") or {}
    if tracking:
        where = (f"run `{tracking['mlflow_run_id']}`" if tracking.get("mlflow_run_id")
                 else f"NOT logged: {_cell(tracking.get('error'))}")
        lines.append(f"MLflow: {tracking.get('uri')} {where}")
    return lines


def summary_markdown(report: Mapping[str, Any], location: str | None = None) -> str:
    """The Markdown summary of a report; `location` is where its JSON file was written."""
    verdict = report.get("verdict") or {}
    status = str(verdict.get("status") or "inconclusive")
    run = report.get("run") or {}
    target = report.get("target") or {}
    lines = [f"## {ICONS.get(status, '')} profiler: {status.upper()} — {_cell(target.get('model', ''))}", "",
             f"**{_cell(verdict.get('reason', ''))}**", "",
             f"Run `{run.get('id')}` ({run.get('status')}), target `{target.get('url')}` ({target.get('protocol')})."]
    lines += _predecessor_lines(report)
    lines += _check_lines(list(verdict.get("checks") or []))
    lines += ["", *_where_lines(report, location)]
    return "\n".join(lines) + "\n"
