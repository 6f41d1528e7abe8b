"""A report file that cannot be written: the run's answer is still printed and saved, the exit code is 3.

Exit 1 means a required check failed and nothing else (CI reads it as "the model failed"), so a
profiler that measured a passing model but could not write its report exits 3, with one line naming
the path, after printing the table; the history keeps the run; no temp file stays behind. Each
failure is a real one: a full tmpfs (ENOSPC), a read-only mount (EROFS; tests run as root, whom a
mode of 0555 would not stop), a parent that is a regular file (ENOTDIR), a path that is a directory
(EISDIR). The mounts need CAP_SYS_ADMIN; without it those cases are left out (the others still run)
and the test's captured output says so.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.core.errors import ReportError
from profiler.examples.holdout import write_holdout
from profiler.record.report import write_json
from profiler.record.store import Store

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  accuracy_pass: false
  stages: [{{rate_rps: 20, duration_s: 0.5}}]
objective: {{latency_ms: 1000}}
gates: [{{metric: error_rate, max: 0.05}}]
resources: {{settle_s: 0}}
history: {{path: {history}}}
server: {{port: 0}}
"""

Mount = Callable[[Path, str], Path | None]


@pytest.fixture
def mount() -> Iterator[Mount]:
    """Mount a tmpfs on a fresh folder (options such as "size=4k" or "ro"); unmounted after the test.
    None (and a note) where mounting is not allowed (no CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def do(folder: Path, options: str) -> Path | None:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                  capture_output=True, text=True, check=False)
            why = done.stderr.strip() or f"exit {done.returncode}" if done.returncode else ""
        except OSError as exc:  # no mount(8) at all
            why = str(exc)
        if why:  # this suite turns warnings into errors: a note in the captured output instead
            print(f"cannot mount a tmpfs here ({why}; needs CAP_SYS_ADMIN): the {options} case is left out")
            return None
        mounted.append(folder)
        return folder

    yield do
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _profile(tmp_path: Path, url: str) -> Path:
    write_holdout(tmp_path / "holdout.jsonl")
    path = tmp_path / "profile.yaml"
    path.write_text(PROFILE.format(url=url, history=tmp_path / "history.sqlite"), encoding="utf-8")
    return path


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "profiler.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _unwritable(tmp_path: Path, mount: Mount) -> dict[str, tuple[Path, str]]:
    """Report paths that cannot be written, each with the reason the error line must give."""
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-folder").mkdir()
    cases = {
        "parent is a file": (tmp_path / "a-file" / "report.json",
                             f"{os.strerror(errno.ENOTDIR)}: {tmp_path / 'a-file'}"),
        "path is a folder": (tmp_path / "a-folder", os.strerror(errno.EISDIR)),
    }
    full = mount(tmp_path / "full", "size=4k")  # one page: the report (tens of KB) does not fit
    if full is not None:
        (full / "filler").write_bytes(b"x" * 100)
        cases["full"] = (full / "report.json", os.strerror(errno.ENOSPC))
    read_only = mount(tmp_path / "read-only", "ro,size=1m")
    if read_only is not None:
        cases["read-only"] = (read_only / "report.json", os.strerror(errno.EROFS))
    return cases


@pytest.mark.slow
def test_a_report_that_cannot_be_written_exits_3_after_printing_and_saving(
        tmp_path: Path, example_server: tuple[Any, str], mount: Mount) -> None:
    _, url = example_server
    profile = _profile(tmp_path, url)
    cases = _unwritable(tmp_path, mount)
    # The runs go side by side (each mostly waits on its schedule), into one history file.
    children = {name: _cli("run", "-c", str(profile), "--report", str(path)) for name, (path, _) in cases.items()}
    outputs = {name: (child.communicate(timeout=180), child.returncode) for name, child in children.items()}
    for name, ((out, err), code) in outputs.items():
        path, reason = cases[name]
        assert code == 3, (name, out, err)
        # One line, naming the path and the reason; no traceback.
        assert err.splitlines() == [f"profiler: error: cannot write the report to {path}: {reason}"], (name, err)
        # What was measured is printed: the table, its verdict, and where the history keeps the run.
        assert "verdict  PASS" in out and "stage-1" in out and "(saved)" in out, (name, out)
        assert "report   NOT WRITTEN" in out, (name, out)
        folder = path if path.is_dir() else path.parent
        if folder.is_dir():
            assert not list(folder.glob(".report-*")), (name, os.listdir(folder))
    assert not (tmp_path / "a-folder" / "report.json").exists()
    with Store(tmp_path / "history.sqlite", create=False) as store:
        runs = store.list_runs()
    assert len(runs) == len(cases) and {r["verdict"] for r in runs} == {"pass"}


@pytest.mark.slow
def test_serve_once_exits_3_when_the_report_cannot_be_written(tmp_path: Path,
                                                               example_server: tuple[Any, str]) -> None:
    _, url = example_server
    profile = _profile(tmp_path, url)
    (tmp_path / "a-folder").mkdir()
    text = profile.read_text() + f"report: {{path: {tmp_path / 'a-folder'}}}\n"
    profile.write_text(text, encoding="utf-8")
    child = _cli("serve", "--once", "-c", str(profile))
    out, err = child.communicate(timeout=180)
    assert child.returncode == 3, (out, err)
    lines = [line for line in err.splitlines() if "cannot write the report" in line]
    assert len(lines) == 1 and f"cannot write the report to {tmp_path / 'a-folder'}: Is a directory" in lines[0], err
    assert "Traceback" not in err
    with Store(tmp_path / "history.sqlite", create=False) as store:
        assert [r["verdict"] for r in store.list_runs()] == ["pass"]


def test_write_json_leaves_no_temp_file_whatever_fails(tmp_path: Path, mount: Mount) -> None:
    full = mount(tmp_path / "full", "size=4k")
    if full is not None:
        big = {"padding": "x" * 20_000}
        with pytest.raises(ReportError, match=f"cannot write the report to {full / 'r.json'}: No space left on "):
            write_json(big, full / "r.json")
        assert os.listdir(full) == []
    # A report that is not JSON (a NaN: a bug, not the user's doing) raises as it is, and leaves nothing.
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json({"x": float("nan")}, tmp_path / "nan.json")
    assert not list(tmp_path.glob(".report-*")) and not (tmp_path / "nan.json").exists()
    # A missing parent that can be created is created.
    assert write_json({"ok": 1}, tmp_path / "new" / "deeper" / "r.json").read_text() == '{\n  "ok": 1\n}\n'
