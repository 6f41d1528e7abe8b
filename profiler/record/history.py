"""The run's place in its history: find the predecessor, judge against it, record the run. Wiring.

Before the load: `find_baseline` opens the store and picks the predecessor (the run named in
baseline.run, or the newest passing run of the same model on the same hold-out set), so a bad
baseline fails before any load is sent. After the load: `assess` judges the report against it,
`record` saves the run and logs it to MLflow when configured.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from profiler.config import Config
from profiler.core.errors import ConfigError, StoreError
from profiler.judge.comparison import HEADLINE, compare, render, summarise
from profiler.judge.requirements import Demand, Node, plan
from profiler.judge.significance import Baseline, Evidence, PairedTests, StageLatency
from profiler.judge.verdict import Predecessor, Significance, Verdict, judge
from profiler.measure.accuracy import label_key
from profiler.record.store import RunRecord, StageHistogram, Store
from profiler.record.tracking import check_available, log_run
from profiler.state import RunState


def find_baseline(config: Config, holdout_sha256: str, run_id: str) -> Baseline:
    """The run to compare with. StoreError for a broken history, ConfigError for an unusable baseline.run."""
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
    """A stored run's labels, predictions and measured latency histograms."""
    labels, predictions = store.predictions(run_id)
    latency = [StageLatency(h.stage, h.offered_rps, h.encoded) for h in store.histograms(run_id)
               if h.kind == "latency" and not h.warmup]
    return Evidence(labels, predictions, latency)


def candidate_evidence(state: RunState) -> Evidence:
    """The running candidate's labels, predictions and measured latency histograms."""
    samples = state.dataset.samples if state.dataset is not None else []
    predictions: list[str | None] = (list(state.predictions.reference) if state.predictions is not None
                                     else [None] * len(samples))
    latency = [StageLatency(r.stage.name, r.stage.rate_rps, r.latency.encode().decode("ascii"))
               for r in state.recorders if not r.stage.warmup]
    return Evidence([label_key(s.label) for s in samples], predictions, latency)


def requirements_section(config: Config, report: dict[str, Any]) -> dict[str, Any] | None:
    """The capacity arithmetic for the report, when a requirements or node section is configured."""
    if config.requirements is None and config.node is None:
        return None
    demand = None
    if config.requirements is not None:
        r = config.requirements
        demand = Demand(r.requests_per_day, r.peak_rps, r.peak_factor, r.latency_ms, r.percentile, r.utilisation,
                        r.min_replicas, r.replica_memory_bytes)
    node = None
    if config.node is not None:
        n = config.node
        node = Node(n.allocatable_memory_bytes, n.allocatable_cpu_cores, n.price_per_hour, n.currency)
    return plan(report, demand, node, config.load.batch_size)


def assess(state: RunState, report: dict[str, Any], baseline: Baseline | None) -> tuple[Verdict, dict[str, Any] | None]:
    """The verdict of the configured gates against the predecessor, and the report's predecessor section."""
    config = state.config
    baseline = baseline or Baseline()
    predecessor = baseline.predecessor
    significance = None
    if predecessor is not None and baseline.evidence is not None:
        tests = PairedTests(candidate_evidence(state), baseline.evidence)

        @cache
        def significance(metric: str, alpha: float = 0.05) -> Significance | str | None:
            return tests.test(metric, alpha)

    verdict = judge(report, [g.to_gate() for g in config.gates], predecessor, significance,
                    first_run_blocks=config.baseline.required)
    if predecessor is None:
        return verdict, None
    names = [*HEADLINE, *(g.metric for g in config.gates if g.metric not in HEADLINE)]
    rows = compare(predecessor.metrics, report["metrics"], significance, names)
    section = {"id": predecessor.run_id, "explicit": predecessor.explicit, "summary": summarise(rows),
               "comparison": [row.as_dict() for row in rows]}
    return verdict, section


