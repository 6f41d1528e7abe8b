"""Write a report's HTML page (`report.html`), with its predecessor's curves when the history holds them.

I/O around the pure `profiler.record.html`: the predecessor's report is read from the run history, and the
page is written atomically like the JSON report (temp file + rename). Blocking: call it in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from profiler.core.errors import ProfilerError, ReportError
from profiler.record.html import report_html
from profiler.record.recent_runs import StoreRuns
from profiler.record.report import write_text

log = logging.getLogger("profiler.record.page")

RunLookup = Callable[[str], "dict[str, Any] | None"]
"""Finds a stored run's report by id (a RunSource's get_run)."""


def predecessor_of(report: Mapping[str, Any], lookup: RunLookup | None) -> dict[str, Any] | None:
    """The predecessor's report, when the report names one and the history still holds it; None otherwise
    (a history that cannot be read only costs the overlay: one log line)."""
    predecessor_id = (report.get("predecessor") or {}).get("id")
    if not predecessor_id or lookup is None:
        return None
    try:
        return lookup(str(predecessor_id))
    except ProfilerError as exc:
        log.warning("report.html: the predecessor %s cannot be read from the history (%s); drawn without it",
                    predecessor_id, exc)
        return None


def history_lookup(path: Path | None, timeout_s: float = 5.0) -> RunLookup | None:
    """A lookup in the SQLite history at `path` (None without a history)."""
    return StoreRuns(path, timeout_s).get_run if path is not None else None


def write_html(report: Mapping[str, Any], path: Path, lookup: RunLookup | None = None) -> Path:
    """Render the report's page (with its predecessor found through `lookup`) and write it atomically.
    ReportError naming `path` when it cannot be written."""
    page = report_html(report, predecessor_of(report, lookup))
    try:
        return write_text(page, path, suffix=".html")
    except ReportError as exc:
        raise ReportError(str(exc).replace("the report to", "the report page to", 1)) from None
