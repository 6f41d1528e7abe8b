"""The fault suite: every way a served model can fail a run, crossed with the gates a user might configure.

Each fault is a mode of tests/fault_server.py (a real server on 127.0.0.1 answering the example model's
digits predictions when it does not fault), or the example model's own failure: a process killed mid-run
and replaced on the same port. Each is run through the CLI's whole path (`profiler run`, in this process)
with each gate set: none, latency only, accuracy only, and all (F1, p99 latency, error rate). For every
cell:

- the verdict is never PASS when a required property was not established: a run whose requests failed
  beyond the error budget, or whose objective was never met, fails whatever the gates (the implied
  checks); a gate whose metric could not be measured is never a pass;
- per stage, scheduled = sent + unsent and sent = completed + errors, and the errors are of the kinds the
  fault causes;
- the run ends within its planned time plus timeout_s plus a few seconds;
- the exit code carries the verdict: 1 only when a required check failed, 2 inconclusive, 3 when the
  profiler could not run (one `profiler: error:` line, never a traceback).

And through `profiler serve` (a real sidecar process, one run per fault, triggered by POST /runs): the
same verdicts, and /healthz answers within 100 ms throughout every run (one probe in a run may take up to
500 ms: the machine's hiccup, not the sidecar's; see HEALTHZ_HICCUP_S).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import pytest
from sidecar_helpers import Child, get_json, start_sidecar

from profiler.cli import main
from profiler.examples.holdout import write_holdout
from profiler.examples.model import train

FAULT_SERVER = Path(__file__).with_name("fault_server.py")
HOLDOUT_SAMPLES = 60
TIMEOUT_S = 0.5
READY_TIMEOUT_S = 1.0
ACCURACY_CONCURRENCY = 16
"""The accuracy pass sends the hold-out closed loop, 16 at a time (app/run.py)."""
SLACK_S = 6.0
"""The 'few seconds' a run may take beyond its plan: start-up, the report, a loaded 2-core machine."""
HEALTHZ_LIMIT_S = 0.1
HEALTHZ_HICCUP_S = 0.5
"""/healthz answers within HEALTHZ_LIMIT_S; one probe in a run may take up to HEALTHZ_HICCUP_S, because a loaded
2-core machine can leave a process unscheduled that long (measured: one probe of 167 ms in a full-suite run,
the rest under 50 ms). An event loop blocked by the run stalls many probes, for longer (an oversized answer
buffered on the loop did: five probes from 0.39 to 2.8 s)."""
TOKEN = "fault-suite-token"

STAGE = "{rate_rps: 40, duration_s: 0.5}"
DIES_STAGE = "{rate_rps: 25, duration_s: 2}"
GATE_SETS = {
    "none": "[]",
    "latency": "[{metric: latency_p99_ms, max: 250}]",
    "accuracy": "[{metric: f1_macro, min: 0.9}]",
    "all": "[{metric: f1_macro, min: 0.9}, {metric: latency_p99_ms, max: 250}, {metric: error_rate, max: 0.01}]",
}
GATE_METRICS = {"none": (), "latency": ("latency_p99_ms",), "accuracy": ("f1_macro",),
                "all": ("f1_macro", "latency_p99_ms", "error_rate")}

PROFILE = """\
target: {{url: "{url}", protocol: {protocol}, model: digits, timeout_s: {timeout_s}, ready_timeout_s: {ready_s}}}
dataset: {{path: {holdout}, inputs: pixels, label: label, id: id}}
load:
  stages: [{stage}]
  client: {client}
