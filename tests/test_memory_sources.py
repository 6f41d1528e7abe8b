"""Which memory figure the sidecar can read when the model runs as another user, each tried for real.

The target is a real process started as uid 65534 (nobody), as a model image's own user would be. The reader
is a forked child of this (root) test process that takes on what a sidecar container would have: another
uid and no capabilities; root with CAP_SYS_PTRACE alone; or the model's own uid. Each reads with the
profiler's own sampler and reports which figure it kept, how the report names it, and why better ones were
unavailable.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from profiler.measure.resources.sampler import CGROUP_WORKING_SET, PSS, RSS, Cgroup, ProcessTree, ResourceSampler
from tests.conftest import require

TARGET_UID = 65534
OTHER_UID = 65533
CAP_SYS_PTRACE = 19
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _keep_only_sys_ptrace() -> None:
    """This process keeps CAP_SYS_PTRACE and no other capability (capset(2)), as `drop: [ALL]`, `add: [SYS_PTRACE]`."""
    libc = ctypes.CDLL(None, use_errno=True)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = 1 << CAP_SYS_PTRACE
    if libc.capset(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _cgroup_dir() -> Path | None:
    """The memory cgroup this machine shows at its usual mount (v2, or v1's memory controller), if any."""
    for path in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/memory")):
        if (path / "memory.current").exists() or (path / "memory.usage_in_bytes").exists():
            return path
    return None


def _read_as(target_pid: int, how: str, cgroup: Path | None = None) -> dict[str, Any]:
    """Fork a reader that becomes `how` ('other-uid', 'ptrace', 'same-uid'), sample twice, return what it saw."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the reader: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            if how == "ptrace":
                _keep_only_sys_ptrace()
            else:
                os.setgroups([])
                os.setgid(TARGET_UID if how == "same-uid" else OTHER_UID)
                os.setuid(TARGET_UID if how == "same-uid" else OTHER_UID)  # a non-root uid keeps no capability
            sampler = ResourceSampler(processes=ProcessTree(pid=target_pid),
                                      cgroup=Cgroup(cgroup) if cgroup is not None else None)
            readings = [sampler.read() for _ in range(2)]
            out = {"figure": sampler.memory_figure, "source": sampler.source, "unavailable": sampler.unavailable,
                   "uid": os.geteuid(), "pss": [r.pss_bytes if r else None for r in readings],
                   "rss": [r.rss_bytes if r else None for r in readings],
                   "memory": [r.memory_bytes if r else None for r in readings]}
            os.write(write_end, json.dumps(out).encode())
        except BaseException as exc:  # reported to the parent, which fails the test with it
            os.write(write_end, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        seen = json.loads(pipe.read() or b'{"error": "no answer"}')
    os.waitpid(child, 0)
    assert "error" not in seen, seen
    return seen


@pytest.fixture(scope="module")
def target() -> Any:
    """A real process running as uid 65534, as a model image's own user."""
    require(os.geteuid() == 0, "root (to start processes as other users)", "run the tests as root, as CI does")
    proc = subprocess.Popen(["sleep", "300"], user=TARGET_UID, group=TARGET_UID)
    yield proc
    proc.kill()
    proc.wait()


def test_another_uid_without_ptrace_falls_back_to_rss_and_says_why(target):
    seen = _read_as(target.pid, "other-uid")
    assert seen["uid"] == OTHER_UID
    assert seen["figure"] == RSS
    assert all(r and r > 0 for r in seen["rss"]) and seen["pss"] == [None, None]
    assert seen["source"].startswith("RSS from /proc/<pid>/statm (no ptrace access needed)")
    why = seen["unavailable"][PSS]
    assert f"the model runs as another user (uid {TARGET_UID})" in why and "lacks CAP_SYS_PTRACE" in why
    assert "no cgroup configured" in seen["unavailable"][CGROUP_WORKING_SET]


def test_sys_ptrace_alone_reads_pss_of_another_uid(target):
    seen = _read_as(target.pid, "ptrace")
    assert seen["figure"] == PSS and all(p and p > 0 for p in seen["pss"])
    assert seen["source"].startswith("PSS from /proc/<pid>/smaps_rollup")
    assert set(seen["unavailable"]) == {CGROUP_WORKING_SET}


def test_the_models_own_uid_reads_pss_without_any_capability(target):
    seen = _read_as(target.pid, "same-uid")
    assert seen["uid"] == TARGET_UID and seen["figure"] == PSS and all(p and p > 0 for p in seen["pss"])


def test_the_cgroup_working_set_needs_no_ptrace_where_it_is_visible(target):
    cgroup = _cgroup_dir()
    require(cgroup is not None, "a memory cgroup at /sys/fs/cgroup", "a Linux machine with cgroups mounted")
    seen = _read_as(target.pid, "other-uid", cgroup)
    assert seen["figure"] == CGROUP_WORKING_SET and all(m and m > 0 for m in seen["memory"])
    assert seen["source"].startswith("cgroup v") and str(cgroup) in seen["source"]
    assert seen["unavailable"] == {}
    # The process tree is still read beside it (RSS, without ptrace), for the report's per-process figures.
    assert all(r and r > 0 for r in seen["rss"])
