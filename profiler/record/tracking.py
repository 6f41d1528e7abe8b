"""MLflow as a two-way run history: each run logged (params, metrics, tags, the report and its evidence as
artifacts), and read back (the predecessor, `profiler history`, `profiler compare`). I/O shell.

Optional: needs the `mlflow` extra (`pip install 'model-profiler[mlflow]'`, the mlflow-skinny client).
The client is imported lazily, so a profile without `tracking` never pays for it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.config import Config, TrackingConfig
from profiler.core.errors import ConfigError, StoreError
from profiler.core.redact import redact, redact_text, redact_url
from profiler.judge.comparability import Candidate
from profiler.judge.significance import Evidence, StageLatency
from profiler.record.store import RunRecord

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_PARAM_CHARS = 500
MAX_TAG_CHARS = 5000
"""MLflow keeps tag values up to 8,000 characters; the context tag is far below."""
REPORT_ARTIFACT = "report.json"
EVIDENCE_ARTIFACT = "evidence.json"
"""Labels, predictions and encoded latency histograms: what the next run's paired tests need."""

# MLflow's client retries a refused connection 7 times with exponential backoff (minutes) and waits
# 120 s for an answer. A CI job should learn that the server is down in seconds; the user's own
# settings of these variables win.
# Its URL lines on stdout would land in the middle of the profiler's own output (and a CI log parser's).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def check_available(config: Config) -> None:
    """ConfigError before the run when tracking is configured but MLflow is not installed."""
    if config.tracking is not None and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("tracking.mlflow_uri: MLflow is not installed; pip install 'model-profiler[mlflow]'")


def mlflow_metric_name(name: str) -> str:
    """A metric name MLflow accepts: 'f1[3]' -> 'f1.class.3', 'latency_p99_ms@100rps' -> 'latency_p99_ms.at.100rps'."""
    name = name.replace("[", ".class.").replace("]", "").replace("@", ".at.")
    return _UNSAFE.sub("_", name)


def flat_params(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config data as dotted keys and short string values."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flat_params(value, f"{prefix}{key}."))
        return out
    text = data if isinstance(data, str) else json.dumps(data, default=str)
    return {_UNSAFE.sub("_", prefix.rstrip(".")): text[:MAX_PARAM_CHARS]}


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _first_line(exc: BaseException) -> str:
    """The reason in a few words: the socket's (`cannot connect: Connection refused`) when the client could not
    reach the server (its message is a page of urllib3), else the first line of the message."""
    text = str(exc).strip()
    errno = _ERRNO.search(text)
    if errno:
        return f"cannot connect: {errno.group(1).strip()}"
    if "Max retries exceeded" in text:
        return "cannot connect: no answer (timed out or refused)"
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)[:300]


def _client(uri: str) -> MlflowClient:
    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # Lazy: the optional extra; check_available refused a tracking profile without it before the run.
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def _errors() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException  # lazy, the optional extra (see _client)
    return (MlflowException, OSError, ValueError, KeyError)


def _experiment_id(client: MlflowClient, name: str, create: bool) -> str | None:
    """The experiment's id; created when missing and `create`. Two jobs creating it at once: the loser reads
    the winner's (MLflow answers RESOURCE_ALREADY_EXISTS)."""
    from mlflow.exceptions import MlflowException  # lazy, the optional extra (see _client)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    if not create:
        return None
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def evidence_document(record: RunRecord) -> dict[str, Any]:
    """The evidence artifact: labels and predictions by sample index, the measured stages' latency histograms."""
    return {"labels": [label for _, _, label, _ in record.predictions],
            "predictions": [prediction for _, _, _, prediction in record.predictions],
            "latency": [{"stage": h.stage, "offered_rps": h.offered_rps, "encoded": h.encoded}
                        for h in record.histograms if h.kind == "latency" and not h.warmup]}