objective: {{percentile: 99, latency_ms: 250, max_error_rate: 0.01}}
gates: {gates}
resources: {{settle_s: 0{resources}}}
report: {{path: {report}}}
{server}"""


@dataclass(frozen=True)
class Fault:
    """One fault of the suite: the fault server's mode and what a run must make of it.

    `breaks`: "errors" (requests fail beyond the error budget: the run fails whatever the gates),
    "objective" (answers come, but slower than the objective: the run fails whatever the gates),
    "nothing" (a healthy target: the control), "cannot_run" (the profiler cannot run: exit 3).
    `kinds`: the error kinds the fault may cause. `every`: every Nth inference faults (2: half).
    """

    mode: str
    protocol: str = "v2-rest"
    breaks: str = "errors"
    kinds: frozenset[str] = field(default_factory=frozenset)
    every: int = 1
    delay_s: float = 2.0
    dies: bool = False
    refused: bool = False


def _fault(mode: str, kind: str, **more: Any) -> Fault:
    return Fault(mode, kinds=frozenset({kind}), **more)


FAULTS = {
    "healthy": Fault("ok", breaks="nothing"),
    "5xx_all": _fault("status", "http_status"),
    "5xx_half": _fault("status", "http_status", every=2),
    "malformed": _fault("malformed", "decode"),
    "truncated": _fault("truncated", "connection"),
    "wrong_shape": _fault("wrong_shape", "decode"),
    "wrong_id_half": _fault("wrong_id", "id_mismatch", every=2),
    "oversized": _fault("oversized", "connection"),
    "reset": _fault("reset", "connection"),
    "reset_half": _fault("reset", "connection", every=2),
    "close_mid_answer": _fault("close_mid", "connection"),
    "never_answers": _fault("never", "timeout"),
    "answers_after_timeout": _fault("late", "timeout", delay_s=0.8),
    # 0.3 s is within the 0.5 s timeout; on a starved machine an answer may still miss it.
    "slower_than_objective": Fault("late", breaks="objective", delay_s=0.3, kinds=frozenset({"timeout"})),
    "dies_and_returns": _fault("ok", "connection", dies=True),
    "never_ready": Fault("not_ready", breaks="cannot_run"),
    "refused": Fault("ok", breaks="cannot_run", refused=True),
    "grpc_healthy": Fault("ok", protocol="v2-grpc", breaks="nothing"),
    "grpc_unavailable": _fault("unavailable", "connection", protocol="v2-grpc"),
    "grpc_deadline_exceeded": _fault("deadline", "timeout", protocol="v2-grpc"),
    "grpc_resource_exhausted": _fault("exhausted", "grpc_status", protocol="v2-grpc"),
    "grpc_drops_connection": _fault("drop", "connection", protocol="v2-grpc"),
}


# --- the servers ------------------------------------------------------------------------------------------


class Proc:
    """A fault server process: stdout read line by line as it comes, stderr kept for a failure's message."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(FAULT_SERVER), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(FAULT_SERVER.parent.parent)})
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _drain(stream: Any, put: Any) -> None:
        for line in stream:
            put(line.strip())
        stream.close()

    def expect(self, prefix: str, timeout_s: float = 60.0) -> str:
        """The next stdout line, which must start with `prefix`."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"fault server said nothing within {timeout_s} s: {''.join(self.err)}") from None
        assert line.startswith(prefix), (line, self.err)
        return line.split()[-1]

    def go(self) -> None:
        """Tell a server started with --wait-stdin to listen now."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Kill it (SIGKILL: the way a model dies) and reap it."""
        self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


def control(url: str, **setting: Any) -> dict[str, Any]:
    """POST /_fault (set a mode, counters reset) with a setting, or GET it without one."""
    data = json.dumps(setting).encode() if setting else None
    with urllib.request.urlopen(urllib.request.Request(f"{url}/_fault", data=data), timeout=5) as answer:
        return dict(json.loads(answer.read()))


@dataclass
class FaultServer:
    """The shared fault server: REST and gRPC addresses, and its process."""

    proc: Proc
    http_url: str
    grpc_url: str

    def set(self, fault: Fault) -> None:
        """Put it in the fault's mode (counters start again)."""
        control(self.http_url, mode=fault.mode, every=fault.every, delay_s=fault.delay_s)


