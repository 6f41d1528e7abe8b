"""The control plane's 100 ms bound holds while the live report page (GET /) polls a run under way.

A real headless Chromium keeps the sidecar's page open through a whole run (it polls /report every 2 s,
then fetches the finished view once, and the page itself is rendered for it at the start and again here at
the end), while the control plane's prober (tests/test_control_plane.py: its own process, a witness to tell
a busy machine from a busy sidecar) sends GET /healthz every 50 ms.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from sidecar_helpers import wait_for_report, write_profile

from profiler.examples.holdout import write_holdout
from tests.conftest import require
from tests.test_control_plane import BOUND_S, Prober, fetch, start_serving, witness

try:  # the browser driver: a dev dependency; the test skips (fails in CI) without it
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - exercised only where playwright is missing
    sync_playwright = None

pytestmark = pytest.mark.serial  # a timing bound: run alone after the parallel part (Makefile)


def test_healthz_within_the_bound_while_the_page_polls(tmp_path: Path, example_server) -> None:
    chromium = shutil.which("chromium")
    require(chromium is not None, "chromium", "apt-get install chromium (.ci/setup.d/30-chromium.sh)")
    require(sync_playwright is not None, "playwright", "pip install -e '.[dev]'")
    proc, url = example_server
    write_holdout(tmp_path / "holdout.jsonl")
    profile = write_profile(tmp_path, url, proc.pid, tmp_path / "holdout.jsonl", objective_ms=2000,
                            stages="{rate_rps: 50, duration_s: 2}, {rate_rps: 100, duration_s: 2}")
    child, host, port = start_serving(profile)
    base = f"http://{host}:{port}"
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            with Prober(host, port, 0.05, witness(url)) as prober:
                started = time.monotonic()
                page.goto(base + "/")
                report = wait_for_report(base, 90)
                page.wait_for_selector("#verdict", timeout=20_000)
                status, body = fetch(host, port, "GET", "/")  # the finished run's page, rendered once
                assert status == 200 and report["run"]["id"].encode() in body
                time.sleep(0.5)
                ended = time.monotonic()
            browser.close()
    finally:
        child.stop()
    judged = prober.judged(started, ended)
    assert all(s[2] == 200 for s in prober.samples), prober.describe(started)
    assert len(judged) >= 20 and max(judged) < BOUND_S, prober.describe(started)
