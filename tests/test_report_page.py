"""report.html and the sidecar's live page, loaded in a real headless Chromium (Debian's `chromium`).

Two real runs of the example model (the second has the first as its predecessor), their pages opened from
disk, and a real sidecar's GET / watched while its run goes: every chart must render (an SVG with marks, one
per chart the data calls for), the console must stay free of errors, and no request may leave the page
(the file asks for nothing; the live page only for its own origin).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sidecar_helpers import start_sidecar, wait_for_report, write_profile

from profiler.app.run import run_once
from profiler.cli import build_parser, report_page
from profiler.config import load_config
from profiler.core.errors import ProfilerError
from profiler.examples.holdout import write_holdout
from profiler.judge.verdict import EXIT_PASS
from tests.conftest import require

try:  # the browser driver: a dev dependency; the tests skip (fail in CI) without it
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - exercised only where playwright is missing
    sync_playwright = None

CHROMIUM = shutil.which("chromium")
ALL_CHARTS = {"latency-vs-rate", "achieved-vs-offered", "spectrum", "over-time", "memory", "cpu", "per-class",
              "confusion", "class-deltas"}
SCREENSHOTS = os.environ.get("PROFILER_SCREENSHOTS")
"""A folder to keep the screenshots in (docs/ takes one); by default they go to the test's tmp folder."""


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, example_server) -> dict[str, Any]:
    """Two runs of one profile into one history: the second's predecessor is the first."""
    proc, url = example_server
    directory = tmp_path_factory.mktemp("runs")
    holdout = directory / "holdout.jsonl"
    write_holdout(holdout)
    profile = write_profile(directory, url, proc.pid, holdout, objective_ms=2000,
                            stages="{rate_rps: 30, duration_s: 1}, {rate_rps: 60, duration_s: 1}")
    # The first run as a user runs it (the CLI, stderr a pipe: plain progress lines) ...
    done = cli("run", "-c", str(profile))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"html     {directory / 'report.html'}" in done.stdout
    first = json.loads((directory / "report.json").read_text())
    shutil.copy(directory / "report.html", directory / "report-1.html")
    # ... the second in this process (a CLI start costs seconds), quiet: no progress at all.
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert run_once(load_config(profile), quiet=True) == EXIT_PASS
    assert f"html     {directory / 'report.html'}" in out.getvalue()
    second = json.loads((directory / "report.json").read_text())
    shutil.copy(directory / "report.html", directory / "report-2.html")
    return {"dir": directory, "profile": profile, "first": first, "second": second, "url": url,
            "pid": proc.pid, "stdout": done.stdout, "stderr": done.stderr, "quiet": out.getvalue() + err.getvalue()}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (its start is the costly part)."""
    require(CHROMIUM is not None, "chromium", "apt-get install chromium (.ci/setup.d/30-chromium.sh)")
    require(sync_playwright is not None, "playwright", "pip install -e '.[dev]'")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()


class Watched:
    """A page with its console errors and every request it made."""

    def __init__(self, browser: Browser) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def charts(self) -> dict[str, int]:
        """Each chart's name and how many marks (SVG paths, rects, lines, text) its SVG holds."""
        pairs = self.page.eval_on_selector_all(
            "figure.chart", "fs => fs.map(f => [f.dataset.chart, f.dataset.rendered === 'true' ? "
            "f.querySelectorAll('.plot svg.marks path, .plot svg.marks rect, .plot svg.marks line').length : -1])")
        return {name: count for name, count in pairs}

    def wait_ready(self, timeout_ms: float = 30_000) -> None:
        self.page.wait_for_selector("body[data-state=ready]", state="attached", timeout=timeout_ms)


def screenshot(page: Page, tmp: Path, name: str) -> Path:
    out = Path(SCREENSHOTS) if SCREENSHOTS else tmp
    path = out / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a picture with charts in it, not a blank page
    return path


def test_every_run_writes_a_small_self_contained_page(runs: dict[str, Any]) -> None:
    page = (runs["dir"] / "report-2.html").read_text(encoding="utf-8")
    assert len(page.encode()) < 1_000_000
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    # The data is the run's: its id, the predecessor's id for the overlay, no encoded histogram.
    assert runs["second"]["run"]["id"] in page and runs["first"]["run"]["id"] in page
    assert runs["second"]["stages"][1]["histograms"]["latency"] not in page


def test_html_is_configurable_and_can_be_turned_off(tmp_path: Path) -> None:
    write_holdout(tmp_path / "h.jsonl")
    base = "target: {url: 'http://127.0.0.1:1', model: m}\ndataset: {path: h.jsonl}\nload: {stages: [{rate_rps: 1, " \
           "duration_s: 1}]}\n"
    for extra, expected in (("report: {path: out/r.json}\n", tmp_path / "out/r.html"),
                            ("report: {html: pages/p.html}\n", tmp_path / "pages/p.html"),
                            ("report: {html: null}\n", None)):
        (tmp_path / "p.yaml").write_text(base + extra)
        assert load_config(tmp_path / "p.yaml").report.html_file() == expected


