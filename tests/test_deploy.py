"""What ships in deploy/ and the Dockerfile, checked offline: schemas, cross-references, and the image's entrypoint."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sidecar_helpers import Child, get_json

from profiler.config import Config, parse_config
from profiler.judge.verdict import EXIT_FAIL, EXIT_INCONCLUSIVE

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = sorted(K8S.glob("*/kustomization.yaml"))
CORE_KINDS = {"Deployment", "Service", "Job", "ConfigMap", "Secret", "PersistentVolumeClaim"}
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
"""1.29 is the first with native sidecar containers (the Job's model); the newest the package knows."""

SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    # The fields of the monitoring.coreos.com/v1 ServiceMonitor CRD that this project uses.
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}},
                             "additionalProperties": False},
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"},
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomized(kustomization: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[str, str]]]:
    """The kustomization, its resources, and its generated ConfigMaps (name -> file name -> text)."""
    spec = yaml.safe_load(kustomization.read_text())
    resources = [doc for name in spec.get("resources", []) for doc in _documents(kustomization.parent / name)]
    config_maps = {gen["name"]: {Path(f).name: (kustomization.parent / f).read_text() for f in gen["files"]}
                   for gen in spec.get("configMapGenerator", [])}
    return spec, resources, config_maps


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def _profile(config_maps: dict[str, dict[str, str]]) -> Config:
    for files in config_maps.values():
        if "profile.yaml" in files:
            return parse_config(files["profile.yaml"], Path("/etc/profiler/profile.yaml"))
    raise AssertionError("no profile.yaml in any generated ConfigMap")


def test_there_is_a_base_and_a_job() -> None:
    assert {k.parent.name for k in KUSTOMIZATIONS} == {"base", "job"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.parent.name)
def test_kustomization_lists_existing_files(kustomization: Path) -> None:
    spec = yaml.safe_load(kustomization.read_text())
    assert spec["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and spec["kind"] == "Kustomization"
    listed = list(spec.get("resources", [])) + [f for g in spec.get("configMapGenerator", []) for f in g["files"]]
    assert listed
    for name in listed:
        assert (kustomization.parent / name).is_file(), f"{kustomization}: {name} does not exist"
    unlisted = {p.name for p in kustomization.parent.glob("*.yaml")} - set(listed) - {"kustomization.yaml"}
    assert not unlisted, f"files in {kustomization.parent} that the kustomization does not use: {unlisted}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.parent.name)
def test_core_manifests_validate(kustomization: Path, version: str) -> None:
    _, resources, config_maps = _kustomized(kustomization)
    generated = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": files}
                 for name, files in config_maps.items()]
    checked = 0
    for resource in resources + generated:
        if resource["kind"] in CORE_KINDS:
            kubernetes_validate.validate(resource, version, strict=True)
            checked += 1
    assert checked >= 2


