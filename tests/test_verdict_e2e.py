"""Done-when: the example model profiled good, then weak, against one run history.

The second run is judged against the first (the last passing run of the same model on the same
hold-out set); `profiler history` and `profiler compare` read the same file. The CLI runs in
process (a fresh interpreter costs seconds of imports on a loaded machine); the model is a real
subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.app.run import run_once
from profiler.cli import main
from profiler.config import load_config
from profiler.examples.holdout import write_holdout
from profiler.judge.verdict import EXIT_ERROR, EXIT_FAIL, EXIT_PASS
from profiler.record.store import Store

pytestmark = pytest.mark.slow

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  stages: [{{rate_rps: 40, duration_s: 1.5}}, {{rate_rps: 80, duration_s: 1.5}}]
objective: {{percentile: 99, latency_ms: 500}}
gates:
  - {{metric: f1_macro, min: 0.9, change: {{max_worse: 0.01, significant: true}}}}
  - {{metric: accuracy, change: {{max_worse: 0.01, significant: true}}}}
  - {{metric: latency_p50_ms@40rps, max: 500, change: {{max_worse: 25}}}}
  - {{metric: error_rate, max: 0.01}}
requirements: {{requests_per_day: 100000, peak_factor: 3, latency_ms: 5000}}
node: {{allocatable_memory_bytes: 16Gi, price_per_hour: 0.4}}
resources: {{{pid}interval_s: 0.2, settle_s: 0.2}}
report: {{path: {report}}}
history: {{path: history.sqlite}}
"""


def profile(directory: Path, proc, url: str, report: str) -> Path:
    path = directory / f"{report}.yaml"
    pid = f"pid: {proc.pid}, " if proc is not None else ""
    path.write_text(PROFILE.format(url=url, pid=pid, report=f"{report}.json"), encoding="utf-8")
    return path


