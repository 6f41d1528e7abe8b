"""Merging is exact: histograms added bucket by bucket equal one histogram of every request."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.core.results import OK, TIMEOUT, Result, StageAccount
from profiler.examples.holdout import write_holdout
from profiler.measure.latency import StageRecorder
from profiler.record.merge import merge_reports, merge_stages
from profiler.schedule import make_stage

NS_PER_MS = 1_000_000


def fill(recorder: StageRecorder, rng: random.Random, count: int) -> list[Result]:
    recorder.open(1)
    results = []
    for i in range(count):
        intended = 1 + i * 5 * NS_PER_MS
        lag = rng.randrange(0, 300_000)
        latency = int(rng.lognormvariate(2.5, 1.0) * NS_PER_MS)
        outcome = TIMEOUT if rng.random() < 0.05 else OK
        results.append(Result(1, i % 7, 1, intended, intended + lag, intended + lag + latency, outcome, [1]))
        recorder.record_lag(lag)
        recorder.add(results[-1])
    recorder.close(StageAccount(1, count * 5 * NS_PER_MS, scheduled=count + 3, unsent=3, late=0, cut_short=False,
                                cpu_s=0.25))
    return results


def parts_and_whole(sizes: list[int]) -> tuple[list[StageRecorder], StageRecorder]:
    rng = random.Random(4)
    stage = make_stage(1, 200, 5.0)
    parts = [StageRecorder(stage) for _ in sizes]
    whole = StageRecorder(stage)
    for recorder, size in zip(parts, sizes, strict=True):
        for result in fill(recorder, rng, size):
            whole.add(result)
            whole.record_lag(result.sent_ns - result.intended_ns)
    return parts, whole


@pytest.mark.parametrize("sizes", [[1000], [500, 700, 3], [1, 1], [2000, 0]])
def test_merged_reports_equal_one_histogram_of_everything(sizes):
    parts, whole = parts_and_whole(sizes)
    reports = [{"run": {"id": f"r{i}", "status": "completed"}, "objective": {"percentile": 99, "latency_ms": 200,
                                                                              "max_error_rate": 0.01},
                "capacity": {"method": "stages"}, "stages": [p.summary()], "accuracy": {}} for i, p in enumerate(parts)]
    merged = merge_reports(reports)["stages"][0]
    expected = whole.summary()
    for key in ("latency_ms", "service_time_ms", "schedule_lag_ms", "completed", "errors", "errors_by_kind"):
        assert merged[key] == expected[key], key
    assert merged["scheduled"] == sum(s + 3 for s in sizes)
    assert merged["unsent"] == 3 * len(sizes)
    assert merged["scheduled"] == merged["sent"] + merged["unsent"]
    assert merged["offered_rps"] == 200 * len(sizes)
    assert merged["generator_cpu_s"] == pytest.approx(0.25 * len(sizes))


def test_recorder_merge_is_exact():
    parts, whole = parts_and_whole([300, 400, 500])
    merged = StageRecorder(parts[0].stage)
    for i, part in enumerate(parts):
        merged.merge(json.loads(json.dumps(part.to_wire())), first=i == 0)
    for key in ("latency_ms", "service_time_ms", "schedule_lag_ms", "completed", "errors_by_kind"):
        assert merged.summary()[key] == whole.summary()[key]
    assert merged.processes == 3
    assert merged.scheduled == 1209


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(name="stage-9"), "different stages"),
        (lambda s: s.update(histograms={}), "no encoded latency histogram"),
        (lambda s: s.update(completed=s["completed"] + 1), "completed but the histograms hold"),
    ],
)
def test_merge_rejects_parts_that_do_not_fit(mutate, message):
    parts, _ = parts_and_whole([10, 10])
    a, b = parts[0].summary(), parts[1].summary()
    mutate(b)
    with pytest.raises(ValueError, match=message):
        merge_stages([a, b])
    with pytest.raises(ValueError, match="nothing"):
        merge_stages([])


PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  accuracy_pass: false
  seed: {seed}
  arrival: poisson
  stages: [{{rate_rps: 40, duration_s: 1}}, {{rate_rps: 80, requests: 60}}]
resources: {{settle_s: 0}}
gates: [{{metric: error_rate, max: 0.01}}, {{metric: latency_p99_ms, max: 5000}}]
report: {{path: report-{seed}.json}}
"""


def test_profiler_merge_combines_worker_processes(example_server, tmp_path: Path):
    _, url = example_server
    write_holdout(tmp_path / "holdout.jsonl")
    procs = []
    for seed in range(3):
        (tmp_path / f"p{seed}.yaml").write_text(PROFILE.format(url=url, seed=seed))
        procs.append(subprocess.Popen([sys.executable, "-m", "profiler.cli", "run", "-q", "-c", f"p{seed}.yaml"],
                                      cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    files = [str(tmp_path / f"report-{seed}.json") for seed in range(3)]
    done = subprocess.run([sys.executable, "-m", "profiler.cli", "merge", *files, "--out", "merged.json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    parts = [json.loads(Path(f).read_text()) for f in files]
    merged = json.loads((tmp_path / "merged.json").read_text())
    for position, stage in enumerate(merged["stages"]):
        for key in ("scheduled", "sent", "completed", "errors"):
            assert stage[key] == sum(p["stages"][position][key] for p in parts)
        assert stage["offered_rps"] == pytest.approx(sum(p["stages"][position]["offered_rps"] for p in parts))
        assert stage["processes"] == 3
        low = min(p["stages"][position]["latency_ms"]["p50"] for p in parts)
        high = max(p["stages"][position]["latency_ms"]["p50"] for p in parts)
        assert low <= stage["latency_ms"]["p50"] <= high
    assert merged["stages"][1]["completed"] == 180
    assert merged["verdict"]["status"] == "pass"
    assert merged["run"]["merged_from"] == [p["run"]["id"] for p in parts]

    bad = subprocess.run([sys.executable, "-m", "profiler.cli", "merge", files[0], "missing.json", "--out", "x.json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 3
    assert "missing.json: cannot read report" in bad.stderr
    assert "Traceback" not in bad.stderr
