"""Text for a terminal: the report as a table (`render_text`), the run history (`history_table`) and
two stored runs side by side (`comparison_text`). Pure: documents in, text out."""

from __future__ import annotations

from typing import Any

from profiler.judge.comparison import Row, render, summarise
from profiler.judge.verdict import Significance
from profiler.record.compare import RunComparison


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _num(value: float | None, fmt: str = "{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return out


def render_text(report: dict[str, Any]) -> str:
    """Stages, accuracy, memory and the verdict, as a fixed-width table for a terminal."""
    run = report["run"]
    target = report["target"]
    lines = [
        f"profiler {report['profiler_version']}  run {run['id']}  ({run['status']}, {run['duration_s']:.1f} s)",
        f"target   {target['url']}  protocol {target['protocol']}  model {target['model']}",
        f"hold-out {report['dataset']['path']}  ({report['dataset']['samples']} samples, "
        f"sha256 {str(report['dataset']['sha256'])[:12]})",
        "",
    ]
    header = ["stage", "offered/s", "achieved/s", "sent", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
              "max ms", "lag p99", "objective"]
    rows = []
    for s in report["stages"]:
        lat = s["latency_ms"]
        objective = "warm-up" if s["warmup"] else ("ok" if s["objective"]["sustained"] else "MISSED")
        rows.append([s["name"], f"{s['offered_rps']:g}", _num(s["achieved_rps"], "{:.1f}"), str(s["sent"]),
                     str(s["errors"] + s["unsent"]), _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]),
                     _ms(lat["p999"]), _ms(lat["max"]), _ms(s["schedule_lag_ms"]["p99"]), objective])
    lines += _table(header, rows)
    capacity = report["capacity"]
    objective = report["objective"]
    bound = ""
    if capacity.get("limited_by") == "generator":
        bound = " (a lower bound: the generator, not the model, was the limit)"
    elif capacity.get("limited_by") == "schedule":
        bound = " (a lower bound: no stage broke the objective)"
    lines.append(f"highest rate within p{objective['percentile']:g} <= {objective['latency_ms']:g} ms: "
                 f"{_num(capacity['max_sustained_rps'], '{:g} rps')}{bound}")
    for s in report["stages"]:
        generator = s.get("generator") or {}
        if generator.get("limited"):
            lines.append(f"  {s['name']}: generator-limited ({'; '.join(generator.get('reasons', []))})")
    lines += render_server_views(report["stages"])
    acc = report["accuracy"]
    if acc:
        lines += ["", f"accuracy {_num(acc.get('accuracy'))}  precision(macro) {_num(acc.get('precision_macro'))}  "
                      f"recall(macro) {_num(acc.get('recall_macro'))}  F1(macro) {_num(acc.get('f1_macro'))}  "
                      f"coverage {_num(acc.get('coverage'), '{:.1%}')}  "
                      f"inconsistent {acc['consistency']['inconsistent']}/{acc['consistency']['compared']}"]
    lines += render_resources(report["resources"])
    verdict = report["verdict"]
    lines += ["", f"verdict  {verdict['status'].upper()}: {verdict['reason']}"]
    checks = verdict["checks"]
    if checks:
        rows = [[c["metric"], c["status"].upper() + ("" if c.get("required", True) else " (optional)"),
                 _num(c["value"], "{:.6g}"), c["bound"],
                 _num(c.get("predecessor"), "{:.6g}")] for c in checks]
        lines += _table(["check", "status", "value", "bound", "predecessor"], rows)
    lines += render_history(report)
    return "\n".join(lines) + "\n"


def render_server_views(stages: list[dict[str, Any]]) -> list[str]:
    """The model server's own view per stage (server_stats), beside the profiler's mean and p50.

    One line per stage: the server's mean milliseconds per request in each phase it counted (and how many it
    counted; queue and compute for Triton), then the profiler's mean latency and service time: what the
    server's own phases leave of them is time outside the server's clock (network, its front end's queue).
    """
    viewed = [s for s in stages if s.get("server")]
    if not viewed:
        return []
    lines = ["", f"the server's own view ({viewed[0]['server']['kind']}), mean ms per request:"]
    for s in viewed:
        view = s["server"]
        if view.get("problem"):
            lines.append(f"  {s['name']}: could not read it: {view['problem']}")
            continue
        phases = view.get("phases") or {}
        parts = [f"{name} {p['mean_ms']:.3f} ({p['count']})" for name, p in phases.items()]
        batch = f"; mean batch {view['mean_batch']:g}" if view.get("mean_batch") is not None else ""
        ours = view.get("profiler_mean_ms") or {}
        lines.append(f"  {s['name']}: {', '.join(parts) or 'no requests counted'}{batch}; the profiler's mean "
                     f"latency {_ms(ours.get('latency'))}, service time {_ms(ours.get('service'))}")
    return lines