@pytest.fixture
def cli(capsys):
    """Run the CLI in process; returns (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        return int(exited.value.code), out, err

    return run


def checks_of(report: dict) -> dict[tuple[str, str], dict]:
    return {(c["metric"], c["kind"]): c for c in report["verdict"]["checks"]}


def test_good_then_weak(tmp_path: Path, start_server, cli):
    write_holdout(tmp_path / "holdout.jsonl")
    good = start_server()
    assert run_once(load_config(profile(tmp_path, *good, "good")), quiet=True) == EXIT_PASS
    first = json.loads((tmp_path / "good.json").read_text())
    assert first["verdict"]["status"] == "pass"
    assert first["predecessor"] is None
    assert first["history"]["saved"] is True
    waiting = checks_of(first)[("f1_macro", "change")]
    assert waiting["status"] == "inconclusive" and not waiting["required"]
    plan = first["requirements"]
    assert plan["required_rps"] == pytest.approx(100000 / 86400 * 3)
    assert plan["one_replica_meets"] is True and plan["replicas_needed"] == 1
    assert plan["replicas_per_node"] >= 1 and plan["cost_per_million"] > 0

    weak = start_server("--variant", "weak")
    code, out, err = cli("run", "-c", str(profile(tmp_path, *weak, "weak")), "-q")
    assert code == EXIT_FAIL, out + err
    assert out.startswith("verdict FAIL: f1_macro 0.")
    second = json.loads((tmp_path / "weak.json").read_text())
    assert second["predecessor"]["id"] == first["run"]["id"]
    checks = checks_of(second)
    assert checks[("f1_macro", "absolute")]["status"] == "fail"
    drop = checks[("f1_macro", "change")]
    assert drop["status"] == "fail" and drop["predecessor"] == first["metrics"]["f1_macro"]
    assert drop["significance"]["significant"] and drop["significance"]["ci_high"] < 0
    mcnemar = checks[("accuracy", "change")]
    assert mcnemar["status"] == "fail" and mcnemar["significance"]["method"].startswith("McNemar")
    assert mcnemar["significance"]["p_value"] < 0.001
    assert checks[("error_rate", "absolute")]["status"] == "pass"
    assert "f1_macro" in second["verdict"]["reason"] and "significant" in second["verdict"]["reason"]
    rows = {r["metric"]: r for r in second["predecessor"]["comparison"]}
    assert rows["f1_macro"]["better"] is False and "capacity_per_node_rps" in rows

    latency = checks[("latency_p50_ms@40rps", "change")]
    assert latency["significance"]["method"] == "bootstrap"   # from both runs' real HDR histograms
    assert latency["predecessor"] == first["metrics"]["latency_p50_ms@40rps"]

    code, out, _ = cli("history", "--db", str(tmp_path / "history.sqlite"))
    assert code == EXIT_PASS
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == [second["run"]["id"], first["run"]["id"]]
    assert [line.split()[5] for line in lines[2:]] == ["FAIL", "PASS"]

    code, out, err = cli("compare", first["run"]["id"], second["run"]["id"], "-c", str(tmp_path / "good.yaml"))
    assert code == EXIT_PASS, err
    f1_line = next(line for line in out.splitlines() if line.startswith("f1_macro "))
    assert "WORSE" in f1_line and "significant" in f1_line
    assert "B vs A: " in out and "worse on accuracy" in out and "f1[3]" in out

    with Store(tmp_path / "history.sqlite", create=False) as store:
        labels, predictions = store.predictions(first["run"]["id"])
        assert len(labels) == 360 and sum(p == y for p, y in zip(predictions, labels, strict=True)) > 330
        assert {h.kind for h in store.histograms(first["run"]["id"])} == {"latency", "service"}


def test_bad_baselines_fail_before_the_load(tmp_path: Path, cli):
    write_holdout(tmp_path / "holdout.jsonl")
    path = profile(tmp_path, None, "http://127.0.0.1:9", "run")   # nothing listens: it must never get that far
    code, _, err = cli("run", "-c", str(path), "--baseline", "no-such-run")
    assert code == EXIT_ERROR
    assert err.startswith("profiler: error: ") and err.count("\n") == 1
    assert "history.sqlite: no run 'no-such-run' in the run history" in err

    with Store(tmp_path / "history.sqlite") as store:
        from tests.test_store import record

        store.save_run(record("other-holdout", model="digits", sha="0" * 64))
    code, _, err = cli("run", "-c", str(path), "--baseline", "other-holdout")
    assert code == EXIT_ERROR
    assert "baseline.run 'other-holdout' used another hold-out set" in err and "never compared" in err
    assert not (tmp_path / "run.json").exists()

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"\x00garbage" * 64)
    code, _, err = cli("run", "-c", str(path), "--history", str(garbage))
    assert code == EXIT_ERROR
    assert f"{garbage}: the run history is not a readable SQLite database" in err
    assert garbage.read_bytes() == b"\x00garbage" * 64
    code, _, err = cli("compare", "a", "b", "--db", str(tmp_path / "nothing.sqlite"))
    assert code == EXIT_ERROR and "no run history here" in err
    code, _, err = cli("compare", "no-such-run", "other-holdout", "--db", str(tmp_path / "history.sqlite"))
    assert code == EXIT_ERROR and "no run 'no-such-run'" in err


def test_a_latency_gate_alone_cannot_pass_a_model_failing_half_its_requests(tmp_path: Path, start_server, cli):
    """Every other answer has the wrong shape: fast, but half the requests fail. Only latency is gated."""
    write_holdout(tmp_path / "holdout.jsonl")
    _, url = start_server("--bad-output-every", "2")
    (tmp_path / "p.yaml").write_text(
        f'target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}\n'
        "dataset: {path: holdout.jsonl, inputs: pixels, label: label, id: id}\n"
        "load: {stages: [{rate_rps: 40, duration_s: 1}], accuracy_pass: false}\n"
        "objective: {percentile: 99, latency_ms: 500}\n"
        "gates: [{metric: latency_p99_ms, max: 500}]\n"
        "history: {enabled: false}\nreport: {path: r.json}\n", encoding="utf-8")
    code, out, err = cli("run", "-c", str(tmp_path / "p.yaml"))
    assert code == EXIT_FAIL, out + err
    report = json.loads((tmp_path / "r.json").read_text())
    checks = {c["metric"]: c for c in report["verdict"]["checks"]}
    assert checks["latency_p99_ms"]["status"] == "pass"
    assert checks["error_budget"]["status"] == "fail" and checks["error_budget"]["value"] >= 0.4
    assert report["verdict"]["status"] == "fail" and "broke the error budget" in report["verdict"]["reason"]
    assert "error_budget" in out  # the implied check is a row of the printed table