def record(state: RunState, report: dict[str, Any]) -> None:
    """Save the run to the history and log it to MLflow; failures are noted in the report, never raised.

    The measurements are worth more than the history entry: a locked or broken history file must not
    throw away a finished run, so the report says what was not saved and why.
    """
    config = state.config
    predecessor = (report.get("predecessor") or {}).get("id")
    if config.history.enabled and config.history.path is not None:
        report["history"] = {"path": str(config.history.path), "saved": False, "error": None,
                             "predecessor_id": predecessor}
        try:
            with Store(config.history.path, timeout_s=config.history.lock_timeout_s) as store:
                store.save_run(run_record(state, report, predecessor))
            report["history"]["saved"] = True
        except StoreError as exc:
            report["history"]["error"] = str(exc)
    if config.tracking is not None:
        report["tracking"] = log_run(report, config)


def run_record(state: RunState, report: dict[str, Any], predecessor: str | None) -> RunRecord:
    """What the store keeps of a run: config (secrets out), report, histograms and per-sample predictions."""
    histograms = []
    for recorder in state.recorders:
        stage = recorder.stage
        for kind, histogram in (("latency", recorder.latency), ("service", recorder.service)):
            histograms.append(StageHistogram(stage.name, kind, stage.rate_rps, stage.warmup,
                                             histogram.encode().decode("ascii")))
    samples = state.dataset.samples if state.dataset is not None else []
    reference = state.predictions.reference if state.predictions is not None else [None] * len(samples)
    predictions: list[tuple[int, str | None, str | None, str | None]] = [
        (i, None if s.id is None else str(s.id), label_key(s.label), p)
                   for i, (s, p) in enumerate(zip(samples, reference, strict=True))]
    return RunRecord(state.run_id, report, state.config.model_dump(mode="json"), histograms, predictions,
                     predecessor)


def _short(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def history_table(runs: list[dict[str, Any]]) -> str:
    """`profiler history`: one line per run, newest first."""
    if not runs:
        return "no runs recorded yet\n"
    header = ["run", "started", "model", "version", "hold-out", "verdict", "accuracy", "f1_macro", "p99 ms",
              "max rps", "predecessor"]
    body = []
    for run in runs:
        m = run["metrics"]
        body.append([run["id"], str(run["started_at"] or "-"), run["model"], str(run["model_version"] or "-"),
                     str(run["holdout_sha256"] or "-")[:12], run["verdict"].upper()
                     + ("" if run["run_status"] == "completed" else f" ({run['run_status']})"),
                     _short(m.get("accuracy"), "{:.4f}"), _short(m.get("f1_macro"), "{:.4f}"),
                     _short(m.get("latency_p99_ms"), "{:.2f}"), _short(m.get("max_sustained_rps"), "{:g}"),
                     run["predecessor_id"] or "-"])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, ["-" * w for w in widths], *body]]
    return "\n".join(lines) + "\n"


def compare_runs(store: Store, a_id: str, b_id: str, resamples: int = 2000) -> str:
    """`profiler compare A B`: every metric of both runs, B minus A, better or worse, and significance.

    ConfigError when the runs used different hold-out sets: they are never compared.
    """
    a, b = store.require_run(a_id), store.require_run(b_id)
    if a["holdout_sha256"] != b["holdout_sha256"]:
        raise ConfigError(f"runs {a_id} and {b_id} used different hold-out sets (sha256 "
                          f"{str(a['holdout_sha256'])[:12]} vs {str(b['holdout_sha256'])[:12]}); refusing to compare")
    tests = PairedTests(load_evidence(store, b_id), load_evidence(store, a_id), resamples)

    @cache
    def significance(metric: str) -> Significance | str | None:
        return tests.test(metric, 0.05)

    rows = compare(a["metrics"], b["metrics"], significance)
    lines = [f"A {a_id}  {a['model']} {a['model_version'] or ''}  verdict {a['verdict']}",
             f"B {b_id}  {b['model']} {b['model_version'] or ''}  verdict {b['verdict']}",
             f"hold-out sha256 {str(a['holdout_sha256'])[:12]}; delta = B - A; significance at 95% (paired where "
             "possible)", ""]
    lines += render(rows, "A", "B")
    lines += ["", f"B vs A: {summarise(rows)}"]
    return "\n".join(lines) + "\n"