def log_run(report: dict[str, Any], config: Config, record: RunRecord | None = None) -> dict[str, Any]:
    """Log one run to the configured MLflow tracking store; returns {'uri', 'mlflow_run_id', 'experiment_id'}
    or {'uri', 'error'}. `record` (the history's copy of the run) adds the evidence artifact."""
    tracking = config.tracking
    assert tracking is not None
    shown = redact_url(tracking.mlflow_uri)  # what the report keeps: the URI may carry user:password or a token
    if importlib.util.find_spec("mlflow") is None:
        return {"uri": shown, "error": "MLflow is not installed; pip install 'model-profiler[mlflow]'"}
    try:
        client = _client(tracking.mlflow_uri)
        experiment_id = _experiment_id(client, tracking.experiment, create=True)
        assert experiment_id is not None
        mlflow_id = _log(client, experiment_id, report, config, record)
    except _errors() as exc:
        return {"uri": shown, "error": f"MLflow at {shown}: {_first_line(exc)}"}
    return {"uri": shown, "mlflow_run_id": mlflow_id, "experiment_id": experiment_id}


def _log(client: MlflowClient, experiment_id: str, report: dict[str, Any], config: Config,
         record: RunRecord | None) -> str:
    from mlflow.entities import Metric, Param, RunTag  # lazy, the optional extra (see _client)
    run = report["run"]
    target = report["target"]
    version = target.get("version")
    tags = {"profiler.run_id": run["id"], "model": target["model"],
            "model_version": "" if version is None else str(version),
            "holdout_sha256": str(report["dataset"]["sha256"]), "verdict": report["verdict"]["status"],
            "run_status": str(run.get("status")),
            "profiler.context": json.dumps(report.get("context"), sort_keys=True)[:MAX_TAG_CHARS],
            "profiler.predecessor": str((report.get("predecessor") or {}).get("id") or ""),
            "profiler.started_at": str(run.get("started_at") or "")}
    created = client.create_run(experiment_id, run_name=run["id"], tags=tags)
    mlflow_id = str(created.info.run_id)
    now_ms = int(time.time() * 1000)
    metrics = [Metric(mlflow_metric_name(k), float(v), now_ms, 0)
               for k, v in (report.get("metrics") or {}).items()
               if isinstance(v, int | float) and not isinstance(v, bool) and v == v]
    settings = redact(config.model_dump(mode="json", exclude_none=True))
    params = [Param(k, v) for k, v in flat_params(settings).items()]
    verdict_code = {"pass": 0.0, "fail": 1.0, "inconclusive": 2.0}.get(report["verdict"]["status"], 3.0)
    metrics.append(Metric("verdict_code", verdict_code, now_ms, 0))
    for start in range(0, max(len(metrics), len(params)), 100):
        client.log_batch(mlflow_id, metrics=metrics[start:start + 100], params=params[start:start + 100],
                         tags=[RunTag("profiler.version", str(report.get("profiler_version")))] if not start
                         else [])
    client.log_dict(mlflow_id, report, REPORT_ARTIFACT)
    if record is not None:
        client.log_dict(mlflow_id, evidence_document(record), EVIDENCE_ARTIFACT)
    # Terminated last: a reader takes only FINISHED runs, so a run being logged is never half-read.
    client.set_terminated(mlflow_id, "FINISHED")
    return mlflow_id


def _quoted(value: str) -> str:
    """A string literal for MLflow's filter syntax (single quotes; a quote inside is refused by the caller)."""
    if "'" in value:
        raise StoreError(f"cannot search MLflow for a value with a quote in it: {value[:60]!r}")
    return f"'{value}'"