class Phoenix:
    """The target of the dies fault: a fault server killed mid-run and replaced by a new process on its port.

    The replacement is started ahead (it loads the model meanwhile) and binds the port only when told, so
    the target is down for a chosen time, not for however long a process takes to start on a busy machine.
    """

    def __init__(self, model: Path, live: Proc) -> None:
        self._model = model
        self.live = live
        self.url = self.live.expect("READY")
        self.port = self.url.rsplit(":", 1)[1]
        self.standby = self._standby()
        self.errors: list[BaseException] = []

    def _standby(self) -> Proc:
        """The next replacement: it loads the model now, and waits to be told to listen."""
        return Proc("--port", self.port, "--model", str(self._model), "--wait-stdin")

    def kill_after(self, infer_requests: int, down_s: float) -> threading.Thread:
        """In a thread: once the live server has answered `infer_requests` (from now), kill it; `down_s` later
        the standby takes the port. Returns the thread (join it, then check `errors`)."""
        self.standby.expect("LOADED")
        control(self.url, mode="ok")  # its counters start again
        thread = threading.Thread(target=self._die_and_return, args=(infer_requests, down_s), daemon=True)
        thread.start()
        return thread

    def _die_and_return(self, infer_requests: int, down_s: float) -> None:
        try:
            deadline = time.monotonic() + 30
            while control(self.url)["infer"] < infer_requests:
                assert time.monotonic() < deadline, "the run never reached the model"
                time.sleep(0.01)
            self.live.stop()
            time.sleep(down_s)
            self.standby.go()
            self.standby.expect("READY")
            self.live = self.standby
            self.standby = self._standby()  # it loads while the run goes on
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)

    def stop(self) -> None:
        """Kill both processes."""
        for proc in {self.live, self.standby}:
            proc.stop()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model, trained once here and loaded by every fault server (they start faster)."""
    path = tmp_path_factory.mktemp("model") / "digits.joblib"
    joblib.dump(train("good"), path)
    return path


@pytest.fixture(scope="module")
def holdout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 60 samples of the example model's hold-out set."""
    folder = tmp_path_factory.mktemp("holdout")
    write_holdout(folder / "all.jsonl")
    lines = (folder / "all.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:HOLDOUT_SAMPLES]
    (folder / "holdout.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder / "holdout.jsonl"


@pytest.fixture(scope="module")
def launched(model_file: Path) -> Iterator[dict[str, Proc]]:
    """The suite's servers, started together (each takes seconds to start on a busy machine)."""
    procs = {"faults": Proc("--port", "0", "--grpc-port", "0", "--model", str(model_file)),
             "phoenix": Proc("--port", "0", "--model", str(model_file))}
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture(scope="module")
def fault_server(launched: dict[str, Proc]) -> FaultServer:
    """One fault server (REST and gRPC) for the whole suite; each cell sets its mode."""
    proc = launched["faults"]
    return FaultServer(proc, proc.expect("READY"), proc.expect("GRPC"))


@pytest.fixture(scope="module")
def phoenix(model_file: Path, launched: dict[str, Proc]) -> Iterator[Phoenix]:
    """The target that dies mid-run and comes back."""
    target = Phoenix(model_file, launched["phoenix"])
    yield target
    target.stop()


def closed_port_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens (a port just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- a cell -----------------------------------------------------------------------------------------------


def target_of(fault: Fault, server: FaultServer, phoenix: Phoenix | None) -> str:
    """The URL a cell's profile points at."""
    if fault.refused:
        return closed_port_url()
    if fault.dies:
        assert phoenix is not None
        return phoenix.url
    return server.grpc_url if fault.protocol == "v2-grpc" else server.http_url


def write_profile(folder: Path, url: str, fault: Fault, gates: str, holdout: Path, server: str = "",
                  resources: str = "", client: str = "lean") -> Path:
    """A tiny profile: one short stage, a 0.5 s timeout, the accuracy pass over the 60-sample hold-out."""
    path = folder / "profile.yaml"
    path.write_text(PROFILE.format(url=url, protocol=fault.protocol, timeout_s=TIMEOUT_S, ready_s=READY_TIMEOUT_S,
                                   holdout=holdout, stage=DIES_STAGE if fault.dies else STAGE, gates=GATE_SETS[gates],
                                   report=folder / "report.json", server=server, resources=resources,
                                   client=client),
                    encoding="utf-8")
    return path


def planned_s(fault: Fault) -> float:
    """The longest the run is planned to take: the wait for readiness, the accuracy pass (each round of 16
    requests bounded by the timeout), the stage, and the drain of its last requests (the timeout and 1 s)."""
    stage_s = 2.0 if fault.dies else 0.5
    accuracy_s = math.ceil(HOLDOUT_SAMPLES / ACCURACY_CONCURRENCY) * TIMEOUT_S
    return READY_TIMEOUT_S + accuracy_s + stage_s + TIMEOUT_S + 1.0


def expected_verdict(fault: Fault, gates: str) -> str:
    """What the run must conclude: a healthy target passes its gates (inconclusive with none: nothing was
    judged); every fault that fails requests beyond the budget or misses the objective fails, whatever the gates."""
    if fault.breaks == "nothing":
        return "inconclusive" if gates == "none" else "pass"
    return "fail"


def check_report(report: dict[str, Any], fault: Fault, gates: str) -> None:
    """The invariants every cell's report must hold (see the module)."""
    assert report["run"]["status"] == "completed", report["run"]
    stages = [s for s in report["stages"] if not s["warmup"]]
    assert len(stages) == 1
    for stage in stages:
        assert stage["scheduled"] == stage["sent"] + stage["unsent"], stage
        assert stage["sent"] == stage["completed"] + stage["errors"], stage
        assert sum(stage["errors_by_kind"].values()) == stage["errors"], stage
        assert set(stage["errors_by_kind"]) <= fault.kinds, (stage["errors_by_kind"], stage["error_examples"])
        assert stage["scheduled"] >= 0.9 * stage["offered_rps"] * stage["duration_s"], stage
        if fault.breaks == "errors":
            assert stage["errors"] > 0, stage
        if fault.breaks == "errors" and fault.every == 1 and not fault.dies:
            assert stage["completed"] == 0, stage
            assert report["accuracy"]["coverage"] == 0.0, report["accuracy"]  # no sample got a prediction
        if fault.every > 1 or fault.dies:
            assert stage["completed"] > 0, stage
    verdict = report["verdict"]
    checks = {(c["metric"], c["kind"]): c for c in verdict["checks"]}
    assert verdict["status"] == expected_verdict(fault, gates), verdict
    if fault.breaks == "errors":
        assert checks[("error_budget", "implied")]["status"] == "fail", verdict
    if fault.breaks == "objective":
        assert checks[("objective", "implied")]["status"] == "fail", verdict
    for metric in GATE_METRICS[gates]:
        check = checks[(metric, "absolute")]
        value = report["metrics"].get(metric)
        # A property that was not established is never a pass.
        if value is None:
            assert check["status"] == "inconclusive", check
    failed = [c for c in verdict["checks"] if c["required"] and c["status"] == "fail"]
    assert (verdict["status"] == "fail") == bool(failed), verdict


def run_cli(profile: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str, float]:
    """`profiler run -c PROFILE -q` in this process: exit code, stdout, stderr, wall seconds."""
    capsys.readouterr()
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main(["run", "-c", str(profile), "-q"])
    took_s = time.monotonic() - started
    out, err = capsys.readouterr()
    code = exited.value.code
    assert isinstance(code, int)
    return code, out, err, took_s


@pytest.mark.slow
@pytest.mark.parametrize("gates", list(GATE_SETS))
@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_cell(name: str, gates: str, tmp_path: Path, holdout: Path, fault_server: FaultServer,
                    phoenix: Phoenix, capsys: pytest.CaptureFixture[str]) -> None:
    fault = FAULTS[name]
    fault_server.set(fault)
    url = target_of(fault, fault_server, phoenix)
    profile = write_profile(tmp_path, url, fault, gates, holdout)
    killer = phoenix.kill_after(HOLDOUT_SAMPLES + 10, down_s=0.5) if fault.dies else None
    try:
        code, out, err, took_s = run_cli(profile, capsys)
    finally:
        if killer is not None:
            killer.join(30)
    assert not phoenix.errors, phoenix.errors
    assert took_s <= planned_s(fault) + SLACK_S, took_s
    assert "Traceback" not in err, err
    if fault.breaks == "cannot_run":
        assert code == 3, (out, err)
        assert err.count("\n") == 1 and err.startswith("profiler: error: "), err
        assert url in err and "never became ready" in err, err
        assert not (tmp_path / "report.json").exists()
        return
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    check_report(report, fault, gates)
    assert code == {"pass": 0, "fail": 1, "inconclusive": 2}[report["verdict"]["status"]], (code, out, err)
    assert report["run"]["duration_s"] <= planned_s(fault) + SLACK_S
    if fault.dies:
        # It came back: the new process answered, and the run counted those answers too.
        assert control(phoenix.url)["infer"] > 0
        assert report["stages"][0]["completed"] > 10


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, f in FAULTS.items() if f.breaks != "cannot_run" and not f.dies])
def test_fault_with_library_clients(name: str, tmp_path: Path, holdout: Path, fault_server: FaultServer,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The same faults through aiohttp and grpc.aio (load.client: library, as every TLS target): the same kinds
    of error, the same verdicts, all gates."""
    fault = FAULTS[name]
    fault_server.set(fault)
    profile = write_profile(tmp_path, target_of(fault, fault_server, None), fault, "all", holdout, client="library")
    code, out, err, took_s = run_cli(profile, capsys)
    assert "Traceback" not in err, err
    assert took_s <= planned_s(fault) + SLACK_S, took_s
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    check_report(report, fault, "all")
    assert code == {"pass": 0, "fail": 1, "inconclusive": 2}[report["verdict"]["status"]], (code, out, err)


# --- through the sidecar -----------------------------------------------------------------------------------


class HealthPoller:
    """GET /healthz every 20 ms on one kept-alive connection, in a thread; the slowest answer and any failure."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self._address = (host, int(port))
        self._stop = threading.Event()
        self.times_s: list[float] = []
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        connection = http.client.HTTPConnection(*self._address, timeout=5)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                connection.request("GET", "/healthz")
                answer = connection.getresponse()
                body = answer.read()
                if answer.status != 200:
                    self.failures.append(f"{answer.status} {body[:80]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                connection.close()
            self.times_s.append(time.monotonic() - started)
            self._stop.wait(0.02)
        connection.close()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(10)


@dataclass
class Sidecars:
    """`profiler serve` processes (start: on-trigger), one per target URL, started as cells first need them."""

    folder: Path
    holdout: Path
    pid: int
    running: dict[str, tuple[Child, str]] = field(default_factory=dict)

    def base(self, url: str, fault: Fault) -> str:
        """The sidecar for `url`, started with the 'all' gate set on first use."""
        if url not in self.running:
            folder = self.folder / f"sidecar-{len(self.running)}"
            folder.mkdir()
            resources = f", pid: {self.pid}, interval_s: 0.2" if not fault.dies else ""
            profile = write_profile(folder, url, fault, "all", self.holdout, resources=resources,
                                    server="server: {port: 0, start: on-trigger, token_env: FAULT_TOKEN}\n")
            self.running[url] = start_sidecar(profile, {"FAULT_TOKEN": TOKEN})
        return self.running[url][1]


@pytest.fixture(scope="module")
def sidecars(tmp_path_factory: pytest.TempPathFactory, holdout: Path, fault_server: FaultServer) -> Iterator[Sidecars]:
    """Sidecars that outlive the cells (each cell is one POST /runs)."""
    running = Sidecars(tmp_path_factory.mktemp("sidecars"), holdout, fault_server.proc.proc.pid)
    yield running
    for child, _ in running.running.values():
        _, err = child.stop()
        assert "Traceback" not in err, err


def trigger(base: str) -> str:
    """POST /runs; the run's id."""
    request = urllib.request.Request(f"{base}/runs", data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 202
        return str(json.loads(answer.read())["run_id"])


def wait_run(base: str, run_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll GET /runs/{id} until the run has a report (or ended in an error); that document."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = get_json(f"{base}/runs/{run_id}")
        if status == 200 and ("schema_version" in body or body.get("status") == "error"):
            return dict(body)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end within {timeout_s} s")


@pytest.mark.slow
@pytest.mark.serial  # /healthz within 100 ms: run alone after the parallel part (Makefile)
@pytest.mark.parametrize("name", [n for n, f in FAULTS.items() if not f.refused])
def test_sidecar_through_fault(name: str, fault_server: FaultServer, phoenix: Phoenix, sidecars: Sidecars) -> None:
    """`profiler serve` runs the profile against the fault: /healthz answers within 100 ms all along, the run's
    report holds the same invariants, and a target that is never ready is an error the sidecar reports."""
    fault = FAULTS[name]
    url = target_of(fault, fault_server, phoenix)
    base = sidecars.base(url, fault)
    fault_server.set(fault)
    poller = HealthPoller(base)
    killer = phoenix.kill_after(HOLDOUT_SAMPLES + 10, down_s=0.5) if fault.dies else None
    try:
        started = time.monotonic()
        run_id = trigger(base)
        document = wait_run(base, run_id, planned_s(fault) + SLACK_S)
        took_s = time.monotonic() - started
    finally:
        poller.stop()
        if killer is not None:
            killer.join(30)
    assert not phoenix.errors, phoenix.errors
    assert not poller.failures, poller.failures
    assert len(poller.times_s) >= 5, poller.times_s
    slow = [t for t in poller.times_s if t >= HEALTHZ_LIMIT_S]
    assert len(slow) <= 1 and max(poller.times_s) < HEALTHZ_HICCUP_S, sorted(poller.times_s)[-5:]
    assert took_s <= planned_s(fault) + SLACK_S
    if fault.breaks == "cannot_run":
        assert document["status"] == "error" and "never became ready" in document["error"], document
        return
    check_report(document, fault, "all")
