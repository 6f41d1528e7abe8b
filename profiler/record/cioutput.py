"""Write the CI outputs of a finished run: the JUnit XML file and the Markdown summaries. I/O shell.

A file that cannot be written is an error line for the caller (exit 3), never a lost verdict: the
report and the terminal output are written first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.record.junit import junit_xml
from profiler.record.summary import summary_markdown


@dataclass(frozen=True, slots=True)
class CiOutputs:
    """Where a run's CI outputs go: the JUnit file, Markdown summaries to write, and ones to append to
    (GitHub's $GITHUB_STEP_SUMMARY collects every step's Markdown in one file)."""

    junit: Path | None = None
    summaries: Sequence[Path] = ()
    appended_summaries: Sequence[Path] = ()


def write_ci_outputs(report: Mapping[str, Any], location: str | None, outputs: CiOutputs) -> list[str]:
    """Write each configured output; returns one problem line per file that could not be written."""
    problems = []
    jobs: list[tuple[Path, str, str]] = []
    if outputs.junit is not None:
        jobs.append((outputs.junit, junit_xml(report, location), "w"))
    if outputs.summaries or outputs.appended_summaries:
        markdown = summary_markdown(report, location)
        jobs += [(path, markdown, "w") for path in outputs.summaries]
        jobs += [(path, markdown, "a") for path in outputs.appended_summaries]
    for path, text, mode in jobs:
        try:
            if path.parent != Path():
                path.parent.mkdir(parents=True, exist_ok=True)
            with path.open(mode, encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            problems.append(f"cannot write {path}: {exc.strerror or exc}")
    return problems