def render_resources(res: dict[str, Any]) -> list[str]:
    """Memory before/peak/after with its source, CPU, the leak test and the footprint, as text lines."""
    mem, cpu, leak, fit = res["memory"], res["cpu"], res["leak"], res["footprint"]
    source = res["source"] if res.get("measured") else "not measured (see below)"
    lines = ["", f"memory   {source}",
             f"         before {_mib(mem['before_bytes'])}  peak {_mib(mem['peak_bytes'])}  steady "
             f"{_mib(mem['steady_bytes'])}  after {_mib(mem['after_bytes'])}  growth "
             f"{_num(mem['growth_pct'], '{:+.1f}%')}  limit {_mib(mem['limit_bytes'])}",
             f"cpu      {_num(cpu['cores_under_load'], '{:.2f}')} cores under load (busiest "
             f"{_num(cpu['cores_peak'], '{:.2f}')}), {_num(cpu['seconds_per_request'], '{:.2e}')} CPU s per request"]
    rate = leak.get("bytes_per_request")
    interval = ""
    if rate is not None:
        interval = (f"  {rate:,.0f} B/request [{leak['bytes_per_request_low']:,.0f}, "
                    f"{leak['bytes_per_request_high']:,.0f}]")
        if leak.get("bytes_per_hour") is not None:
            interval += f"  {_mib(leak['bytes_per_hour'])}/hour"
    lines.append(f"leak     {leak['status'].upper()}{interval}: {leak['reason']}")
    if leak.get("hours_to_limit") is not None:
        lines.append(f"         the limit is reached in {leak['hours_to_limit']:.1f} h at this load")
    lines += render_gpu(res.get("gpu"))
    if fit.get("replicas_per_node") is not None or fit.get("artifact_bytes") is not None:
        limited = fit["replicas_limited_by"] or "-"
        if fit.get("replicas_fit"):
            limited += f": {fit['replicas_fit']}"
        lines.append(f"fit      artifact {_size(fit['artifact_bytes'])}  storage per replica "
                     f"{_size(fit.get('storage_per_replica_bytes'))}  replicas per node "
                     f"{_num(fit['replicas_per_node'], '{:g}')} (limited by {limited})  "
                     f"{_num(fit['max_sustained_rps_per_node'], '{:g}')} rps per node")
    if not res.get("complete") and res.get("incomplete"):
        lines.append(f"         memory checks are inconclusive: {res['incomplete']}")
    for problem in res["problems"]:
        lines.append(f"         not measured: {problem}")
    return lines


def render_gpu(gpu: dict[str, Any] | None) -> list[str]:
    """GPU memory before/peak/steady/after with its source, utilisation and the GPU leak test, as text lines."""
    if not gpu:
        return []
    if not gpu.get("measured"):
        return [f"gpu      not measured ({gpu['source']}; see below)"]
    mem, util, leak = gpu["memory"], gpu["utilisation"], gpu["leak"]
    mig = (f"  MIG {gpu['mig_slices_per_gpu']} slices of {_size(gpu.get('mig_slice_memory_bytes'))}"
           if gpu.get("mig_slices_per_gpu") else "")
    rate = leak.get("bytes_per_request")
    growth = f"  {rate:,.0f} B/request" if rate is not None else ""
    return [f"gpu      {gpu['source']}",
            f"         before {_size(mem['before_bytes'])}  peak {_size(mem['peak_bytes'])}  steady "
            f"{_size(mem['steady_bytes'])}  after {_size(mem['after_bytes'])}  of "
            f"{_size(gpu.get('gpu_total_bytes'))} per GPU, {gpu.get('devices', 0)} device(s){mig}",
            f"         utilisation {_num(util['under_load_pct'], '{:.0f}%')} under load (busiest "
            f"{_num(util['peak_pct'], '{:.0f}%')}), {_num(util['before_pct'], '{:.0f}%')} at rest before",
            f"gpu leak {leak['status'].upper()}{growth}: {leak['reason']}"]


