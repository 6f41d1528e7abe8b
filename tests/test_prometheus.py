"""A real Prometheus scrapes a real sidecar profiling the example model; every shipped query must return data.

The expressions are read from the shipped Grafana dashboards and alert rules, so a new panel or
rule is covered without touching this test. CI installs Prometheus (`apt-get install prometheus`
in .ci/run); without it the tests that need it are skipped and say so.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from sidecar_helpers import get_json, start_sidecar, wait_for_report, write_profile

from profiler.app.demo import stop_process
from profiler.examples.holdout import write_holdout
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
TOKEN = "prom-test-token"
INSTALL = "apt-get install -y --no-install-recommends prometheus"


@pytest.fixture
def needs_prometheus() -> None:
    """Prometheus itself on PATH."""
    require(shutil.which("prometheus") is not None, "prometheus", INSTALL)


@pytest.fixture
def needs_promtool() -> None:
    """promtool on PATH."""
    require(shutil.which("promtool") is not None, "promtool", INSTALL)
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m", "${model}": ".+",
                     "$model": ".+"}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels inside collapsed rows


GENERATIVE_FAMILIES = ("profiler_ttft_", "profiler_itl_", "profiler_tpot_", "profiler_output_tokens",
                       "profiler_goodput_")
"""Families only a generative model's run has: their panels are checked against one in tests/test_generative.py."""


def dashboard_queries(generative: bool = False) -> list[tuple[str, str]]:
    """(where, expr) for every target of every panel of every shipped dashboard (those of a generative model's
    families, or all the others)."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                if any(family in target["expr"] for family in GENERATIVE_FAMILIES) == generative:
                    found.append((f"{path.name}: {panel['title']} [{target['refId']}]", target["expr"]))
    return found


UNMET_IN_A_FRESH_STACK = {"ModelProfileStale": " > "}
"""Alerts whose condition a run that just ended cannot meet (a week old): their left side must have data."""


def rule_queries() -> list[tuple[str, str]]:
    """(where, expr) for every rule of the shipped rule file (for UNMET_IN_A_FRESH_STACK, the figure compared)."""
    rules = yaml.safe_load(RULES.read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            expr = rule["expr"]
            if name in UNMET_IN_A_FRESH_STACK:
                expr = expr.split(UNMET_IN_A_FRESH_STACK[name])[0]
            found.append((f"{RULES.name}: {name}", expr))
    return found


def substitute(expr: str) -> str:
    """The PromQL Grafana would send, with its variables replaced; unknown variables fail loudly."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_shipped_queries_are_found() -> None:
    dashboards = dashboard_queries()
    assert DASHBOARDS and len(dashboards) >= 10
    assert {"ModelProfileVerdictFailed", "ModelMemoryLeakDetected"} <= {w.split(": ")[1] for w, _ in rule_queries()}
    for _, expr in dashboards:
        substitute(expr)
    dashboard = json.loads(DASHBOARDS[0].read_text())
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "model"}


@pytest.mark.usefixtures("needs_promtool")
@pytest.mark.parametrize("args", [["check", "config", str(PROMETHEUS_CONFIG)], ["check", "rules", str(RULES)]])
def test_promtool_accepts_what_ships(args: list[str]) -> None:
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _finite_values(body: dict[str, Any]) -> list[float]:
    data = body["data"]
    if data["resultType"] == "vector":
        values = [float(item["value"][1]) for item in data["result"]]
    elif data["resultType"] == "scalar":
        values = [float(data["result"][1])]
    else:
        values = [float(v[1]) for item in data["result"] for v in item["values"]]
    return [v for v in values if math.isfinite(v)]


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


DCGM_OUTPUT = ROOT / "tests" / "fixtures" / "gpu" / "dcgm_t4.prom"
"""A DCGM exporter's recorded output (see the file), served as the model's GPU metrics so the GPU panels have data."""