def test_a_manifest_error_is_caught() -> None:
    """The validator really validates: a probe with a port of the wrong type is refused."""
    _, resources, _ = _kustomized(K8S / "base" / "kustomization.yaml")
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    _pod_spec(broken)["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    broken = json.loads(json.dumps(deployment))
    _pod_spec(broken)["shareProcessNamespaces"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.parent.name)
def test_pods_are_locked_down_and_wired(kustomization: Path) -> None:
    _, resources, config_maps = _kustomized(kustomization)
    profile = _profile(config_maps)
    workload = next(r for r in resources if r["kind"] in ("Deployment", "Job"))
    pod = _pod_spec(workload)
    assert pod["shareProcessNamespace"] is True  # the sidecar reads the model's processes
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False
    containers = pod["containers"] + pod.get("initContainers", [])
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in containers:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, (container["name"], mount["name"])
    for volume in volumes.values():
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
    profiler = next(c for c in containers if c["name"] == "profiler")
    mounts = {m["mountPath"]: m for m in profiler["volumeMounts"]}
    # The profile is mounted where the command line reads it; the report and the hold-out are mounted too.
    command = profiler.get("command", []) + profiler.get("args", [])
    config_path = Path(command[command.index("--config") + 1])
    assert str(config_path.parent) in mounts and config_path.name == "profile.yaml"
    report_dir = str(profile.report.path.parent)
    assert report_dir in mounts and not mounts[report_dir].get("readOnly")
    assert str(profile.dataset.path.parent) in mounts
    assert "/tmp" in mounts
    # The model is watched by command line (its pid is not known in advance) and answers on localhost.
    assert profile.resources.cmdline and profile.target.url.startswith("http://127.0.0.1:")
    model = next(c for c in containers if c["name"] == "model")
    assert profile.resources.cmdline in " ".join(model["command"])
    assert any(str(p["containerPort"]) == profile.target.url.rsplit(":", 1)[1] for p in model["ports"])


def test_the_deployment_probes_the_sidecar() -> None:
    _, resources, config_maps = _kustomized(K8S / "base" / "kustomization.yaml")
    profile = _profile(config_maps)
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    pod = _pod_spec(deployment)
    profiler = next(c for c in pod["containers"] if c["name"] == "profiler")
    assert profiler.get("command") is None  # the image's entrypoint, `profiler serve`, runs
    ports = {p["name"]: p["containerPort"] for p in profiler["ports"]}
    assert profiler["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert profiler["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert ports[profiler[probe]["httpGet"]["port"]] == profile.server.port
    assert profile.server.host == "0.0.0.0"  # kubelet probes and Prometheus reach the pod IP
    mounts = {m["mountPath"] for m in profiler["volumeMounts"]}
    assert profile.server.token_file is not None and str(profile.server.token_file.parent) in mounts
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert pod["terminationGracePeriodSeconds"] > profile.server.shutdown_grace_s

    service = next(r for r in resources if r["kind"] == "Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in service_ports.values():
        assert port["targetPort"] in ports

    monitor = next(r for r in resources if r["kind"] == "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports and endpoint["path"] == "/metrics"


def test_the_job_ends_with_the_verdict() -> None:
    _, resources, _ = _kustomized(K8S / "job" / "kustomization.yaml")
    job = next(r for r in resources if r["kind"] == "Job")
    pod = _pod_spec(job)
    assert pod["restartPolicy"] == "Never"
    profiler = next(c for c in pod["containers"] if c["name"] == "profiler")
    assert profiler["command"][:2] == ["profiler", "run"]
    # The model must not keep the pod alive after the profiler exits: a native sidecar.
    model = next(c for c in pod["initContainers"] if c["name"] == "model")
    assert model["restartPolicy"] == "Always" and "startupProbe" in model
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["containerName"] == "profiler"
    assert sorted(rule["onExitCodes"]["values"]) == [EXIT_FAIL, EXIT_INCONCLUSIVE]


# --- the image -------------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_every_file_the_dockerfile_copies_exists() -> None:
    copies = [shlex.split(args) for instruction, args in _dockerfile() if instruction in ("COPY", "ADD")]
    local = [args for args in copies if not any(a.startswith("--from") for a in args)]
    assert local
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for args in local:
        sources = [a for a in args[:-1] if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
            assert source.rstrip("/") not in ignored, f"{source} is copied but .dockerignore excludes it"


def test_the_image_is_slim_non_root_and_healthchecked() -> None:
    instructions = _dockerfile()
    bases = [args for instruction, args in instructions if instruction == "FROM"]
    assert bases and all(b.split()[0].endswith("-slim") for b in bases)
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(instruction == "HEALTHCHECK" for instruction, _ in instructions)
    text = (ROOT / "Dockerfile").read_text()
    assert "[dev]" not in text and "pip install -e" not in text  # runtime dependencies only
    # The Kubernetes pods run as the image's user.
    _, resources, _ = _kustomized(K8S / "base" / "kustomization.yaml")
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    assert str(_pod_spec(deployment)["securityContext"]["runAsUser"]) == users[-1].split(":")[0]


def _json_form(instruction: str) -> list[str]:
    args = [a for i, a in _dockerfile() if i == instruction][-1]
    if instruction == "HEALTHCHECK":
        args = args[args.index("CMD") + 3:].strip()
    value: list[str] = json.loads(args)
    return value


def test_the_entrypoint_starts_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv, and run the image's ENTRYPOINT, CMD and HEALTHCHECK."""
    # Nothing from PYTHONPATH: a source tree on it would pass for the installed package.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}}
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=120, env=env)
    wheel = next(wheels.glob("model_profiler-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, timeout=120, env=env)
    # The runtime dependencies come from this environment (a plain path entry: not its editable profiler).
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "runtime-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env["PATH"] = f"{venv / 'bin'}:{os.environ['PATH']}"
    script = ("import profiler, profiler.record.report as r; print(profiler.__file__); "
              "print(r.report_schema()['properties']['schema_version']['const'])")
    where = subprocess.run([str(python), "-c", script],
                           check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "1"

    entrypoint = _json_form("ENTRYPOINT")
    assert entrypoint == ["profiler", "serve"]
    help_text = subprocess.run([str(venv / "bin" / entrypoint[0]), *entrypoint[1:], "--help"], check=True,
                               capture_output=True, text=True, env=env, timeout=60).stdout
    assert "--config" in help_text and "--once" in help_text

    # CMD's config path, here pointing at a real profile: the sidecar starts, and the HEALTHCHECK passes.
    cmd = _json_form("CMD")
    profile = tmp_path / "profile.yaml"
    profile.write_text("target: {url: 'http://127.0.0.1:9', model: m}\ndataset: {path: h.jsonl}\n"
                       "load: {stages: [{rate_rps: 1, duration_s: 1}]}\n"
                       "server: {port: 0, start: on-trigger, token_env: PROFILER_IMAGE_TEST_TOKEN}\n")
    cmd[cmd.index("--config") + 1] = str(profile)
    sidecar = Child([str(venv / "bin" / entrypoint[0]), *entrypoint[1:], *cmd], cwd=tmp_path,
                    env={**env, "PROFILER_IMAGE_TEST_TOKEN": "x"})
    try:
        line = sidecar.first_line(60)
        if not line.startswith("profiler serving on "):
            sidecar.kill()
            raise AssertionError(f"the image's sidecar did not start: {sidecar.communicate(10)}")
        base = line.split()[3]
        assert get_json(f"{base}/healthz") == (200, {"status": "ok"})
        health = _json_form("HEALTHCHECK")
        assert health[0] == "python"
        port = base.rsplit(":", 1)[1]
        ok = subprocess.run([str(python), *health[1:]], env={**env, "PROFILER_HEALTH_PORT": port}, timeout=30,
                            capture_output=True)
        assert ok.returncode == 0, ok.stderr
        status, body = get_json(f"{base}/readyz")
        assert status == 503 and body["status"] == "not ready"  # nothing answers at the profile's target
    finally:
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=30)
    assert sidecar.returncode == 0, err  # idle (no run was triggered) and stopped cleanly
    down = subprocess.run([str(python), *health[1:]], env={**env, "PROFILER_HEALTH_PORT": port}, timeout=30,
                          capture_output=True)
    assert down.returncode != 0  # the HEALTHCHECK fails once the server is gone


PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    # The fields of the monitoring.coreos.com/v1 PrometheusRule CRD that this project uses.
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "required": ["groups"], "additionalProperties": False,
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"],
                "properties": {"name": {"type": "string"}, "interval": {"type": "string"},
                               "rules": {"type": "array", "minItems": 1, "items": {
                                   "type": "object", "required": ["expr"], "additionalProperties": False,
                                   "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                                                  "expr": {"type": "string"}, "for": {"type": "string"},
                                                  "labels": {"type": "object"},
                                                  "annotations": {"type": "object"}}}}}}}},
        },
    },
}


def test_the_prometheus_rule_ships_the_same_alerts() -> None:
    _, resources, _ = _kustomized(K8S / "base" / "kustomization.yaml")
    rule = next(r for r in resources if r["kind"] == "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
