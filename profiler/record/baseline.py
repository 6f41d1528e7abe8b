"""The predecessor of a run: find it in the run history and load its evidence. Store reads only.

Called before the load, so a bad baseline (unknown id, another hold-out set, a broken history file)
fails the run before any request is sent.
"""

from __future__ import annotations

from profiler.config import Config
from profiler.core.errors import ConfigError
from profiler.judge.significance import Baseline, Evidence, StageLatency
from profiler.judge.verdict import Predecessor
from profiler.record.store import Store
from profiler.record.tracking import check_available


def find_baseline(config: Config, holdout_sha256: str, run_id: str) -> Baseline:
    """The run to compare with: baseline.run, else the newest passing run of the same model on the same
    hold-out set; an empty Baseline on a first run. StoreError for a broken history, ConfigError for an
    unusable baseline.run (or tracking configured without MLflow installed: also a before-the-load check)."""
    check_available(config)
    if not config.history.enabled or config.history.path is None:
        if config.baseline.run:
            raise ConfigError(f"baseline.run {config.baseline.run!r} needs the run history (history.enabled)")
        return Baseline()
    with Store(config.history.path) as store:
        wanted = config.baseline.run
        if wanted:
            found = store.require_run(wanted)
            if found["holdout_sha256"] != holdout_sha256:
                raise ConfigError(
                    f"baseline.run {wanted!r} used another hold-out set (sha256 {str(found['holdout_sha256'])[:12]}"
                    f", this run {holdout_sha256[:12]}); runs on different hold-out sets are never compared")
        else:
            wanted = store.last_passing(config.target.model, holdout_sha256, exclude=run_id)
            if wanted is None:
                return Baseline()
            found = store.require_run(wanted)
        return Baseline(Predecessor(wanted, found["metrics"], explicit=bool(config.baseline.run)),
                        load_evidence(store, wanted))


def load_evidence(store: Store, run_id: str) -> Evidence:
    """A stored run's labels, predictions and measured (not warm-up) latency histograms."""
    labels, predictions = store.predictions(run_id)
    latency = [StageLatency(h.stage, h.offered_rps, h.encoded) for h in store.histograms(run_id)
               if h.kind == "latency" and not h.warmup]
    return Evidence(labels, predictions, latency)