def _size(value: float | None) -> str:
    """Bytes in the largest binary unit (up to GiB) that keeps the number at or above 1."""
    if value is None:
        return "-"
    if abs(value) < 1024:
        return f"{value:.0f} B"
    units = ["KiB", "MiB", "GiB"]
    value /= 1024
    while abs(value) >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def render_history(report: dict[str, Any]) -> list[str]:
    """The capacity plan, the comparison with the predecessor, and where the run was recorded."""
    lines: list[str] = []
    plan = report.get("requirements")
    if plan:
        cur = plan.get("currency") or ""
        meets = {True: "meets it", False: "falls short", None: "-"}[plan["one_replica_meets"]]
        figures = [("required", _num(plan["required_rps"], "{:.3g} rps")),
                   ("one replica", f"{_num(plan['replica_rps'], '{:.3g} rps')} ({meets})"),
                   ("replicas", _num(plan["replicas_needed"], "{:g}")),
                   ("per node", _num(plan["replicas_per_node"], "{:g}")),
                   ("node capacity", _num(plan["capacity_per_node_rps"], "{:.3g} rps")),
                   ("nodes", _num(plan["nodes_needed"], "{:g}")),
                   ("cost per 1M", _num(plan["cost_per_million"], "{:.4g} " + cur))]
        lines += ["", "capacity " + "  ".join(f"{k} {v}" for k, v in figures)]
        lines += [f"         {note}" for note in plan.get("notes", [])]
    predecessor = report.get("predecessor")
    if predecessor:
        source = f" (from {predecessor['source']})" if predecessor.get("source") else ""
        lines += ["", f"compared with {predecessor['id']}{source}: {predecessor['summary']}"]
        for difference in predecessor.get("context_differences") or []:
            lines.append(f"  not comparable: {difference}")
        if predecessor.get("capacity"):
            lines.append(f"  capacity not comparable: {predecessor['capacity']}")
        rows = []
        for r in predecessor["comparison"]:
            sig = r["significance"]
            if isinstance(sig, dict):
                sig = Significance(**sig)
            rows.append(Row(r["metric"], r["predecessor"], r["candidate"], r["delta"], r["delta_pct"], r["better"],
                            sig, r.get("not_comparable")))
        lines += render(rows, "predecessor", "this run")
    history = report.get("history")
    if history:
        saved = "saved" if history.get("saved") else f"NOT SAVED: {history.get('error')}"
        lines += ["", f"history  {history['path']} ({saved})"]
    tracking = report.get("tracking")
    if tracking:
        where = tracking.get("mlflow_run_id") or f"NOT LOGGED: {tracking.get('error')}"
        lines.append(f"mlflow   {tracking.get('uri')} run {where}")
        if tracking.get("lookup_error"):
            lines.append(f"mlflow   predecessor NOT READ: {tracking['lookup_error']}")
    return lines


def history_table(runs: list[dict[str, Any]]) -> str:
    """`profiler history`: one line per run as the store lists them (newest first), or a note when empty."""
    if not runs:
        return "no runs recorded yet\n"
    header = ["run", "started", "model", "version", "hold-out", "verdict", "accuracy", "f1_macro", "p99 ms",
              "max rps", "predecessor"]
    body = [_history_row(run) for run in runs]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, ["-" * w for w in widths], *body]]
    return "\n".join(lines) + "\n"


def _history_row(run: dict[str, Any]) -> list[str]:
    """One run's cells; a run that did not complete shows its status next to the verdict."""
    m = run["metrics"]
    verdict = run["verdict"].upper() + ("" if run["run_status"] == "completed" else f" ({run['run_status']})")
    return [run["id"], str(run["started_at"] or "-"), run["model"], str(run["model_version"] or "-"),
            str(run["holdout_sha256"] or "-")[:12], verdict,
            _num(m.get("accuracy")), _num(m.get("f1_macro")), _ms(m.get("latency_p99_ms")),
            _num(m.get("max_sustained_rps"), "{:g}"), run["predecessor_id"] or "-"]


def comparison_text(comparison: RunComparison) -> str:
    """`profiler compare A B`: both runs' headers, every metric (delta = B - A) and a one-line summary."""
    a, b = comparison.a, comparison.b
    lines = [f"A {a['id']}  {a['model']} {a['model_version'] or ''}  verdict {a['verdict']}",
             f"B {b['id']}  {b['model']} {b['model_version'] or ''}  verdict {b['verdict']}",
             f"hold-out sha256 {str(a['holdout_sha256'])[:12]}; delta = B - A; significance at 95% (paired where "
             "possible)", ""]
    # The contexts first: a difference there decides which figures below mean anything.
    differing = [row for row in comparison.context if row[3]]
    lines += _table(["context", "A", "B", ""], [[f, va, vb, "DIFFERS" if d else ""] for f, va, vb, d in
                                                  [*differing, *(r for r in comparison.context if not r[3])]])
    if comparison.differences:
        lines.append(f"not comparable on performance figures: {'; '.join(comparison.differences)}")
    if comparison.capacity:
        lines.append(f"capacity not comparable: {comparison.capacity}")
    lines.append("")
    lines += render(comparison.rows, "A", "B")
    lines += ["", f"B vs A: {summarise(comparison.rows)}"]
    return "\n".join(lines) + "\n"
