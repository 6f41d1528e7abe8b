"""Experiment tracking: each run's parameters, metrics and report logged to MLflow. I/O shell.

Optional: needs the `mlflow` extra (`pip install 'model-profiler[mlflow]'`, the mlflow-skinny client).
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from typing import Any

from profiler.config import Config
from profiler.core.errors import ConfigError
from profiler.core.redact import redact, redact_text, redact_url

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_PARAM_CHARS = 500


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


def log_run(report: dict[str, Any], config: Config) -> dict[str, Any]:
    """Log one run to the configured MLflow tracking store; returns {'mlflow_run_id'} or {'error'}."""
    assert config.tracking is not None
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        return {"error": "MLflow is not installed; pip install 'model-profiler[mlflow]'"}
    uri = config.tracking.mlflow_uri
    shown = redact_url(uri)  # what the report keeps: the URI may carry user:password or a token
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(config.tracking.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(config.tracking.experiment))
        run = report["run"]
        target = report["target"]
        tags = {"profiler.run_id": run["id"], "model": target["model"], "model_version": str(target["version"]),
                "holdout_sha256": str(report["dataset"]["sha256"]), "verdict": report["verdict"]["status"]}
        created = client.create_run(experiment_id, run_name=run["id"], tags=tags)
        mlflow_id = created.info.run_id
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
        client.log_dict(mlflow_id, report, "report.json")
        client.set_terminated(mlflow_id, "FINISHED")
    except (MlflowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"uri": shown, "error": f"MLflow at {shown}: {redact_text(first)[:300]}"}
    return {"uri": shown, "mlflow_run_id": mlflow_id, "experiment_id": experiment_id}
