"""The bad-input suite: every mistake in a profile, a hold-out file, a target URL or a command line,
through the real CLI, is one line `profiler: error: ...` naming the file, line, field or URL, exit 3,
never a traceback.

Each case is `python -m profiler ARGS` in a process of its own, forked from one that imported the
CLI once (tests/cli_forkserver.py: the imports cost 2-3 s a process); `test_forked_cases_match_a_plain_run`
runs some of them as plain `python -m profiler` subprocesses too and gets the same line.

How the failing reads are made real (the tests run as root, for whom permissions do not apply):
- EIO: /proc/self/mem opens, and reading it at offset 0 (never mapped) fails with EIO in the kernel;
- EACCES: the forked child drops to uid 65534 (nobody) before the CLI starts, and the file is mode 000;
- huge: sparse files (os.truncate), so 2 GiB cost no disk; a FIFO that nobody writes to blocks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.forked_cli import ForkedCli, Outcome

SECRET = "pw-SECRET-7f3a"
HOLDOUT = (
    '{"id": "a", "x": [1, 2], "y": 0}\n'
    '{"id": "b", "x": [3, 4], "y": 1}\n'
    '{"id": "c", "x": [5, 6], "y": 0}\n'
)
PROFILE = """\
target: {{url: "{url}", model: m, ready_timeout_s: 1, timeout_s: 1{target}}}
dataset: {{path: {path}, inputs: x, label: y, id: id{dataset}}}
load: {{stages: [{{rate_rps: 1, requests: 1}}]}}
resources: {{settle_s: 0}}
report: {{path: report.json}}
{extra}"""


Setup = Callable[[Path], None]


def profile(url: str = "http://127.0.0.1:9", path: str = "h.jsonl", target: str = "", dataset: str = "",
            extra: str = "") -> Setup:
    """A setup that writes p.yaml (from PROFILE) and the good hold-out h.jsonl."""
    def setup(folder: Path) -> None:
        (folder / "h.jsonl").write_text(HOLDOUT, encoding="utf-8")
        (folder / "p.yaml").write_text(PROFILE.format(url=url, path=path, target=target, dataset=dataset,
                                                      extra=extra), encoding="utf-8")
    return setup


def resources_are(section: str) -> Setup:
    """The good profile with its resources section replaced by `section` (YAML flow mapping)."""
    def setup(folder: Path) -> None:
        profile()(folder)
        path = folder / "p.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace("resources: {settle_s: 0}",
                                                                 f"resources: {section}"), encoding="utf-8")
    return setup


def holdout(data: bytes | None = None, *, name: str = "h.jsonl", size: int | None = None, dataset: str = "",
            then: Callable[[Path], None] | None = None) -> Setup:
    """A good profile reading `name`, whose bytes are `data` (or a sparse file of `size` bytes)."""
    def setup(folder: Path) -> None:
        profile(path=name, dataset=dataset)(folder)
        target = folder / name
        target.unlink(missing_ok=True)
        if size is not None:
            target.touch()
            os.truncate(target, size)
        elif data is not None:
            target.write_bytes(data)
        if then is not None:
            then(target)
    return setup


def raw_profile(data: bytes | None = None, size: int | None = None) -> Setup:
    """p.yaml holding exactly `data` (or a sparse file of `size` bytes), next to the good hold-out."""
    def setup(folder: Path) -> None:
        (folder / "h.jsonl").write_text(HOLDOUT)
        if size is not None:
            (folder / "p.yaml").touch()
            os.truncate(folder / "p.yaml", size)
        else:
            (folder / "p.yaml").write_bytes(data or b"")
    return setup


def good(folder: Path) -> None:
    profile()(folder)


def make_dir(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


def make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def no_access(path: Path) -> None:
    path.chmod(0)


def profile_is(replace: Callable[[Path], None]) -> Setup:
    def setup(folder: Path) -> None:
        good(folder)
        replace(folder / "p.yaml")
    return setup


def alias_bomb() -> bytes:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    return ("\n".join(lines) + "\n").encode()


RUN = ["run", "-c", "p.yaml"]
NOBODY = 65534

# (id, setup, argv, what the one line must say ({d} is the case's folder), extra case options)
CASES: list[tuple[str, Setup, list[str], list[str], dict[str, object]]] = [
    # --- the profile
    ("profile-missing", good, ["run", "-c", "nope.yaml"], ["nope.yaml: cannot read config: No such file"], {}),
    ("profile-directory", profile_is(make_dir), RUN, ["p.yaml: cannot read config: it is a directory"], {}),
    ("profile-not-utf8", raw_profile(b"target:\n  url: \xff\xfe\n"), RUN,
     ["p.yaml:2: the config is not UTF-8 text (byte 0xff)"], {}),
    ("profile-utf16", raw_profile("target: {}\n".encode("utf-16")), RUN, ["p.yaml:1: the config is not UTF-8"], {}),
    ("profile-huge", raw_profile(size=5 * 1024 * 1024), RUN, ["p.yaml: the config is larger than 1024 KiB"], {}),
    ("profile-eio", good, ["run", "-c", "/proc/self/mem"], ["/proc/self/mem: cannot read config: Input/output error"],
     {}),
    ("profile-eacces", profile_is(no_access), RUN, ["p.yaml: cannot read config: Permission denied"],
     {"uid": NOBODY}),
    ("profile-fifo-without-writer", profile_is(make_fifo), RUN,
     ["p.yaml: cannot read config: nothing arrived within 0.5 s"], {"patch": {"profiler.config.CONFIG_WAIT_S": 0.5}}),
    ("profile-bad-yaml", raw_profile(b"target: {url: [\n"), RUN, ["p.yaml:2: invalid YAML"], {}),
    ("profile-tabs", raw_profile(b"target:\n\turl: x\n"), RUN, ["p.yaml:2: invalid YAML"], {}),
    ("profile-nested-deep", raw_profile(b"[" * 20000), RUN, ["p.yaml: invalid YAML: nested too deeply"], {}),
    ("profile-alias-bomb", raw_profile(alias_bomb()), RUN, ["p.yaml: the config expands to more than 100000"], {}),
    ("profile-not-mapping", raw_profile(b"- 1\n- 2\n"), RUN, ["p.yaml: the config must be a YAML mapping"], {}),
    ("profile-nul-path", profile(path='"h\\0.jsonl"'), RUN, ["p.yaml:2: dataset.path: a path cannot hold a NUL"], {}),
    ("profile-huge-size", profile(extra="node: {allocatable_memory_bytes: " + "9" * 400 + "Gi}\n"), RUN,
     ["p.yaml:6: node.allocatable_memory_bytes:", "is too large a size"], {}),
    ("profile-storage-size", profile(extra="node: {allocatable_storage_bytes: lots}\n"), RUN,
     ["p.yaml:6: node.allocatable_storage_bytes:", "must be a size like 512Mi, 16Gi"], {}),
    ("profile-gpu-url", resources_are("{settle_s: 0, gpu: {metrics_url: 'ftp://u:secret@h/m'}}"), RUN,
     ["p.yaml:4: resources.gpu:", "metrics_url must be an http:// or https:// URL", "got 'ftp://REDACTED@h/m'"], {}),
    ("profile-nvml-without-process", resources_are("{settle_s: 0, gpu: {nvml: true}}"), RUN,
     ["p.yaml:4: resources: gpu.nvml reads the GPU memory of the model's processes: give pid, cmdline or pod"],
     {}),
    ("profile-duplicate-key", profile(extra="load: {stages: [{rate_rps: 2, requests: 1}]}\n"), RUN,
     ["p.yaml:6: the key 'load' appears twice in the same mapping"], {}),
    ("profile-header-name", profile(target=', headers: {"X Key": v}'), RUN,
     ["p.yaml:1: target.headers:", "is not a header name"], {}),
    ("profile-header-host", profile(target=", headers: {Host: evil}"), RUN,
     ["p.yaml:1: target.headers:", "the header Host is set by the profiler itself"], {}),
    ("profile-env-name", profile(target=', bearer_token: {env: "A=B"}'), RUN,
     ["p.yaml:1: target.bearer_token.env:", "is not an environment variable name"], {}),
    ("profile-two-authorizations", profile(url=f"http://u:{SECRET}@127.0.0.1:9", target=", bearer_token: {env: T}"),
     RUN, ["p.yaml:1: target:", "user:password (sent as Basic) and bearer_token both set the Authorization"], {}),
    ("profile-tls-ca-garbage", profile(url=f"grpcs://u:{SECRET}@127.0.0.1:9", target=", protocol: v2-grpc, "
                                       "tls_ca_file: p.yaml"), RUN,
     ["target.tls_ca_file: p.yaml holds no PEM certificate"], {}),
    ("profile-infer-path", profile(target=', protocol: json, request_template: {a: "{{inputs}}"}, '
                                          'response_path: $.y, infer_path: "predict"'), RUN,
     ["p.yaml:1: target.infer_path: the path must start with '/'"], {}),
    # --- the target URL
    ("url-port-out-of-range", profile(url="http://127.0.0.1:70000"), RUN,
     ["p.yaml:1: target.url: the URL has the port 70000, out of range 1-65535"], {}),
    ("url-port-zero", profile(url="http://127.0.0.1:0"), RUN, ["target.url: the URL has the port 0, out of range"], {}),
    ("url-port-not-a-number", profile(url=f"http://user:{SECRET}@127.0.0.1:8o80"), RUN,
     ["target.url: the URL has a port that is not a number"], {}),
    ("url-ipv6-unclosed", profile(url=f"http://u:{SECRET}@[::1"), RUN,
     ["target.url: the URL has a malformed IPv6 address: '[' without its ']'"], {}),
    ("url-ipv6-malformed", profile(url="http://[::g]:80"), RUN, ["target.url: the URL has a malformed IPv6 address"],
     {}),
    ("url-ipv6-unbracketed", profile(url="http://::1:80"), RUN, ["an IPv6 address without brackets"], {}),
    ("url-ipv6-trailing", profile(url="http://[::1]x:80"), RUN, ["text after the IPv6 address"], {}),
    ("url-empty-host", profile(url="http://:8000"), RUN, ["target.url: the URL has no host"], {}),
    ("url-empty", profile(url=""), RUN, ["target.url: the URL is empty"], {}),
    ("url-unknown-scheme", profile(url=f"ftp://u:{SECRET}@h"), RUN, ["the URL has the unknown scheme 'ftp'"], {}),
    ("url-no-scheme", profile(url="127.0.0.1:8000"), RUN, ["the URL is not an absolute URL"], {}),
    ("url-bad-host", profile(url="http://ho$t:80"), RUN, ["the URL has an invalid host name"], {}),
    ("url-non-ascii-host", profile(url="http://mödel:80"), RUN, ["non-ASCII character 'ö' at position 9"], {}),
    ("url-space", profile(url="http://h:80/a b"), RUN, ["holds a space or control character at position 14"], {}),
    ("url-fragment", profile(url="http://h:80/#x"), RUN, ["has a #fragment"], {}),
    ("url-bad-escape", profile(url="http://h:80/?key=%zz"), RUN, ["holds a '%' that is not a %XX escape"], {}),
    ("url-bad-char", profile(url="http://h:80/a|b"), RUN, ["holds the character '|'"], {}),
    ("url-empty-user", profile(url="http://:x@h:80"), RUN, ["credentials without a user name"], {}),
    ("url-grpc-no-port", profile(url="grpc://h", target=", protocol: v2-grpc"), RUN,
     ["the URL has no port; a grpc:// target needs one"], {}),
    ("url-grpc-query", profile(url=f"grpc://h:1?key={SECRET}", target=", protocol: v2-grpc"), RUN,
     ["the URL has a query string"], {}),
    ("url-unresolvable", profile(url=f"http://u:{SECRET}@no-such-host.invalid:8000/?key={SECRET}"), RUN,
     ["cannot resolve host no-such-host.invalid"], {}),
    ("url-never-ready", profile(url=f"http://u:{SECRET}@127.0.0.1:9/base?key={SECRET}"), RUN,
     ["target never became ready within 1 s",
      "http://REDACTED@127.0.0.1:9/base/v2/health/ready?key=REDACTED -> no answer"], {}),
    # --- the hold-out file
    ("holdout-missing", holdout(name="none.jsonl"), RUN, ["none.jsonl: cannot read hold-out file: No such file"],
     {}),
    ("holdout-directory", holdout(then=make_dir), RUN, ["h.jsonl: cannot read hold-out file: Is a directory"],
     {}),
    ("holdout-eio", profile(path="/proc/self/mem"), RUN,
     ["/proc/self/mem: cannot read hold-out file at line 1: Input/output error"], {}),
    ("holdout-eacces", holdout(HOLDOUT.encode(), then=no_access), RUN,
     ["h.jsonl: cannot read hold-out file: Permission denied"], {"uid": NOBODY}),
    ("holdout-not-utf8", holdout(HOLDOUT.encode() + b'{"id": "d", "x": [1, 2], "y": "caf\xe9"}\n'), RUN,
     ["h.jsonl:4: not UTF-8 text (byte 0xe9 at column 35)"], {}),
    ("holdout-utf16", holdout(HOLDOUT.encode("utf-16")), RUN, ["h.jsonl:1: not UTF-8 text"], {}),
    ("holdout-huge-line", holdout(size=17 * 1024 * 1024), RUN, ["h.jsonl:1: line is longer than 16 MiB"], {}),
    ("holdout-huge-file", holdout(size=3 * 1024**3), RUN,
     ["h.jsonl: hold-out file is 3.0 GiB, more than the 1 GiB"], {}),
    ("holdout-wrong-length", holdout(HOLDOUT.replace('"x": [5, 6]', '"x": [5]').encode()), RUN,
     ["h.jsonl:3: sample c: holds 1 input values, the declared inputs take 2"], {}),
    ("holdout-bad-json", holdout(HOLDOUT.encode() + b"{oops\n"), RUN, ["h.jsonl:4: not valid JSON"], {}),
    ("holdout-deep-json", holdout(b'{"id": "a", "y": 0, "x": ' + b"[" * 100000 + b"\n"), RUN,
     ["h.jsonl:1: not valid JSON"], {}),
    ("holdout-huge-int", holdout(b'{"id": "a", "y": 0, "x": [' + b"9" * 5000 + b"]}\n"), RUN,
     ["h.jsonl:1: not valid JSON"], {}),
    ("holdout-huge-float", holdout(b'{"id": "a", "y": 0, "x": [' + b"9" * 400 + b", 1]}\n"), RUN,
     ["h.jsonl:1: sample a: input 'input-0' (FP32):", "is too large for FP32"], {}),
    ("holdout-label-list", holdout(b'{"id": "a", "x": [1, 2], "y": [0]}\n'), RUN,
     ["h.jsonl:1: label field 'y' must be a string, number or boolean, got list"], {}),
    ("holdout-empty-inputs", holdout(b'{"id": "a", "x": [], "y": 0}\n'), RUN, ["h.jsonl:1: inputs field 'x' is empty"],
     {}),
    ("holdout-no-samples", holdout(b"\n\n"), RUN, ["h.jsonl: hold-out file has no samples"], {}),
    ("csv-nul", holdout(b"id,x,y\na,1\x00,0\n", name="h.csv", dataset=", format: csv"), RUN,
     ["h.csv:2: sample a: input 'input-0' (FP32): '1\\x00' is not a number"], {}),
    ("csv-huge-field", holdout(b"id,x,y\na," + b"1" * 200_000 + b",0\n", name="h.csv", dataset=", format: csv"), RUN,
     ["h.csv:2: not valid CSV: field larger than field limit"], {}),
    ("csv-duplicate-header", holdout(b"id,x,x,y\na,1,2,0\n", name="h.csv", dataset=", format: csv"), RUN,
     ["h.csv:1: the header names column 'x' twice"], {}),
    # --- the command line
    ("cli-no-command", good, [], ["the following arguments are required: command"], {}),
    ("cli-unknown-command", good, ["runn"], ["invalid choice: 'runn'"], {}),
    ("cli-run-without-config", good, ["run"], ["the following arguments are required: --config/-c"], {}),
    ("cli-serve-port", good, ["serve", "-c", "p.yaml", "--port", "70000"], ["port 70000 is out of range 0-65535"],
     {}),
    ("cli-serve-port-text", good, ["serve", "-c", "p.yaml", "--port", "http"], ["'http' is not a port number"], {}),
    ("cli-history-limit", good, ["history", "--limit", "0"], ["argument --limit: 0 is not 1 or more"], {}),
    ("cli-merge-missing", good, ["merge", "nope.json", "--out", "m.json"], ["nope.json: cannot read report"], {}),
    # --- overrides, variables and CI outputs
    ("cli-set-negative-rate", good, [*RUN, "--set", "load.stages.0.rate_rps=-1"],
     ["--set load.stages.0.rate_rps: load.stages.0.rate_rps: Input should be greater than 0"], {}),
    ("cli-set-unknown-key", good, [*RUN, "--set", "load.rate=5"], ["--set load.rate: load.rate: unknown field"], {}),
    ("cli-set-no-value", good, [*RUN, "--set", "load.client"], ["--set 'load.client': expected KEY=VALUE"], {}),
    ("profile-unset-variable", profile(target=', version: "${PROFILER_TEST_UNSET_VARIABLE}"'), RUN,
     ["p.yaml:1: ${{PROFILER_TEST_UNSET_VARIABLE}} is not set and has no default"], {}),
    ("cli-baseline-not-a-report", good, [*RUN, "--baseline", "nope/report.json"],
     ["baseline.run 'nope/report.json': cannot read the report: No such file"], {}),
]


@pytest.fixture(scope="module")
def folder_root() -> Iterator[Path]:
    """Case folders that uid 65534 can enter (pytest's own temporary folders are root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="profiler-bad-inputs-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cli() -> Iterator[ForkedCli]:
    """tests/cli_forkserver.py, started once for the module."""
    forked = ForkedCli()
    yield forked
    forked.close()


def assert_one_line_error(outcome: Outcome, expected: list[str]) -> None:
    """Exit 3 and exactly one line on stderr: `profiler: error: ...` holding every expected piece."""
    assert outcome.rc == 3, (outcome.rc, outcome.stderr[-2000:])
    assert "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr[-2000:]
    assert lines[0].startswith("profiler: error: "), lines[0]
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    assert SECRET not in outcome.stderr + outcome.stdout


@pytest.mark.parametrize(("setup", "argv", "expected", "options"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_3(cli: ForkedCli, folder_root: Path, setup: Setup,
                                          argv: list[str], expected: list[str], options: dict[str, object],
                                          request: pytest.FixtureRequest) -> None:
    folder = folder_root / request.node.callspec.id
    folder.mkdir()
    folder.chmod(0o777)  # uid 65534 writes the case's stdout and stderr files here
    setup(folder)
    outcome = cli.run(folder, argv, **options)
    assert_one_line_error(outcome, [piece.format(d=folder) for piece in expected])


@pytest.mark.parametrize("name", ["url-unresolvable", "holdout-wrong-length"])
def test_forked_cases_match_a_plain_run(cli: ForkedCli, folder_root: Path, name: str) -> None:
    """The forked CLI is the CLI: the same cases as plain `python -m profiler` processes end the same way."""
    _, setup, argv, expected, _ = next(case for case in CASES if case[0] == name)
    folder = folder_root / f"plain-{name}"
    folder.mkdir()
    setup(folder)
    done = subprocess.run([sys.executable, "-m", "profiler", *argv], cwd=folder, capture_output=True, text=True,
                          timeout=120, check=False)
    plain = Outcome(done.returncode, done.stdout, done.stderr)
    assert_one_line_error(plain, [piece.format(d=folder) for piece in expected])
    forked = cli.run(folder, argv)
    assert (forked.rc, forked.stderr) == (plain.rc, plain.stderr)