class MlflowHistory:
    """The run history kept in an MLflow experiment: the same questions as the SQLite Store answers.

    Every method raises StoreError naming the (redacted) tracking URI, never MLflow's own exceptions.
    """

    def __init__(self, tracking: TrackingConfig) -> None:
        self.uri = tracking.mlflow_uri
        self.where = f"MLflow at {redact_url(tracking.mlflow_uri)} (experiment {tracking.experiment!r})"
        self.experiment = tracking.experiment
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError("tracking.mlflow_uri: MLflow is not installed; pip install 'model-profiler[mlflow]'")
        self._client = _client(self.uri)
        self._experiment_id: str | None = None
        self._looked_up = False

    def __enter__(self) -> MlflowHistory:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: the client holds no connection between calls."""

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except _errors() as exc:
            raise StoreError(f"{self.where}: cannot {doing}: {_first_line(exc)}") from None

    def _experiment(self) -> str | None:
        if not self._looked_up:
            self._experiment_id = _experiment_id(self._client, self.experiment, create=False)
            self._looked_up = True
        return self._experiment_id

    def _search(self, filters: list[str], limit: int) -> list[Run]:
        experiment = self._experiment()
        if experiment is None:
            return []
        # FINISHED only: a run still being logged (or one whose logging died) has no complete artifacts.
        where = " and ".join(["attributes.status = 'FINISHED'", *filters])
        return list(self._client.search_runs([experiment], where, max_results=limit,
                                             order_by=["attributes.start_time DESC"]))

    def passing_runs(self, model: str, holdout_sha256: str, exclude: str | None = None,
                     limit: int = 50) -> list[Candidate]:
        """The passing runs of `model` on this hold-out set, newest first, with their recorded contexts."""
        with self._guard("read the run history"):
            runs = self._search([f"tags.model = {_quoted(model)}", f"tags.holdout_sha256 = {_quoted(holdout_sha256)}",
                                 "tags.verdict = 'pass'"], limit)
        out = []
        for run in runs:
            tags = run.data.tags
            if tags.get("profiler.run_id") == exclude:
                continue
            try:
                context = json.loads(tags.get("profiler.context") or "null")
            except ValueError:
                context = None
            out.append(Candidate(tags.get("profiler.run_id", run.info.run_id), context))
        return out

    def _find(self, run_id: str) -> Run | None:
        runs = self._search([f"tags.`profiler.run_id` = {_quoted(run_id)}"], 1)
        if runs:
            return runs[0]
        if re.fullmatch(r"[0-9a-f]{32}", run_id):  # an MLflow run id, as its UI shows it
            return self._client.get_run(run_id)
        return None

    def _artifact(self, mlflow_id: str, name: str) -> Any:
        with tempfile.TemporaryDirectory(prefix="profiler-mlflow-") as folder:
            path = self._client.download_artifacts(mlflow_id, name, folder)
            return json.loads(Path(path).read_text(encoding="utf-8"))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run's summary plus its full report (and `mlflow_run_id`), or None if there is no such run."""
        with self._guard(f"read run {run_id!r}"):
            run = self._find(run_id)
            if run is None:
                return None
            report = self._artifact(run.info.run_id, REPORT_ARTIFACT)
        out = _summary(run)
        out["id"] = report.get("run", {}).get("id", out["id"])
        out["metrics"] = report.get("metrics") or {}
        out["report"] = report
        out["config"] = {}
        return out

    def require_run(self, run_id: str) -> dict[str, Any]:
        """get_run, or a StoreError naming the run and the server."""
        found = self.get_run(run_id)
        if found is None:
            raise StoreError(f"{self.where}: no run {run_id!r} (see `profiler history`)")
        return found

    def list_runs(self, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Runs newest first, as Store.list_runs gives them (metrics as MLflow holds them)."""
        filters = [f"tags.model = {_quoted(model)}"] if model is not None else []
        with self._guard("read the run history"):
            runs = self._search(filters, limit or 1000)
        return [_summary(run) for run in runs]

    def evidence(self, run_id: str) -> Evidence:
        """The run's labels, predictions and measured latency histograms (empty when it logged none)."""
        with self._guard(f"read the evidence of run {run_id!r}"):
            run = self._find(run_id)
            if run is None:
                raise StoreError(f"{self.where}: no run {run_id!r} (see `profiler history`)")
            names = {a.path for a in self._client.list_artifacts(run.info.run_id)}
            if EVIDENCE_ARTIFACT not in names:
                return Evidence([], [], [])
            doc = self._artifact(run.info.run_id, EVIDENCE_ARTIFACT)
        return Evidence(doc["labels"], doc["predictions"],
                        [StageLatency(h["stage"], h["offered_rps"], h["encoded"]) for h in doc["latency"]])


def _summary(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    started = tags.get("profiler.started_at") or (
        datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds")
        if run.info.start_time else None)
    finished = (datetime.fromtimestamp(run.info.end_time / 1000, UTC).isoformat(timespec="seconds")
                if run.info.end_time else None)
    return {"id": tags.get("profiler.run_id", run.info.run_id), "started_at": started, "finished_at": finished,
            "model": tags.get("model", ""), "model_version": tags.get("model_version") or None,
            "holdout_sha256": tags.get("holdout_sha256"), "run_status": tags.get("run_status", "completed"),
            "verdict": tags.get("verdict", ""), "predecessor_id": tags.get("profiler.predecessor") or None,
            "metrics": dict(run.data.metrics), "mlflow_run_id": run.info.run_id}