def test_report_command_renders_a_stored_run_or_a_file(runs: dict[str, Any], tmp_path: Path) -> None:
    directory = runs["dir"]
    first = runs["first"]["run"]["id"]
    history = directory / "profiler-history.sqlite"
    # In this process: `profiler report` is report_page behind the argument parser (a CLI start costs seconds).
    assert report_page(first, tmp_path / "a.html", history, None) == EXIT_PASS
    assert first in (tmp_path / "a.html").read_text()
    # A report file: its predecessor is found in the history beside it, and overlaid.
    assert report_page(str(directory / "report.json"), tmp_path / "b.html", None, None) == EXIT_PASS
    page = (tmp_path / "b.html").read_text()
    assert runs["second"]["run"]["id"] in page and f'"predecessor":{{"id":"{first}"' in page
    with pytest.raises(ProfilerError, match=r"^no-such-run: no such report file, and no run with that id in "):
        report_page("no-such-run", tmp_path / "c.html", history, None)
    with pytest.raises(ProfilerError, match=r"profile.yaml: not a JSON report"):
        report_page(str(runs["profile"]), tmp_path / "c.html", None, None)
    assert not (tmp_path / "c.html").exists()
    args = build_parser().parse_args(["report", first, "--html", "out.html", "--db", str(history)])
    assert (args.command, args.source, args.html, args.db) == ("report", first, Path("out.html"), history)


def test_the_file_draws_every_chart_offline_with_the_predecessor(runs: dict[str, Any], browser: Browser,
                                                                  tmp_path: Path) -> None:
    watched = Watched(browser)
    url = (runs["dir"] / "report-2.html").as_uri()
    watched.page.goto(url)
    watched.wait_ready()
    charts = watched.charts()
    assert set(charts) == ALL_CHARTS, charts
    assert all(count > 3 for count in charts.values()), charts
    assert watched.page.get_attribute("body", "data-charts") == str(len(ALL_CHARTS))
    assert watched.errors == []
    assert watched.requests == [url]  # nothing but the file itself
    verdict = watched.page.inner_text("#verdict")
    assert "Verdict: PASS" in verdict and "f1_macro" in verdict
    assert runs["first"]["run"]["id"] in watched.page.inner_text("#context")
    screenshot(watched.page, tmp_path, "report.png")
    watched.page.close()


def test_a_first_run_has_no_predecessor_chart(runs: dict[str, Any], browser: Browser) -> None:
    watched = Watched(browser)
    watched.page.goto((runs["dir"] / "report-1.html").as_uri())
    watched.wait_ready()
    assert set(watched.charts()) == ALL_CHARTS - {"class-deltas"}
    assert watched.errors == []
    watched.page.close()


def test_the_sidecar_page_follows_the_run_live(runs: dict[str, Any], browser: Browser, tmp_path: Path) -> None:
    holdout = runs["dir"] / "holdout.jsonl"
    profile = write_profile(tmp_path, runs["url"], runs["pid"], holdout, objective_ms=2000,
                            stages="{rate_rps: 30, duration_s: 2}, {rate_rps: 60, duration_s: 2}")
    child, base = start_sidecar(profile, {})
    try:
        watched = Watched(browser)
        watched.page.goto(base + "/")
        # While the run goes: the live line, and the charts of what is measured so far.
        watched.page.wait_for_selector("#live", timeout=20_000)
        watched.page.wait_for_selector('figure[data-chart="latency-vs-rate"][data-rendered="true"]', timeout=30_000)
        assert "running" in watched.page.inner_text("#live")
        report = wait_for_report(base, 60)
        # The finished run's page replaces the live one in place: the verdict, every chart of a first run.
        watched.page.wait_for_selector("#verdict", timeout=20_000)
        watched.page.wait_for_function("document.querySelectorAll('figure.chart').length === 8 && "
                                       "!document.querySelector('#live')", timeout=20_000)
        watched.wait_ready()
        assert set(watched.charts()) == ALL_CHARTS - {"class-deltas"}
        assert all(count > 3 for count in watched.charts().values())
        assert report["run"]["id"] in watched.page.title()
        assert watched.errors == []
        assert watched.requests and all(u.startswith(base + "/") for u in watched.requests), watched.requests
        polls = sum(1 for u in watched.requests if u.endswith("/report"))
        assert polls >= 2  # it polled /report while the run went
        screenshot(watched.page, tmp_path, "live.png")
        watched.page.close()
        # A stored run's page, and a 404 for an unknown one.
        stored = Watched(browser)
        stored.page.goto(f"{base}/runs/{report['run']['id']}/report.html")
        stored.wait_ready()
        assert len(stored.charts()) == 8 and stored.errors == []
        response = stored.page.goto(f"{base}/runs/nope/report.html")
        assert response is not None and response.status == 404
        stored.page.close()
        assert (tmp_path / "report.html").is_file()  # the sidecar writes the page beside report.json too
    finally:
        _, log = child.stop()
    # The sidecar's log says how the run went: a line per finished stage, with its figures.
    for stage in ("stage-1", "stage-2"):
        assert re.search(rf"run {report['run']['id']}: {stage} +done +offered .* achieved .* p99 ", log), log


def test_progress_is_plain_lines_without_a_terminal(runs: dict[str, Any]) -> None:
    stdout = runs["stdout"]
    lines = [line for line in stdout.splitlines() if line.startswith("progress ")]
    assert lines and lines[0].startswith("progress starting"), stdout
    for stage in ("stage-1", "stage-2"):  # a line per finished stage, with its figures
        assert any(line.startswith(f"progress {stage} ") and " done " in line and " achieved " in line
                   and " p99 " in line and " MiB" in line for line in lines), stdout
    assert stdout.index("progress stage-2 ") < stdout.index("verdict ")  # as it goes, before the table
    assert "\x1b" not in stdout and "\r" not in stdout  # no control characters in a log
    assert runs["stderr"] == ""  # stderr is for errors
    assert "progress " not in runs["quiet"]
