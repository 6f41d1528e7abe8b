"""The SQLite run history against real files: save, list, lineage, locks, corruption, secrets."""

from __future__ import annotations

import sqlite3

import pytest

from profiler.core.errors import StoreError
from profiler.core.redact import redact
from profiler.record.store import SCHEMA_VERSION, RunRecord, StageHistogram, Store


def record(run_id: str, verdict: str = "pass", model: str = "m", sha: str = "h1", predecessor=None) -> RunRecord:
    report = {"run": {"id": run_id, "status": "completed", "started_at": f"t-{run_id}", "finished_at": "t"},
              "target": {"model": model, "version": "v1"}, "dataset": {"sha256": sha},
              "verdict": {"status": verdict}, "metrics": {"accuracy": 0.9, "f1[3]": 0.5}}
    config = {"target": {"url": "http://x", "headers": {"Authorization": "Bearer s3cret"}, "token": "abc"},
              "load": {"stages": [{"rate_rps": 1}]}}
    return RunRecord(run_id, report, config, [StageHistogram("stage-1", "latency", 10.0, False, "HISTb64")],
                     [(0, "a", "1", "1"), (1, "b", "2", None)], predecessor)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "sub" / "history.sqlite"


def test_save_and_read_back(db):
    with Store(db) as store:
        store.save_run(record("r1"))
        store.save_run(record("r2", "fail", predecessor="r1"))
    with Store(db, create=False) as store:
        runs = store.list_runs()
        assert [r["id"] for r in runs] == ["r2", "r1"]
        assert runs[0]["predecessor_id"] == "r1" and runs[0]["verdict"] == "fail"
        assert runs[0]["metrics"] == {"accuracy": 0.9, "f1[3]": 0.5}
        full = store.get_run("r1")
        assert full is not None and full["report"]["run"]["id"] == "r1"
        assert full["config"]["target"]["token"] == "***"
        assert full["config"]["target"]["headers"] == "***"
        assert full["config"]["load"] == {"stages": [{"rate_rps": 1}]}
        assert store.get_run("nope") is None
        assert store.histograms("r1") == [StageHistogram("stage-1", "latency", 10.0, False, "HISTb64")]
        assert store.predictions("r1") == (["1", "2"], ["1", None])
        assert store.list_runs(limit=1)[0]["id"] == "r2"
        assert store.list_runs(model="other") == []
    assert "s3cret" not in db.read_bytes().decode("latin-1")


def test_wal_and_schema_version(db):
    Store(db).close()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match=rf"history.sqlite: .*schema version {SCHEMA_VERSION + 1}, newer"):
        Store(db)


@pytest.mark.parametrize(("saved", "model", "sha", "exclude", "expected"), [
    ([("r1", "pass", "m", "h1"), ("r2", "pass", "m", "h1")], "m", "h1", None, "r2"),    # the newest passing
    ([("r1", "pass", "m", "h1"), ("r2", "fail", "m", "h1")], "m", "h1", None, "r1"),    # not a failed one
    ([("r1", "pass", "m", "h1"), ("r2", "inconclusive", "m", "h1")], "m", "h1", None, "r1"),
    ([("r1", "pass", "m", "h2")], "m", "h1", None, None),                               # another hold-out set
    ([("r1", "pass", "other", "h1")], "m", "h1", None, None),                           # another model
    ([("r1", "pass", "m", "h1")], "m", "h1", "r1", None),                               # never itself
    ([], "m", "h1", None, None),
])
def test_last_passing(db, saved, model, sha, exclude, expected):
    with Store(db) as store:
        for run_id, verdict, m, h in saved:
            store.save_run(record(run_id, verdict, m, h))
        assert store.last_passing(model, sha, exclude) == expected


def test_duplicate_run_is_rejected_whole(db):
    with Store(db) as store:
        store.save_run(record("r1"))
        with pytest.raises(StoreError, match="cannot save a run to"):
            store.save_run(record("r1"))
        assert store.predictions("r1") == (["1", "2"], ["1", None])   # the first copy is intact
        assert len(store.list_runs()) == 1


def test_locked_history_is_a_clear_error_and_loses_nothing(db):
    with Store(db) as store:
        store.save_run(record("r1"))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO schema_version (version) VALUES (1)")
    try:
        with Store(db, timeout_s=0.2) as store, pytest.raises(StoreError) as caught:
            store.save_run(record("r2"))
        message = str(caught.value)
        assert str(db) in message and "locked by another process" in message and "\n" not in message
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Store(db) as store:
        assert [r["id"] for r in store.list_runs()] == ["r1"]
        store.save_run(record("r2"))
        assert [r["id"] for r in store.list_runs()] == ["r2", "r1"]


def test_garbage_file_is_a_clear_error_and_is_not_overwritten(db):
    db.parent.mkdir(parents=True)
    garbage = b"this is not sqlite \x00\xff" * 100
    db.write_bytes(garbage)
    with pytest.raises(StoreError, match=r"history.sqlite: the run history is not a readable SQLite database"):
        Store(db)
    assert db.read_bytes() == garbage


def test_missing_history_for_reading(db):
    with pytest.raises(StoreError, match="no run history here"):
        Store(db, create=False)
    assert not db.exists()
    with Store(db) as store, pytest.raises(StoreError, match="no run 'x' in the run history"):
        store.require_run("x")


@pytest.mark.parametrize(("data", "expected"), [
    ({"token": "t", "url": "u"}, {"token": "***", "url": "u"}),
    ({"Password": "p", "api_key": "k", "apiKey": "k2"}, {"Password": "***", "api_key": "***", "apiKey": "***"}),
    ({"headers": {"X": "1"}}, {"headers": "***"}),
    ({"headers": {}}, {"headers": {}}),           # nothing to hide
    ({"token": None}, {"token": None}),
    ({"a": [{"secret": "s"}]}, {"a": [{"secret": "***"}]}),
    ([], []),
    ("plain", "plain"),
    ({"url": "http://user:pw@model:8080/v2?key=abc"}, {"url": "http://REDACTED@model:8080/v2?key=REDACTED"}),
    ({"url": "grpc://127.0.0.1:8001"}, {"url": "grpc://127.0.0.1:8001"}),
])
def test_redact(data, expected):
    assert redact(data) == expected
