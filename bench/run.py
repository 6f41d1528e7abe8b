"""The load engine's benchmark (`make bench`): the project's generator side by side with wrk, hey, Locust and a
bare aiohttp+uvloop loop against one nginx, then open-loop timing, latency accuracy, memory and the control plane.

Everything runs on this machine: nginx on core 0, each generator on core 1 (taskset), 16 keep-alive
connections, a ~313-byte JSON POST answered by a 150-byte inference reply. Generator CPU is the whole
process's user+system time (getrusage of the finished child), start-up included, for every tool alike.
Tools come from Debian (nginx, wrk, hey) and PyPI (locust, into its own venv); a tool that cannot be
installed is skipped with a note. Prints tables; writes nothing but temporary files.

Run: python bench/run.py [--duration 10] [--quick] [--no-install] [--sections peers,open,accuracy,memory,control]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from engine_load import request_body  # noqa: E402

PY = sys.executable
CONNECTIONS = 16
INFER_PATH = "/v2/models/digits/infer"
REPLY = ('{"model_name":"digits","model_version":"1","id":"","outputs":[{"name":"label","datatype":"INT64",'
         '"shape":[1],"data":[3]}],"parameters":{"pad":"x"}}')
REPLY = REPLY.replace('"x"', '"' + "x" * (150 - len(REPLY) + 1) + '"')
LOCUST_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "profiler-bench" / "locust"
GENERATOR_CORE = "1"
TARGET_CORE = "0"


def note(text: str) -> None:
    print(f"  note: {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_tools(install: bool) -> dict[str, str | None]:
    """Paths of nginx, wrk, hey and locust; installs what is missing when allowed (root, apt, pip)."""
    wanted = {"nginx": "nginx", "wrk": "wrk", "hey": "hey"}
    missing = [pkg for tool, pkg in wanted.items() if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()]
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} from Debian ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        for pkg in missing:
            done = subprocess.run(["apt-get", "install", "-y", "-qq", pkg], env=env, capture_output=True, text=True)
            if done.returncode:
                note(f"apt-get install {pkg} failed: {done.stderr.strip().splitlines()[-1:]}")
    paths: dict[str, str | None] = {}
    for tool in wanted:
        paths[tool] = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    locust = LOCUST_VENV / "bin" / "locust"
    if not locust.exists() and install:
        print("installing locust from PyPI into its own venv ...", flush=True)
        subprocess.run([PY, "-m", "venv", str(LOCUST_VENV)], check=False, capture_output=True)
        done = subprocess.run([str(LOCUST_VENV / "bin" / "pip"), "install", "-q", "locust"], capture_output=True,
                              text=True)
        if done.returncode:
            note(f"pip install locust failed: {done.stderr.strip().splitlines()[-1:]}")
    paths["locust"] = str(locust) if locust.exists() else None
    paths["taskset"] = shutil.which("taskset")
    return paths


def pinned(core: str, command: list[str], taskset: str | None) -> list[str]:
    return [taskset, "-c", core, *command] if taskset else command


@contextmanager
def nginx(path: str, taskset: str | None) -> Iterator[str]:
    """nginx on the target core answering every request with the 150-byte reply; yields its base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{REPLY}';
    }}
  }}
}}
""")
        proc = subprocess.Popen(pinned(TARGET_CORE, [path, "-c", str(conf), "-p", tmp], taskset),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for _ in range(100):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.05)
            else:
                raise RuntimeError(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()


def run_child(command: list[str], timeout_s: float, env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """Run a generator to completion; (stdout, its CPU seconds user+system, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        raise RuntimeError(f"{command[0]} exited {done.returncode}: {(done.stderr or done.stdout)[-400:]}")
    return done.stdout + done.stderr, cpu, wall


def peers(tools: dict[str, str | None], duration_s: float) -> list[dict[str, object]]:
    """Every generator flat out, 16 connections, against the same nginx; CPU per request.

    Each tool runs twice, for D and for 2D seconds: (CPU(2D) - CPU(D)) / (requests(2D) - requests(D))
    is its steady-state cost per request, with start-up (Python imports, Locust's gevent) cancelled
    out the same way for every tool. The whole-run figure is printed beside it.
    """
    rows: list[dict[str, object]] = []
    body = request_body(1).decode()
    ts = tools["taskset"]
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp, nginx(str(tools["nginx"]), ts) as base:
        url = base + INFER_PATH
        body_file = Path(tmp) / "body.json"
        body_file.write_text(body)
        lua = Path(tmp) / "post.lua"
        lua.write_text(f'wrk.method = "POST"\nwrk.body = \'{body}\'\n'
                       'wrk.headers["Content-Type"] = "application/json"\n')
        prefix = Path(tmp) / "locust"

        def wrk(d: float) -> list[str]:
            return [str(tools["wrk"]), "-t1", f"-c{CONNECTIONS}", f"-d{d:g}s", "-s", str(lua), url]

        def wrk_count(out: str) -> int:
            match = re.search(r"(\d+) requests in", out)
            return int(match.group(1)) if match else 0

        def hey(d: float) -> list[str]:
            return [str(tools["hey"]), "-z", f"{d:g}s", "-c", str(CONNECTIONS), "-m", "POST", "-T",
                    "application/json", "-D", str(body_file), url]

        def hey_count(out: str) -> int:
            match = re.search(r"\[200\]\s+(\d+) responses", out)
            return int(match.group(1)) if match else 0

        def locust(d: float) -> list[str]:
            return [str(tools["locust"]), "-f", str(BENCH / "locustfile.py"), "--headless", "-u", str(CONNECTIONS),
                    "-r", str(CONNECTIONS), "-t", f"{d:g}s", "--host", base, "--only-summary", "--csv", str(prefix)]

        def locust_count(_: str) -> int:
            stats = Path(f"{prefix}_stats.csv")
            for line in stats.read_text().splitlines() if stats.exists() else []:
                if ",Aggregated," in line:
                    return int(line.split(",")[2])
            return 0

        def bare(d: float) -> list[str]:
            return [PY, str(BENCH / "bare_aiohttp.py"), url, "--duration", str(d), "--connections", str(CONNECTIONS)]

        def json_count(out: str) -> int:
            document = json.loads(out.strip().splitlines()[-1])
            return int(document.get("requests", document.get("completed", 0)))

        def engine(client: str, rate: float, cap: int) -> Callable[[float], list[str]]:
            def command(d: float) -> list[str]:
                return [PY, str(BENCH / "engine_load.py"), base, "--rate", str(rate), "--duration", str(d), "--cap",
                        str(cap), "--client", client, "--timeout", "3600"]
            return command

        cases: list[tuple[str, bool, Callable[[float], list[str]], Callable[[str], int], dict[str, str]]] = [
            ("wrk (C)", bool(tools["wrk"]), wrk, wrk_count, {}),
            ("hey (Go, GOMAXPROCS=1)", bool(tools["hey"]), hey, hey_count, {"GOMAXPROCS": "1"}),
            ("Locust FastHttpUser", bool(tools["locust"]), locust, locust_count,
             {"BENCH_BODY": body, "BENCH_PATH": INFER_PATH}),
            ("bare aiohttp+uvloop loop", True, bare, json_count, {}),
            ("profiler engine, lean, flat out", True, engine("lean", 1e6, CONNECTIONS), json_count, {}),
            ("profiler engine, lean, open 4k rps", True, engine("lean", 4000.0, 256), json_count, {}),
            ("profiler engine, library, flat out", True, engine("library", 1e6, CONNECTIONS), json_count, {}),
        ]
        for tool, available, command, count, extra_env in cases:
            if not available:
                note(f"{tool}: not installed, skipped")
                continue
            env = {**os.environ, **extra_env}
            runs = []
            try:
                for d in (duration_s, 2 * duration_s):
                    out, cpu, wall = run_child(pinned(GENERATOR_CORE, command(d), ts), 2 * d + 120, env)
                    runs.append((count(out), cpu, wall, out))
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                note(f"{tool} failed, skipped: {exc}")
                continue
            (n1, c1, _, _), (n2, c2, _, out2) = runs
            steady = (c2 - c1) / (n2 - n1) * 1e6 if n2 > n1 else float("nan")
            in_run = float("nan")
            if tool.startswith(("profiler", "bare")):
                # These report their own CPU over the load only (process_time around it).
                r = json.loads(out2.strip().splitlines()[-1])
                in_run = r["cpu_s"] / max(int(r.get("sent", r.get("requests", 0))), 1) * 1e6
            best = in_run if in_run == in_run else steady
            rows.append({"tool": tool, "requests": n2, "rps": n2 / (2 * duration_s), "cpu_s": c2,
                         "whole_us": c2 / n2 * 1e6 if n2 else float("nan"), "steady_us": steady,
                         "in_run_us": in_run, "us_per_request": best, "extra": ""})
            print(f"  {tool:<38} {n2:>8} requests  in-run {in_run:7.1f}  steady {steady:7.1f}  whole "
                  f"{rows[-1]['whole_us']:7.1f} us/request", flush=True)
    return rows


def open_loop(tools: dict[str, str | None], duration_s: float) -> list[dict[str, object]]:
    """The engine open loop at fixed rates: CPU share of a core, schedule lag, achieved vs offered."""
    rows = []
    ts = tools["taskset"]
    with nginx(str(tools["nginx"]), ts) as base:
        for rate in (1000.0, 4000.0, 10_000.0):
            out, _, _ = run_child(pinned(GENERATOR_CORE, [PY, str(BENCH / "engine_load.py"), base, "--rate", str(rate),
                                                          "--duration", str(duration_s), "--cap", "512"], ts),
                                  duration_s + 60)
            r = json.loads(out.strip().splitlines()[-1])
            rows.append({"offered_rps": rate, "achieved_rps": r["achieved_rps"],
                         "cpu_pct": r["cpu_s"] / r["wall_s"] * 100,
                         "us_per_request": r["cpu_s"] / max(r["sent"], 1) * 1e6, "lag_p50_ms": r["lag_ms"]["p50"],
                         "lag_p99_ms": r["lag_ms"]["p99"], "unsent": r["unsent"], "late": r["late"]})
            row = rows[-1]
            print(f"  {rate:>7g} rps  achieved {row['achieved_rps']:.1f}  cpu {row['cpu_pct']:.1f}%  "
                  f"lag p99 {row['lag_p99_ms']} ms", flush=True)
    return rows


class _Answers:
    """Per request of the measured stage: intended time, end time, and the server's reported lateness (µs)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int]] = []

    def add(self, result: Any) -> None:
        if result.stage == 1 and result.predictions:
            self.rows.append((result.intended_ns, result.done_ns, int(result.predictions[0])))


def rank_percentile(values: Any, percentile: float) -> float:
    """The value at `percentile` by hdrh's rank rule (the int(p / 100 * n + 0.5)-th smallest), so that the
    truth and the HDR figures are read alike. (numpy's inverted_cdf can land one rank higher: 0.999 * 6000
    is 5994.000000000001 in floating point, and at a stall's edge the next value is 5 ms away.)"""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(percentile * len(ordered) / 100 + 0.5)))
    return float(ordered[rank - 1])


def accuracy(duration_s: float, taskset: str | None) -> list[dict[str, object]]:
    """Measured latency percentiles against the truth from the schedule and the server's injected delays.

    Two truths. Nominal: the schedule plus the delays the server was told to inject. As served: the
    same plus the lateness the server reports in each answer (its own wake-ups on this VM are held
    up now and then; that lateness is real latency, not the generator's error). The generator's own
    error is measured minus served, request by request.
    """
    import numpy as np
    from delay_server import extra_ns

    from profiler.codecs.v2 import V2RestCodec
    from profiler.core import aio
    from profiler.core.units import NS_PER_S
    from profiler.load.engine import Engine
    from profiler.measure.latency import StageRecorder
    from profiler.schedule import Stage, arrival_offsets_ns, make_stage
    from profiler.transports.http1 import Http1Transport

    rows = []
    cases = [("delay 50 ms", 50.0, 0.0, 0.0, 200.0), ("delay 20 ms, 1 s stall every 5 s", 20.0, 5.0, 1.0, 200.0)]
    for name, delay_ms, every_s, stall_s, rate in cases:
        proc = subprocess.Popen(pinned(TARGET_CORE, [PY, str(BENCH / "delay_server.py"), "--delay-ms", str(delay_ms),
                                                     "--stall-every-s", str(every_s), "--stall-s", str(stall_s),
                                                     "--report-lateness"],
                                       taskset), stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            _, url, epoch = proc.stdout.readline().split()
            stage = make_stage(1, rate, duration_s)

            answers = _Answers()

            async def measure(url: str = url, stage: Stage = stage, answers: _Answers = answers) -> StageRecorder:
                transport = Http1Transport(url, timeout_s=30, max_connections=1024)
                codec = V2RestCodec("digits")
                engine = Engine(transport, codec.infer_path, [request_body(1)], codec.decode, sample_count=1,
                                max_in_flight=4096, timeout_s=30, consumers=[answers])
                # A warm-up (as a profile's warmup_s): connections are opened before the measured stage.
                warm = make_stage(0, stage.rate_rps, 1.0, warmup=True)
                await engine.run_stage(warm, arrival_offsets_ns(warm), StageRecorder(warm))
                recorder = StageRecorder(stage)
                await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
                await transport.close()
                return recorder

            recorder = aio.run(measure())

            delay_ns, epoch_ns = delay_ms * 1e6, int(epoch)
            every_ns, stall_ns = int(every_s * NS_PER_S), int(stall_s * NS_PER_S)
            nominal = [delay_ns + extra_ns(recorder.started_ns + offset, epoch_ns, every_ns, stall_ns)
                       for offset in arrival_offsets_ns(stage)]
            served = [(delay_ns + extra_ns(intended, epoch_ns, every_ns, stall_ns) + late_us * 1e3, done - intended)
                      for intended, done, late_us in answers.rows]
            truth_ms = np.array(nominal) / 1e6
            served_ms = np.array([truth for truth, _ in served]) / 1e6
            own_ms = np.array([took - truth for truth, took in served]) / 1e6
            late_ms = np.array([late_us / 1e3 for _, _, late_us in answers.rows])
            measured = recorder.summary()["latency_ms"]
            for key, percentile in (("p50", 50.0), ("p99", 99.0), ("p999", 99.9)):
                truth = float(rank_percentile(truth_ms, percentile))
                as_served = float(rank_percentile(served_ms, percentile))
                value = measured[key]
                error = abs(value - truth) if value is not None else float("nan")
                served_error = abs(value - as_served) if value is not None else float("nan")
                rows.append({"case": name, "percentile": key, "truth_ms": truth, "measured_ms": value,
                             "error_ms": error, "within": error <= max(0.05 * truth, 0.5),
                             "served_ms": as_served, "served_error_ms": served_error,
                             "served_within": served_error <= max(0.05 * as_served, 0.5),
                             "server_late_ms": float(rank_percentile(late_ms, percentile)),
                             "own_error_ms": float(rank_percentile(own_ms, percentile)),
                             "answers": len(answers.rows)})
                print(f"  {name:<36} {key:>5}  truth {truth:9.2f} ms  served {as_served:9.2f} ms  "
                      f"measured {value:9.2f} ms", flush=True)
        finally:
            proc.terminate()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
    return rows


def memory(total: int, taskset: str | None) -> dict[str, object]:
    """RSS after 100,000 and after `total` requests."""
    out, _, _ = run_child(pinned(GENERATOR_CORE, [PY, str(BENCH / "memory.py"), "--first", "100000", "--total",
                                                  str(total)], taskset), 1800)
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    growth = int(result["growth_bytes"])  # type: ignore[call-overload]
    print(f"  RSS after 100,000: {int(result['rss_after_first_bytes']) / 2**20:.1f} MiB; after {total:,}: "  # type: ignore[call-overload]
          f"{int(result['rss_after_total_bytes']) / 2**20:.1f} MiB; growth {growth / 2**20:+.2f} MiB", flush=True)  # type: ignore[call-overload]
    return result


def control_plane(tools: dict[str, str | None], duration_s: float) -> dict[str, object]:
    """The sidecar with two workers flat out against nginx: how fast /healthz, /report and /metrics answer."""
    import aiohttp
    from aiohttp import web

    from profiler.app.server import Sidecar, make_app
    from profiler.config import parse_config
    from profiler.core import aio
    from profiler.examples.holdout import write_holdout

    times: dict[str, list[float]] = {"/healthz": [], "/report": [], "/metrics": []}
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp, nginx(str(tools["nginx"]), None) as base:
        write_holdout(Path(tmp) / "holdout.jsonl")
        config = parse_config(f"""
target: {{url: "{base}", model: digits, timeout_s: 5}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load: {{workers: 2, accuracy_pass: false, max_in_flight: 64, stages: [{{rate_rps: 40000, duration_s: {duration_s}}}]}}
resources: {{settle_s: 0}}
""", Path(tmp) / "p.yaml")

        async def run() -> dict[str, object]:
            sidecar = Sidecar(config)
            runner = web.AppRunner(make_app(sidecar), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            sidecar.start_run()
            async with aiohttp.ClientSession() as client:
                while sidecar.state.report is None:
                    for path, bucket in times.items():
                        t0 = time.perf_counter()
                        async with client.get(url + path) as response:
                            await response.read()
                        if sidecar.state.phase == "load":
                            bucket.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.02)
            await runner.cleanup()
            report = sidecar.state.report
            assert report is not None
            return report["stages"][0]

        stage = aio.run(run())
    summary: dict[str, object] = {"completed": stage["completed"], "achieved_rps": stage["achieved_rps"]}
    for path, values in times.items():
        values.sort()
        if values:
            summary[path] = {"n": len(values), "p50_ms": values[len(values) // 2] * 1000,
                             "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))] * 1000,
                             "max_ms": values[-1] * 1000}
            print(f"  {path:<9} n={len(values):<4} p50 {summary[path]['p50_ms']:.1f} ms  "  # type: ignore[index]
                  f"p99 {summary[path]['p99_ms']:.1f} ms  max {summary[path]['max_ms']:.1f} ms", flush=True)  # type: ignore[index]
    print(f"  (workers achieved {stage['achieved_rps']:.0f} rps, {stage['completed']} requests)")
    return summary


def print_tables(peer_rows: list[dict[str, object]], open_rows: list[dict[str, object]],
                 accuracy_rows: list[dict[str, object]], mem: dict[str, object] | None,
                 control: dict[str, object] | None, machine: str) -> None:
    print(f"\n== Load engine benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}")
    if peer_rows:
        engine = next((r for r in peer_rows if str(r["tool"]).startswith("profiler engine, lean, flat")), None)
        print(f"\nGenerator CPU per request, flat out, {CONNECTIONS} keep-alive connections, nginx on core "
              f"{TARGET_CORE}, generator on core {GENERATOR_CORE}")
        print("(in-run: CPU over the load only, as the Python generators report it; steady: CPU difference of a D and "
              "a 2D run over\n their request difference, start-up cancelled; whole: the 2D run incl. start-up. "
              "us/req = in-run where reported, else steady)")
        print(f"{'generator':<38} {'requests':>9} {'req/s':>8} {'in-run':>7} {'steady':>7} {'whole':>7} "
              f"{'us/req':>7} {'vs engine':>9}")
        for r in peer_rows:
            ratio = (float(r["us_per_request"]) / float(engine["us_per_request"])) if engine else float("nan")  # type: ignore[arg-type]
            print(f"{r['tool']!s:<38} {r['requests']:>9} {float(r['rps']):>8.0f} "  # type: ignore[arg-type]
                  f"{float(r['in_run_us']):>7.1f} {float(r['steady_us']):>7.1f} {float(r['whole_us']):>7.1f} "  # type: ignore[arg-type]
                  f"{float(r['us_per_request']):>7.1f} {ratio:>8.2f}x")  # type: ignore[arg-type]
    if open_rows:
        print("\nOpen loop against nginx (constant arrivals)")
        print(f"{'offered/s':>9} {'achieved/s':>10} {'achieved %':>10} {'CPU % core':>10} {'us/req':>7} "
              f"{'lag p50 ms':>10} {'lag p99 ms':>10} {'late':>6} {'unsent':>6}")
        for r in open_rows:
            print(f"{float(r['offered_rps']):>9.0f} {float(r['achieved_rps']):>10.1f} "  # type: ignore[arg-type]
                  f"{float(r['achieved_rps']) / float(r['offered_rps']) * 100:>9.2f}% {float(r['cpu_pct']):>10.1f} "  # type: ignore[arg-type]
                  f"{float(r['us_per_request']):>7.1f} {r['lag_p50_ms']!s:>10} {r['lag_p99_ms']!s:>10} "  # type: ignore[arg-type]
                  f"{r['late']!s:>6} {r['unsent']!s:>6}")
    if accuracy_rows:
        print("\nLatency accuracy (constant 200 rps after a 1 s warm-up; bound 5% or 0.5 ms)")
        print("(truth = schedule + injected delays; served = truth + the server's own lateness, which it reports in "
              "each answer;\n own err = the percentile of measured - served, request by request: the generator's "
              "own error)")
        print(f"{'case':<34} {'pct':>5} {'truth':>8} {'measured':>9} {'error':>6} {'ok':>3} | {'srv late':>8} "
              f"{'served':>8} {'error':>6} {'ok':>3} | {'own err':>7}")
        for r in accuracy_rows:
            print(f"{r['case']!s:<34} {r['percentile']!s:>5} {float(r['truth_ms']):>8.2f} "  # type: ignore[arg-type]
                  f"{float(r['measured_ms']):>9.2f} {float(r['error_ms']):>6.2f} {'yes' if r['within'] else 'NO':>3} | "  # type: ignore[arg-type]
                  f"{float(r['server_late_ms']):>8.2f} {float(r['served_ms']):>8.2f} "  # type: ignore[arg-type]
                  f"{float(r['served_error_ms']):>6.2f} {'yes' if r['served_within'] else 'NO':>3} | "  # type: ignore[arg-type]
                  f"{float(r['own_error_ms']):>7.2f}")  # type: ignore[arg-type]
    if mem:
        first_mib = int(mem["rss_after_first_bytes"]) / 2**20  # type: ignore[call-overload]
        print(f"\nMemory: RSS after {int(mem['requests_first']):,} requests {first_mib:.1f} MiB, "  # type: ignore[call-overload]
              f"after {int(mem['requests_total']):,} {int(mem['rss_after_total_bytes']) / 2**20:.1f} MiB, "  # type: ignore[call-overload]
              f"growth {int(mem['growth_bytes']) / 2**20:+.2f} MiB (bound: 10 MB)")  # type: ignore[call-overload]
    if control:
        print("\nControl plane while 2 workers run flat out (answer times during the load stage)")
        for path in ("/healthz", "/report", "/metrics"):
            v = control.get(path)
            if isinstance(v, dict):
                print(f"  {path:<9} n={v['n']:<4} p50 {v['p50_ms']:.1f} ms  p99 {v['p99_ms']:.1f} ms  "
                      f"max {v['max_ms']:.1f} ms")


def machine_line() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return f"{os.cpu_count()} cores {model}, Python {sys.version.split()[0]}, load average {load[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per generator run")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 200,000 requests for memory")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get/pip install missing tools")
    parser.add_argument("--sections", default="peers,open,accuracy,memory,control")
    args = parser.parse_args()
    duration = 2.0 if args.quick else args.duration
    sections = set(args.sections.split(","))
    tools = ensure_tools(not args.no_install)
    if not tools["taskset"]:
        note("taskset not found: generator and target are not pinned")
    machine = machine_line()
    print(f"machine: {machine}")
    peer_rows: list[dict[str, object]] = []
    open_rows: list[dict[str, object]] = []
    accuracy_rows: list[dict[str, object]] = []
    mem = control = None
    if ("peers" in sections or "open" in sections or "control" in sections) and not tools["nginx"]:
        note("nginx not available: peers, open loop and control plane skipped")
        sections -= {"peers", "open", "control"}
    if "peers" in sections:
        print("\n-- generators flat out")
        peer_rows = peers(tools, duration)
    if "open" in sections:
        print("\n-- open loop")
        open_rows = open_loop(tools, max(duration, 3.0))
    if "accuracy" in sections:
        print("\n-- latency accuracy")
        accuracy_rows = accuracy(6.0 if args.quick else 30.0, tools["taskset"])
    if "memory" in sections:
        print("\n-- memory")
        try:
            mem = memory(200_000 if args.quick else 1_000_000, tools["taskset"])
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            note(f"memory run failed: {exc}")
    if "control" in sections:
        print("\n-- control plane")
        control = control_plane(tools, max(duration, 3.0))
    print_tables(peer_rows, open_rows, accuracy_rows, mem, control, machine)


if __name__ == "__main__":
    main()
