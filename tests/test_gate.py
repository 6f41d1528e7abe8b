"""Gating releases in CI, without a model: the comparability rule, `--set` and `${VAR}`, the JUnit and Markdown
outputs, and the shipped CI, Kubernetes and Argo Rollouts examples linted by real validators."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as etree

import kubernetes_validate
import pytest
import yaml
from junitparser import JUnitXml

from profiler.config import Config, apply_override, load_config, parse_config
from profiler.core.errors import ConfigError
from profiler.judge.comparability import (
    Candidate,
    capacity_problem,
    choose_predecessor,
    context_differences,
    context_rows,
    incomparable_metrics,
)
from profiler.judge.comparison import compare
from profiler.judge.verdict import ChangeBound, Gate, Predecessor, judge
from profiler.record.baseline import find_baseline
from profiler.record.compare import RunComparison
from profiler.record.context import plan_text, run_context
from profiler.record.junit import junit_xml
from profiler.record.render import comparison_text
from profiler.record.summary import summary_markdown
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")

BASE = """\
target: {url: "http://127.0.0.1:8000", model: digits}
dataset: {path: data.jsonl}
load: {stages: [{rate_rps: 50, duration_s: 5}]}
"""

CONTEXT = {"protocol": "v2-grpc", "client": "lean", "arrival": "constant", "plan": "stages 50rps/5s",
           "batch_size": 1, "workers": 1, "lag_budget_ms": 1.25, "profiler_version": "0.1.0",
           "host_cpu_model": "AMD EPYC", "host_cores": 2, "target_host": "127.0.0.1"}


# --- comparability -----------------------------------------------------------------------------------


def test_a_client_change_makes_performance_not_comparable_but_not_accuracy() -> None:
    library = {**CONTEXT, "client": "library"}
    assert context_differences(library, CONTEXT) == ["client library vs lean"]
    notes = incomparable_metrics(library, CONTEXT, ["latency_p50_ms", "f1_macro", "f1[3]", "error_rate",
                                                    "latency_p99_ms@100rps", "accuracy"])
    assert notes == {"latency_p50_ms": "not comparable: client library vs lean",
                     "error_rate": "not comparable: client library vs lean",
                     "latency_p99_ms@100rps": "not comparable: client library vs lean"}
    # The profiler's version alone does not move a figure.
    assert context_differences({**CONTEXT, "profiler_version": "0.2.0"}, CONTEXT) == []
    assert context_differences(CONTEXT, None) == ["context not recorded in the predecessor"]


@pytest.mark.parametrize(("candidate", "predecessor", "expected"), [
    ({"max_sustained_rps": 50, "lower_bound": True, "limited_by": "schedule"},
     {"max_sustained_rps": 100, "lower_bound": True, "limited_by": "schedule"},
     ">= 50 vs >= 100 rps (lower bounds, set by the schedule)"),
    ({"max_sustained_rps": 50, "lower_bound": False}, {"max_sustained_rps": 100, "lower_bound": False}, None),
    # A bound at or above an exact figure is known to be no worse; an exact figure below a bound, worse.
    ({"max_sustained_rps": 120, "lower_bound": True, "limited_by": "schedule"},
     {"max_sustained_rps": 100, "lower_bound": False}, None),
    ({"max_sustained_rps": 80, "lower_bound": False},
     {"max_sustained_rps": 100, "lower_bound": True, "limited_by": "generator"}, None),
    ({"max_sustained_rps": 80, "lower_bound": True, "limited_by": "generator"},
     {"max_sustained_rps": 100, "lower_bound": False},
     ">= 80 vs 100 rps (a lower bound on one side, set by the generator)"),
])
def test_capacity_is_compared_only_where_a_bound_decides(candidate: dict[str, Any], predecessor: dict[str, Any],
                                                          expected: str | None) -> None:
    assert capacity_problem(candidate, predecessor) == expected


def test_a_lower_bound_capacity_change_is_inconclusive_not_worse() -> None:
    report = {"metrics": {"max_sustained_rps": 50.0}, "stages": [], "objective": {}, "capacity": {}}
    predecessor = Predecessor("before", {"max_sustained_rps": 100.0}, incomparable=incomparable_metrics(
        CONTEXT, CONTEXT, ["max_sustained_rps"],
        {"max_sustained_rps": 50, "lower_bound": True, "limited_by": "schedule"},
        {"max_sustained_rps": 100, "lower_bound": True, "limited_by": "schedule"}))
    gate = Gate("max_sustained_rps", change=ChangeBound(max_worse=0.1, relative=True))
    verdict = judge(report, [gate], predecessor)
    check = next(c for c in verdict.checks if c.kind == "change")
    assert check.status == "inconclusive" and check.predecessor == 100.0
    assert check.reason == "max_sustained_rps vs before: not comparable: >= 50 vs >= 100 rps (lower bounds, set by " \
                           "the schedule)"
    # Found by the rule, a predecessor that cannot compare is like none: the check does not block (else a runner
    # on new hardware could never pass and become the yardstick); named by the user, or baseline.required, it does.
    assert not check.required
    named = replace(predecessor, explicit=True)
    assert next(c for c in judge(report, [gate], named).checks if c.kind == "change").required
    assert next(c for c in judge(report, [gate], predecessor, first_run_blocks=True).checks
                if c.kind == "change").required


def test_the_predecessor_rule_prefers_a_comparable_run() -> None:
    lean, library = Candidate("lean-run", CONTEXT), Candidate("library-run", {**CONTEXT, "client": "library"})
    assert choose_predecessor([library, lean], CONTEXT) == lean
    # None comparable: the newest all the same, so the report says what differs instead of "first run".
    assert choose_predecessor([library], CONTEXT) == library
    assert choose_predecessor([], CONTEXT) is None


def test_the_context_records_what_moves_the_figures(tmp_path: Path) -> None:
    config = parse_config(BASE, tmp_path / "p.yaml")
    context = run_context(config, None)
    assert context["client"] == "lean" and context["target_host"] == "127.0.0.1"
    assert context["plan"] == "stages 50rps/5s"
    tls = parse_config(BASE.replace("http://127.0.0.1:8000", "https://model.example:8443"), tmp_path / "p.yaml")
    assert run_context(tls, None)["client"] == "library"  # TLS always goes through the library clients
    ramp = parse_config(BASE.replace("{stages: [{rate_rps: 50, duration_s: 5}]}",
                                     "{ramp: {start_rps: 10, max_rps: 80, factor: 2, duration_s: 3}, warmup_s: 1}"),
                        tmp_path / "p.yaml")
    assert plan_text(ramp.load) == "ramp 10..80rps x2 each 3s; warm-up 1s"


# --- --set and ${VAR} ------------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str, overrides: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    file = tmp_path / "profile.yaml"
    file.write_text(text)
    return load_config(file, overrides or [], env or {})


def test_set_overrides_any_field_validated_like_the_file(tmp_path: Path) -> None:
    config = _load(tmp_path, BASE, ["load.stages.0.rate_rps=200", "load.client=library", "objective.latency_ms=50",
                                    "tracking.mlflow_uri=http://mlflow:5000", "load.stages.0.duration_s=1.5"])
    assert config.load.stages is not None and config.load.stages[0].rate_rps == 200
    assert config.load.stages[0].duration_s == 1.5
    assert config.load.client == "library" and config.objective.latency_ms == 50
    assert config.tracking is not None and config.tracking.mlflow_uri == "http://mlflow:5000"


@pytest.mark.parametrize(("item", "message"), [
    ("load.stages.0.rate_rps=-5", "--set load.stages.0.rate_rps: load.stages.0.rate_rps: Input should be greater "
                                  "than 0"),
    ("load.stages.3.rate_rps=5", "--set load.stages.3.rate_rps: load.stages has 1 item(s); '3' is not an index of "
                                 "one"),
    ("load.rate=5", "--set load.rate: load.rate: unknown field"),
    ("load.client=fast", "--set load.client: load.client: Input should be 'lean' or 'library'"),
    ("target.url.host=x", "--set target.url.host: target.url is a value, not a section or a list"),
    ("load.stages.0.rate_rps", "--set 'load.stages.0.rate_rps': expected KEY=VALUE"),
    ("target.headers.X-Token=[oops", "--set target.headers.X-Token: the value is not valid YAML"),
])
def test_a_bad_override_names_the_key(tmp_path: Path, item: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, BASE, [item])
    assert str(caught.value).startswith(message), str(caught.value)


def test_an_override_error_never_prints_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, BASE, ["target.bearer_token=s3cret-value"])
    assert "s3cret" not in str(caught.value) and str(caught.value).startswith("--set target.bearer_token:")


def test_apply_override_makes_a_missing_section() -> None:
    data: dict[str, Any] = {"load": {}}
    assert apply_override(data, "tracking.experiment=ci") == (("tracking", "experiment"), "tracking.experiment=ci")
    assert data["tracking"] == {"experiment": "ci"}


def test_variables_are_substituted_with_defaults(tmp_path: Path) -> None:
    text = ('# ${UNSET_IN_A_COMMENT} is left alone\n'
            'target: {url: "${MODEL_URL}", model: "${MODEL:-digits}"}\n'
            'dataset: {path: "$${literal}.jsonl"}\n'
            'load: {stages: [{rate_rps: "${RATE:-25}", duration_s: 1}]}\n')
    config = _load(tmp_path, text, env={"MODEL_URL": "http://10.0.0.7:9000", "RATE": ""})
    assert config.target.url == "http://10.0.0.7:9000" and config.target.model == "digits"
    assert config.dataset.path.name == "${literal}.jsonl"
    assert config.load.stages is not None and config.load.stages[0].rate_rps == 25  # empty: the default, as sh


@pytest.mark.parametrize(("text", "message"), [
    ("target: {url: x}\n\nload: ${RATE}\n", ":3: ${RATE} is not set and has no default"),
    ("target: ${1BAD}\n", ":1: ${1BAD} is not a variable reference"),
])
def test_an_unset_variable_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'profile.yaml'}{message}"), str(caught.value)


# --- JUnit and Markdown ----------------------------------------------------------------------------------


def _report(status: str = "fail") -> dict[str, Any]:
    checks = [
        {"metric": "error_budget", "status": "pass", "value": 0.0, "bound": "<= 0.01 in every stage",
         "reason": "every stage within the error budget", "required": True, "kind": "implied", "predecessor": None},
        {"metric": "f1_macro", "status": status, "value": 0.53, "bound": "worse by <= 0.01 (higher is better)",
         "reason": "f1_macro 0.53 vs 0.97 in run-a: worse by 0.44, more than the tolerated 0.01; significant",
         "required": True, "kind": "change", "predecessor": 0.97},
        {"metric": "latency_p99_ms", "status": "inconclusive", "value": 154.5, "bound": "worse by <= 50",
         "reason": "latency_p99_ms vs run-a: not comparable: client library vs lean", "required": True,
         "kind": "change", "predecessor": 10.4},
        {"metric": "f1[7]", "status": "inconclusive", "value": None, "bound": ">= 0.8", "reason": "f1[7] <not> & \"x\"",
         "required": False, "kind": "absolute", "predecessor": None},
    ]
    return {"run": {"id": "run-b", "status": "completed", "started_at": "2026-12-01T00:00:00+00:00",
                    "duration_s": 4.2},
            "target": {"model": "digits", "url": "http://127.0.0.1:1", "protocol": "v2-rest"},
            "verdict": {"status": status, "reason": checks[1]["reason"], "checks": checks},
            "predecessor": {"id": "run-a", "source": "MLflow at http://127.0.0.1:5000 (experiment 'x')",
                            "summary": "worse on f1_macro -44.8%, significant",
                            "context_differences": ["client library vs lean"], "capacity": None},
            "history": {"path": "/tmp/h.sqlite", "saved": True}}


def test_junit_has_a_case_per_check_and_reads_back_as_ci_reads_it() -> None:
    document = junit_xml(_report(), "out/report.json")
    root = etree.fromstring(document.encode())
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "1"
    assert suite.get("errors") == "1" and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    failure = cases["change: f1_macro worse by <= 0.01 (higher is better)"].find("failure")
    assert failure is not None and failure.get("message", "").startswith("f1_macro 0.53 vs 0.97 in run-a")
    error = cases["change: latency_p99_ms worse by <= 50"].find("error")
    assert error is not None and "not comparable: client library vs lean" in error.get("message", "")
    assert cases["absolute: f1[7] >= 0.8"].find("skipped") is not None
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["report"] == "out/report.json"
    # Read back as CI tools read it: junitparser is the reader of GitHub's publish-unit-test-result action.
    parsed = JUnitXml.fromstring(document.encode())
    suites = list(parsed) if isinstance(parsed, JUnitXml) else [parsed]
    suite_read = suites[0]
    assert len(suites) == 1
    assert (suite_read.tests, suite_read.failures, suite_read.errors, suite_read.skipped) == (4, 1, 1, 1)
    results = {case.name: [type(r).__name__ for r in case.result] for case in suite_read}
    assert results["change: f1_macro worse by <= 0.01 (higher is better)"] == ["Failure"]
    assert results["change: latency_p99_ms worse by <= 50"] == ["Error"]
    assert results["absolute: f1[7] >= 0.8"] == ["Skipped"]
    assert sum(1 for r in results.values() if not r) == 1  # the one passed check


def test_the_markdown_summary_names_the_failed_check() -> None:
    text = summary_markdown(_report(), "out/report.json")
    assert text.startswith("## ❌ profiler: FAIL — digits\n")
    row = next(line for line in text.splitlines() if line.startswith("| f1_macro (change)"))
    assert "❌ fail" in row and "| 0.97 |" in row and "-0.44 (-45.4%)" in row
    assert "- not comparable: client library vs lean" in text
    assert "Compared with `run-a` from MLflow at http://127.0.0.1:5000" in text
    assert "Report: `out/report.json`" in text


# --- the CI, Kubernetes and Argo Rollouts examples ----------------------------------------------------------


def _check_jsonschema(schema: str, file: Path) -> subprocess.CompletedProcess[str]:
    require(CHECK_JSONSCHEMA.is_file() or shutil.which("check-jsonschema") is not None, "check-jsonschema",
            "pip install -e '.[dev]'")
    binary = str(CHECK_JSONSCHEMA) if CHECK_JSONSCHEMA.is_file() else "check-jsonschema"
    # --builtin-schema: the schemas ship inside the package, so this runs offline.
    return subprocess.run([binary, "--builtin-schema", schema, str(file)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize(("file", "schema"), [("github-actions.yml", "vendor.github-workflows"),
                                              ("gitlab-ci.yml", "vendor.gitlab-ci")])
def test_the_ci_examples_lint(file: str, schema: str, tmp_path: Path) -> None:
    path = ROOT / "deploy" / "ci" / file
    result = _check_jsonschema(schema, path)
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert "profiler run -c deploy/ci/profile.yaml" in text and "--junit deploy/ci/reports/junit.xml" in text
    broken = tmp_path / file
    broken.write_text(text.replace("runs-on:", "runs-onn:").replace("  script:", "  scripts:"))
    assert _check_jsonschema(schema, broken).returncode == 1  # the linter really lints


def test_the_ci_profile_validates_with_its_variables(tmp_path: Path) -> None:
    profile = ROOT / "deploy" / "ci" / "profile.yaml"
    config = load_config(profile, ["load.stages.0.rate_rps=80"], {"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert config.tracking is not None and config.tracking.history and config.target.url == "http://127.0.0.1:8000"
    with pytest.raises(ConfigError, match=r"profile.yaml:\d+: \$\{MLFLOW_TRACKING_URI\} is not set"):
        load_config(profile, [], {})


def test_the_job_keeps_its_history_on_a_claim() -> None:
    job_dir = ROOT / "deploy" / "k8s" / "job"
    kustomization = yaml.safe_load((job_dir / "kustomization.yaml").read_text())
    docs = [d for name in kustomization["resources"] for d in yaml.safe_load_all((job_dir / name).read_text())]
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("persistentVolumeClaim"))
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mount = next(m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == volume["name"])
    config = parse_config((job_dir / "profile.yaml").read_text(), Path("/etc/profiler/profile.yaml"))
    assert config.history.path is not None and config.history.path.is_relative_to(mount["mountPath"])
    assert config.report.path.is_relative_to(mount["mountPath"])


def test_the_analysis_template_runs_the_profiler_as_a_job() -> None:
    template = yaml.safe_load((ROOT / "deploy" / "argo" / "analysis-template.yaml").read_text())
    metric = template["spec"]["metrics"][0]
    job_spec = metric["provider"]["job"]["spec"]
    # The embedded Job is a batch/v1 Job: validated by the same offline validator as deploy/k8s.
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "model-profile"}, "spec": job_spec}
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    rule = job_spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and sorted(rule["onExitCodes"]["values"]) == [1, 2]
    command = job_spec["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["profiler", "run"] and "target.url={{args.canary-url}}" in command
    assert {a["name"] for a in template["spec"]["args"]} == {"canary-url", "mlflow-uri"}
    # The template's own fields, as Argo Rollouts v1alpha1 names them (its CRD is not vendored here).
    assert (template["apiVersion"], template["kind"]) == ("argoproj.io/v1alpha1", "AnalysisTemplate")
    assert set(metric) <= {"name", "provider", "successCondition", "failureCondition", "failureLimit", "count",
                           "interval", "initialDelay", "consecutiveErrorLimit", "inconclusiveLimit"}, sorted(metric)
    assert set(metric["provider"]) == {"job"} and set(metric["provider"]["job"]) <= {"metadata", "spec"}


def test_compare_shows_the_contexts_first() -> None:
    a = {"id": "run-a", "model": "digits", "model_version": None, "verdict": "pass", "holdout_sha256": "feed"}
    b = {**a, "id": "run-b", "verdict": "inconclusive"}
    library = {**CONTEXT, "client": "library"}
    rows = compare({"latency_p99_ms": 10.0, "accuracy": 0.9}, {"latency_p99_ms": 150.0, "accuracy": 0.9}, None,
                   incomparable=incomparable_metrics(library, CONTEXT, ["latency_p99_ms", "accuracy"]))
    text = comparison_text(RunComparison(a, b, rows, context_rows(library, CONTEXT),
                                         context_differences(library, CONTEXT), None))
    lines = text.splitlines()
    client = next(i for i, line in enumerate(lines) if line.startswith("client "))
    assert lines[client].split() == ["client", "lean", "library", "DIFFERS"]
    assert "not comparable on performance figures: client library vs lean" in text
    latency = next(line for line in lines if line.startswith("latency_p99_ms"))
    assert client < lines.index(latency) and " n/c " in latency and "WORSE" not in latency


def test_a_report_file_names_the_predecessor(tmp_path: Path) -> None:
    earlier = {"run": {"id": "run-a"}, "metrics": {"f1_macro": 0.9}, "dataset": {"sha256": "feed"},
               "context": CONTEXT, "capacity": {"max_sustained_rps": 50, "lower_bound": False}}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    config = parse_config(BASE + f"baseline: {{run: {tmp_path / 'earlier.json'}}}\nhistory: {{enabled: false}}\n",
                          tmp_path / "p.yaml")
    baseline, problem = find_baseline(config, "feed", "run-b", CONTEXT)
    assert problem is None and baseline.evidence is None and baseline.predecessor is not None
    assert (baseline.predecessor.run_id, baseline.predecessor.explicit) == ("run-a", True)
    assert baseline.predecessor.source == f"report file {tmp_path / 'earlier.json'}"
    with pytest.raises(ConfigError, match="used another hold-out set"):
        find_baseline(config, "other", "run-b", CONTEXT)
