"""A load split into parts (`profiler run --part K/N`, pods of an Indexed Job) and merged equals one run.

Real processes against the real example model on 127.0.0.1: three parts started side by side with one shared
start instant, part 0 merging their reports, beside a single run of the same profile.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from profiler.cli import main, part_report_path, parts_from_env
from profiler.core.errors import ProfilerError
from profiler.examples.holdout import write_holdout
from profiler.measure.latency import new_histogram
from profiler.record.merge import merge_reports

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 30, ready_timeout_s: 60}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  accuracy_pass: false
  workers: 1
  stages: [{{rate_rps: 60, duration_s: 1}}, {{rate_rps: 90, requests: 120}}]
resources: {{settle_s: 0}}
gates: [{{metric: error_rate, max: 0.01}}]
report: {{path: {report}}}
"""
COUNTS = ("scheduled", "sent", "unsent", "completed", "errors")


def _cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "profiler.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _decoded(encoded: str) -> HdrHistogram:
    histogram = new_histogram()
    histogram.decode_and_add(encoded.encode("ascii"))
    return histogram


@pytest.fixture(scope="module")
def runs(example_server, tmp_path_factory) -> tuple[dict, dict, list[dict], str]:
    """One single run, then three parts of the same profile; the merged report, the parts' and part 0's output."""
    _, url = example_server
    folder = tmp_path_factory.mktemp("parts")
    write_holdout(folder / "holdout.jsonl")
    (folder / "single.yaml").write_text(PROFILE.format(url=url, report="single/report.json"))
    (folder / "parts.yaml").write_text(PROFILE.format(url=url, report="shared/report.json"))
    single = _cli("run", "-q", "-c", "single.yaml", cwd=folder)
    out, err = single.communicate(timeout=90)
    assert single.returncode == 0, out + err
    # Far enough ahead for three interpreters to start and load the hold-out set on a 2-core machine. A part
    # that gets there late (measured: 13 to 20 s at a load average of 12) sends what is overdue at once: the
    # counts below hold either way, and its lateness shows in first_send_ms and start_skew_ms.
    start_at = f"{time.time() + 10:.3f}"
    parts = [_cli("run", "-q", "-c", "parts.yaml", "--part", f"{k}/3", "--start-at", start_at, cwd=folder)
             for k in range(3)]
    outputs = [p.communicate(timeout=90) for p in parts]
    # A part's exit code is 0 once its share ran; part 0's is the merged verdict's (0, or 1-2 if the machine was
    # too loaded for the objective); 3 would be a part that could not run.
    codes = [proc.returncode for proc in parts]
    assert codes[1:] == [0, 0] and codes[0] != 3, outputs
    part_reports = [json.loads(part_report_path(folder / "shared/report.json", k, 3).read_text()) for k in range(3)]
    merged = json.loads((folder / "shared/report.json").read_text())
    assert codes[0] == {"pass": 0, "fail": 1, "inconclusive": 2}[merged["verdict"]["status"]]
    return json.loads((folder / "single/report.json").read_text()), merged, part_reports, outputs[0][0]


def test_three_parts_merged_count_exactly_what_one_run_does(runs):
    single, merged, parts, out = runs
    assert "merged   3 reports" in out
    assert [p["load"]["part"] for p in parts] == [{"index": k, "count": 3} for k in range(3)]
    assert [p["stages"][0]["offered_rps"] for p in parts] == [20, 20, 20]
    assert merged["load"]["parts"] == 3
    for one, whole in zip(single["stages"], merged["stages"], strict=True):
        assert one["name"] == whole["name"]
        for key in COUNTS:
            assert whole[key] == one[key], (whole["name"], key)
        assert whole["offered_rps"] == pytest.approx(one["offered_rps"])
        assert whole["processes"] == 3
    # Every part sent its own share: 60 and 120 arrivals dealt out three ways.
    assert [p["stages"][0]["scheduled"] for p in parts] == [20, 20, 20]
    assert [p["stages"][1]["scheduled"] for p in parts] == [40, 40, 40]
    assert merged["stages"][1]["completed"] == 120


def test_the_merged_histograms_are_the_parts_added_exactly(runs):
    single, merged, parts, _ = runs
    for position, whole in enumerate(merged["stages"]):
        for kind in ("latency", "service", "lag"):
            added = new_histogram()
            for part in parts:
                added.add(_decoded(part["stages"][position]["histograms"][kind]))
            mine = _decoded(whole["histograms"][kind])
            assert mine.get_total_count() == added.get_total_count()
            for percentile in (1, 10, 50, 90, 99, 99.9, 100):
                # Equal within the HDR precision: the same bucket, so the same reported value.
                assert mine.get_value_at_percentile(percentile) == added.get_value_at_percentile(percentile)
        assert _decoded(whole["histograms"]["latency"]).get_total_count() == single["stages"][position]["completed"]


def test_the_parts_started_together_and_the_report_says_how_closely(runs):
    _, merged, parts, _ = runs
    for position, whole in enumerate(merged["stages"]):
        firsts = [p["stages"][position]["first_send_ms"] for p in parts]
        # No part sends before the shared instant; how far apart they began is measured, not bounded here (a
        # loaded machine starts interpreters late): bench/parts.py quotes it.
        assert all(f is not None and f >= 0 for f in firsts)
        assert whole["start_skew_ms"] == pytest.approx(max(firsts) - min(firsts), abs=1e-3)
        assert whole["first_send_ms"] == max(firsts)
    assert len({p["load"]["start_at"] for p in parts}) == 1


def test_parts_that_do_not_make_a_whole_are_refused(runs):
    _, _, parts, _ = runs
    with pytest.raises(ValueError, match="0 to N-1 of N"):
        merge_reports(parts[:2])
    with pytest.raises(ValueError, match="0 to N-1 of N"):
        merge_reports([parts[0], parts[0], parts[2]])


def test_the_part_comes_from_an_indexed_job(tmp_path: Path):
    assert parts_from_env({}) is None
    assert parts_from_env({"JOB_COMPLETION_INDEX": "2", "PROFILER_PARTS": "3"}) == (2, 3)
    with pytest.raises(ProfilerError, match="PROFILER_PARTS is not"):
        parts_from_env({"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(ProfilerError, match="K runs from 0 to N-1"):
        parts_from_env({"JOB_COMPLETION_INDEX": "3", "PROFILER_PARTS": "3"})
    assert part_report_path(tmp_path / "report.json", 1, 3) == tmp_path / "report.part-1-of-3.json"


@pytest.mark.parametrize(("args", "message"), [
    (["--part", "3/3", "--start-at", "1"], "K runs from 0 to N-1"),
    (["--part", "x"], "is not K/N"),
    (["--part", "0/2"], "one shared start instant"),
    (["--part", "0/2", "--start-at", "2026-12-01T10:00:00"], "has no time zone"),
])
def test_a_bad_part_or_start_is_one_line(tmp_path: Path, capsys, args, message):
    """Refused before the run starts (no target is contacted), so the CLI runs in this process."""
    write_holdout(tmp_path / "holdout.jsonl")
    (tmp_path / "p.yaml").write_text(PROFILE.format(url="http://127.0.0.1:9", report="r.json"))
    with pytest.raises(SystemExit) as done:
        main(["run", "-c", str(tmp_path / "p.yaml"), *args])
    gc.unfreeze()  # main freezes the heap for a fast interpreter exit; this process goes on
    err = capsys.readouterr().err
    assert done.value.code == 3
    assert message in err
    assert err.startswith("profiler: error:") and err.count("\n") == 1