class _DcgmHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = DCGM_OUTPUT.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, example_server: tuple[Any, str]) -> Iterator[dict[str, Any]]:
    """Prometheus scraping a sidecar every second; a run starts once the first scrapes are in, and ends."""
    require(shutil.which("prometheus") is not None, "prometheus", INSTALL)
    tmp = tmp_path_factory.mktemp("prometheus")
    model, url = example_server
    holdout = tmp / "holdout.jsonl"
    write_holdout(holdout)
    (tmp / "token").write_text(TOKEN)
    dcgm = ThreadingHTTPServer(("127.0.0.1", 0), _DcgmHandler)
    threading.Thread(target=dcgm.serve_forever, daemon=True).start()
    # Gates chosen to fail (F1 >= 0.999, memory growth <= -1 TB) so that both alerts have something to say.
    profile = write_profile(tmp, url, model.pid, holdout, f1_min=0.999, growth_max=-1e12, objective_ms=1000,
                            stages="{rate_rps: 30, duration_s: 2}, {rate_rps: 60, duration_s: 2}",
                            server=", start: on-trigger, token_file: token",
                            resources=f", node_memory_bytes: 16Gi, node_storage_bytes: 100Gi, gpu: {{metrics_url: "
                                      f"'http://127.0.0.1:{dcgm.server_address[1]}/metrics'}}")
    sidecar, sidecar_url = start_sidecar(profile, {})
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "model-profiler", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [sidecar_url.removeprefix("http://")]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _ready(base), 60, "prometheus to be ready")
        _wait(lambda: _finite_values(_query(base, 'up{job="model-profiler"} == 1')), 30, "the first scrape")
        request = urllib.request.Request(f"{sidecar_url}/runs", method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        report = wait_for_report(sidecar_url, 90)
        _wait(lambda: _query(base, "profiler_verdict")["data"]["result"], 30, "the verdict to be scraped")
        yield {"prometheus": base, "sidecar": sidecar_url, "report": report}
    finally:
        stop_process(prometheus)
        log.close()
        sidecar.stop()
        dcgm.shutdown()
        dcgm.server_close()


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.usefixtures("needs_prometheus")
def test_the_run_failed_as_designed(stack: dict[str, Any]) -> None:
    report = stack["report"]
    assert report["verdict"]["status"] == "fail"
    failed = {c["metric"] for c in report["verdict"]["checks"] if c["status"] == "fail"}
    assert failed == {"f1_macro", "memory_growth_bytes"}


@pytest.mark.usefixtures("needs_prometheus")
@pytest.mark.parametrize(("where", "expr"), dashboard_queries() + rule_queries(), ids=lambda v: str(v)[:60])
def test_every_shipped_query_returns_data(stack: dict[str, Any], where: str, expr: str) -> None:
    body = _query(stack["prometheus"], substitute(expr))
    assert body["status"] == "success", body
    assert _finite_values(body), f"{where}: {expr} returned no finite value: {body['data']}"


@pytest.mark.usefixtures("needs_prometheus")
def test_the_model_variable_lists_the_model(stack: dict[str, Any]) -> None:
    url = f"{stack['prometheus']}/api/v1/label/model/values?{urllib.parse.urlencode({'match[]': 'profiler_run_info'})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert json.loads(response.read())["data"] == ["digits"]


@pytest.mark.usefixtures("needs_prometheus")
def test_both_alerts_fire(stack: dict[str, Any]) -> None:
    def firing() -> set[str]:
        _, body = get_json(f"{stack['prometheus']}/api/v1/alerts")
        return {a["labels"]["alertname"] for a in body["data"]["alerts"] if a["state"] == "firing"}

    names = _wait(lambda: firing() >= {"ModelProfileVerdictFailed", "ModelMemoryLeakDetected"} and firing(), 30,
                  "both alerts to fire")
    assert names >= {"ModelProfileVerdictFailed", "ModelMemoryLeakDetected"}
    _, rules = get_json(f"{stack['prometheus']}/api/v1/rules")
    assert all(r["health"] == "ok" for g in rules["data"]["groups"] for r in g["rules"])


@pytest.mark.usefixtures("needs_promtool")
@pytest.mark.usefixtures("needs_prometheus")
def test_promtool_accepts_the_live_metrics(stack: dict[str, Any]) -> None:
    with urllib.request.urlopen(f"{stack['sidecar']}/metrics", timeout=10) as response:
        text = response.read()
    assert b"profiler_verdict_check" in text and b"profiler_target_memory_rss_bytes" in text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_fit_the_grid_without_overlap(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    boxes = []
    for panel in _panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        boxes.append((panel["title"], grid["x"], grid["y"], grid["x"] + grid["w"], grid["y"] + grid["h"]))
    for i, (name, x0, y0, x1, y1) in enumerate(boxes):
        for other, a0, b0, a1, b1 in boxes[i + 1:]:
            assert x1 <= a0 or a1 <= x0 or y1 <= b0 or b1 <= y0, f"{name} overlaps {other}"
