"""Command line: run, serve, demo, history, compare, report and the example model. Wiring and I/O only.

Exit codes (one rule, judge.verdict.exit_code_for): 0 pass, 1 fail (a required check failed, and nothing
else), 2 inconclusive or aborted, 3 could not run or could not finish its job (bad config or hold-out file,
target never ready, a report file it cannot write, ...). User errors are one line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from profiler import __version__
from profiler.app.demo import run_demo
from profiler.app.run import run_once
from profiler.app.server import serve
from profiler.config import HISTORY_FILE, Config, PartConfig, load_config, parse_start_at
from profiler.core import aio
from profiler.core.errors import ProfilerError, ReportError, error_line
from profiler.core.redact import redact_text
from profiler.examples.holdout import write_holdout
from profiler.examples.server import main as server_main
from profiler.judge.catalogue import flatten_metrics
from profiler.judge.verdict import EXIT_ERROR, EXIT_PASS, Gate, exit_code_for, judge
from profiler.record.backend import open_for_command
from profiler.record.cioutput import CiOutputs
from profiler.record.compare import compare_runs, comparison_json
from profiler.record.merge import merge_reports
from profiler.record.page import history_lookup, write_html
from profiler.record.recent_runs import StoreRuns
from profiler.record.render import comparison_text, history_table, render_text
from profiler.record.report import write_json
from profiler.schedule import planned_length_s, stage_starts_s

PART_WAIT_MARGIN_S = 300.0
"""Part 0 waits for the other parts' reports until the planned end of the load plus this (their drain, a
report write, a slow pod start)."""
PART_POLL_S = 0.5
"""How often part 0 looks for the other parts' reports."""


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error line: one line, `profiler: error: ...`, exit 3."""

    def error(self, message: str) -> NoReturn:
        """A mistake on the command line: one line naming it and where the usage is, exit 3."""
        print(f"profiler: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def _port(text: str) -> int:
    """A TCP port for --port: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


def _positive(text: str) -> int:
    """A count for --limit: 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _part(text: str) -> tuple[int, int]:
    """K/N for --part: part K (0 to N-1) of N."""
    index, slash, count = text.partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not K/N (e.g. 0/3)")
    if not 0 <= int(index) < int(count):
        raise argparse.ArgumentTypeError(f"part {int(index)} of {int(count)}: K runs from 0 to N-1")
    return int(index), int(count)


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their flags."""
    parser = _Parser(prog="profiler", description="Profile a served model and decide whether to ship it.")
    parser.add_argument("--version", action="version", version=f"profiler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a profile once, print the summary, exit with the verdict")
    run.add_argument("--config", "-c", required=True, type=Path, help="the profile (YAML)")
    run.add_argument("--report", type=Path, help="where to write the JSON report (overrides report.path)")
    run.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")
    run.add_argument("--progress", action="store_true",
                     help="log each phase on stderr as the run enters it (loading dataset, waiting for target, ...)")
    run.add_argument("--baseline", metavar="RUN", help="compare with this run: an id in the history (or MLflow), "
                     "or a report file (overrides baseline.run)")
    run.add_argument("--history", type=Path, metavar="PATH", help="the run history file (overrides history.path)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="override a profile field, validated like the file: load.stages.0.rate_rps=200")
    run.add_argument("--junit", type=Path, metavar="PATH", help="write the checks as JUnit XML (one test case each)")
    run.add_argument("--summary-md", type=Path, metavar="PATH",
                     help="write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when that is set)")
    run.add_argument("--part", type=_part, metavar="K/N",
                     help="send share K (0 to N-1) of every stage's timetable, beside N-1 other processes or pods "
                          "(default: JOB_COMPLETION_INDEX of PROFILER_PARTS in an Indexed Job); part 0 then waits "
                          "for the others' reports and merges them into the run's one report and verdict")
    run.add_argument("--start-at", metavar="WHEN", help="when the first stage starts, Unix seconds or ISO-8601 "
                     "with a zone (overrides load.start_at; default PROFILER_START_AT)")
    run.add_argument("--merge-wait-s", type=float, default=None, metavar="S",
                     help="how long part 0 waits for the other parts' reports (default: the planned load + 300 s)")

    serve = sub.add_parser("serve", help="sidecar mode: run the profile and serve /report, /metrics, /healthz")
    serve.add_argument("--config", "-c", required=True, type=Path)
    serve.add_argument("--port", type=_port, help="overrides server.port")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--once", action="store_true", help="exit with the verdict when the run ends")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override a profile field, validated like the file")

    demo = sub.add_parser("demo", help="start the bundled example model and profile it")
    demo.add_argument("--dir", type=Path, default=Path("profiler-demo"), help="where to write config, data, report")
    demo.add_argument("--variant", choices=["good", "weak"], default="good", help="'weak' is a worse model")
    demo.add_argument("--serve", action="store_true", help="run in sidecar mode and keep serving /report")
    demo.add_argument("--port", type=_port, default=9090, help="the sidecar's port with --serve")
    demo.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                      help="extra flag for the example server, e.g. --server-arg=--delay-ms=20")
    demo.add_argument("--protocol", default="v2-rest",
                      choices=["v2-rest", "v2-grpc", "v1-rest", "v1-rest-columnar", "json", "openai-chat",
                               "openai-completions"],
                      help="the wire protocol the demo profile speaks to the example model")

    history = sub.add_parser("history", help="list the recorded runs, newest first")
    history.add_argument("--db", type=Path, help="the history file (default: the one --config names, else "
                         "./profiler-history.sqlite)")
    history.add_argument("--config", "-c", type=Path, help="take the history file from this profile")
    history.add_argument("--model", help="only runs of this model")
    history.add_argument("--limit", type=_positive, default=50)
    history.add_argument("--json", action="store_true", help="the runs as a JSON array")
    compare = sub.add_parser("compare", help="every metric of two runs side by side, with deltas and significance")
    compare.add_argument("a", metavar="A", help="the baseline run id")
    compare.add_argument("b", metavar="B", help="the candidate run id")
    compare.add_argument("--db", type=Path)
    compare.add_argument("--config", "-c", type=Path)
    compare.add_argument("--json", action="store_true", help="the comparison as a JSON document")

    page = sub.add_parser("report", help="draw a report file or a stored run as one self-contained HTML page")
    page.add_argument("source", metavar="REPORT.json|RUN_ID", help="a report written by `profiler run`, or a run id "
                      "of the history")
    page.add_argument("--html", type=Path, required=True, metavar="OUT", help="where to write the page")
    page.add_argument("--db", type=Path, help="the history file (default: the one --config names, else the "
                      "profiler-history.sqlite beside the report file, else ./profiler-history.sqlite)")
    page.add_argument("--config", "-c", type=Path, help="take the history file from this profile")

    merge = sub.add_parser("merge", help="merge the reports of generators that ran side by side into one")
    merge.add_argument("files", nargs="+", type=Path, help="reports written by `profiler run` (JSON)")
    merge.add_argument("--out", type=Path, required=True, help="where to write the merged report")
    merge.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")

    sub.add_parser("example-server", help="the bundled example model server (see --help)", add_help=False)
    holdout = sub.add_parser("example-holdout", help="write the example model's labelled hold-out JSONL")
    holdout.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["example-server"]:
        server_main(args_list[1:])
        return
    args = build_parser().parse_args(args_list)
    try:
        code = _dispatch(args)
    except ProfilerError as exc:
        print(error_line(_one_line(str(exc))), file=sys.stderr)
        code = EXIT_ERROR
    except OSError as exc:  # the machine refused: a port in use, a full disk, a folder that cannot be written
        where = f"{exc.filename}: " if exc.filename else ""
        print(error_line(where + _one_line(exc.strerror or str(exc))), file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        print("profiler: interrupted", file=sys.stderr)
        code = EXIT_ERROR
    # Everything alive goes to the collector's permanent generation: the interpreter's exit then frees
    # module by module instead of walking every object of NumPy, SciPy and scikit-learn for cycles (0.6 to
    # 1.4 s on a loaded 2-core machine, 0.1 s frozen). A stopped run has one second past its grace period
    # to be gone before the pod's SIGKILL; the operating system frees the memory either way.
    gc.freeze()
    sys.exit(code)


def _one_line(message: str) -> str:
    """An error message as one line with every URL in it redacted (a last guard: messages are made so)."""
    return redact_text(" ".join(message.split()))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        config = load_config(args.config, args.overrides)
        if args.report:
            config = config.model_copy(update={"report": config.report.model_copy(update={"path": args.report})})
        if args.baseline:
            config = config.model_copy(update={"baseline": config.baseline.model_copy(update={"run": args.baseline})})
        if args.history:
            config = config.model_copy(update={"history": config.history.model_copy(update={"path": args.history})})
        part = args.part or parts_from_env(os.environ)
        start_at = args.start_at or os.environ.get("PROFILER_START_AT") or None
        if part is None or part[1] == 1:
            return run_once(with_start(config, start_at), quiet=args.quiet, progress=args.progress,
                            ci=_ci_outputs(args))
        return run_part(with_part(config, part, start_at), config.report.path, quiet=args.quiet,
                        progress=args.progress, wait_s=args.merge_wait_s)
    if args.command in ("history", "compare"):
        return _history_command(args)
    if args.command == "serve":
        config = load_config(args.config, args.overrides)
        overrides = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
        if overrides:
            config = config.model_copy(update={"server": config.server.model_copy(update=overrides)})
        return aio.run(serve(config, once=args.once))
    if args.command == "demo":
        return run_demo(args.dir, variant=args.variant, serve_port=args.port if args.serve else None,
                        server_args=args.server_arg, protocol=args.protocol)
    if args.command == "merge":
        return merge_files(args.files, args.out, quiet=args.quiet)
    if args.command == "report":
        return report_page(args.source, args.html, args.db, args.config)
    if args.command == "example-holdout":
        count = write_holdout(args.out)
        print(f"wrote {count} labelled samples to {args.out}")
        return EXIT_PASS
    raise AssertionError(args.command)


def parts_from_env(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """The part of an Indexed Job's pod: JOB_COMPLETION_INDEX (set by Kubernetes) of PROFILER_PARTS (the Job's
    completions, copied into the pod by the manifests); None outside one."""
    index = environ.get("JOB_COMPLETION_INDEX")
    if index is None:
        return None
    count = environ.get("PROFILER_PARTS")
    if count is None:
        raise ProfilerError("JOB_COMPLETION_INDEX is set but PROFILER_PARTS is not: set it to the Job's completions "
                            "(deploy/k8s/parts does), or pass --part K/N")
    try:
        return _part(f"{index}/{count}")
    except argparse.ArgumentTypeError as exc:
        raise ProfilerError(f"JOB_COMPLETION_INDEX/PROFILER_PARTS: {exc}") from None


def with_start(config: Config, start_at: str | None) -> Config:
    """The profile with its first stage's start instant overridden (--start-at, PROFILER_START_AT)."""
    if start_at is None:
        return config
    try:
        instant = parse_start_at(start_at)
    except ValueError as exc:
        raise ProfilerError(f"start time (--start-at or PROFILER_START_AT): {exc}") from None
    return config.model_copy(update={"load": config.load.model_copy(update={"start_at": instant})})


def with_part(config: Config, part: tuple[int, int], start_at: str | None) -> Config:
    """The profile as part K of N runs it: its share of the load, a report file of its own beside the run's, and
    no history or MLflow run of its own (the merged report is the run). A shared start instant is required."""
    config = with_start(config, start_at)
    index, count = part
    if config.load.start_at is None:
        raise ProfilerError(f"part {index}/{count}: the parts need one shared start instant: set load.start_at in "
                            "the profile, PROFILER_START_AT, or --start-at (Unix seconds or ISO-8601 with a zone)")
    if config.load.search is not None:
        raise ProfilerError(f"part {index}/{count}: load.search picks each next rate from what it measured, so it "
                            "cannot be split into parts: give load.stages or load.ramp")
    load = config.load.model_copy(update={"part": PartConfig(index=index, count=count)})
    report = config.report.model_copy(update={"path": part_report_path(config.report.path, index, count)})
    history = config.history.model_copy(update={"enabled": False})
    return config.model_copy(update={"load": load, "report": report, "history": history, "tracking": None})


def part_report_path(path: Path, index: int, count: int) -> Path:
    """Where part `index` of `count` writes its report: beside the run's report, e.g. report.part-1-of-3.json."""
    return path.with_name(f"{path.stem}.part-{index}-of-{count}{path.suffix or '.json'}")


def run_part(config: Config, run_report: Path, quiet: bool, progress: bool, wait_s: float | None) -> int:
    """Run one part; part 0 then waits for every part's report and merges them into `run_report`.

    Parts other than 0 exit 0 when they wrote a report (the verdict is the merged run's: an aborted part makes
    it partial), 3 when they could not run; part 0 exits with the merged verdict (3 when a part's report never
    came).
    """
    part = config.load.part
    if part is None or config.load.start_at is None:
        raise AssertionError("run_part takes a profile made by with_part")
    code = run_once(config, quiet=quiet, progress=progress)
    if part.index != 0:
        return code if code == EXIT_ERROR else EXIT_PASS
    if code == EXIT_ERROR:
        return code
    if wait_s is None:
        stages = config.load.planned_stages()
        ends_at = stage_starts_s(stages, config.load.start_at)[-1] + planned_length_s(stages[-1])
        wait_s = max(0.0, ends_at - time.time()) + PART_WAIT_MARGIN_S
    files = [part_report_path(run_report, k, part.count) for k in range(part.count)]
    wait_for_files(files, wait_s)
    return merge_files(files, run_report, quiet=quiet)


def wait_for_files(files: list[Path], wait_s: float) -> None:
    """Block until every file exists (each part writes its report atomically), or raise naming those missing."""
    deadline = time.monotonic() + wait_s
    while True:
        missing = [f for f in files if not f.exists()]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ProfilerError(f"waited {wait_s:g} s for the other parts' reports; missing: "
                                f"{', '.join(map(str, missing))} (is the report folder shared by every part?)")
        time.sleep(PART_POLL_S)


def merge_files(files: list[Path], out: Path, quiet: bool = False) -> int:
    """Merge reports exactly (HDR histograms added), re-judge the gates, write and print the result."""
    reports = []
    for file in files:
        try:
            reports.append(json.loads(file.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ProfilerError(f"{file}: cannot read report: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ProfilerError(f"{file}: not a JSON report: {exc}") from None
    try:
        report = merge_reports(reports)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfilerError(f"cannot merge {', '.join(map(str, files))}: {exc}") from None
    report["metrics"] = flatten_metrics(report)
    # Absolute bounds only: a merged report has no predecessor to hold change gates against.
    gates = [Gate(g["metric"], g.get("min"), g.get("max"), g.get("required", True)) for g in report.get("gates", [])
             if g.get("min") is not None or g.get("max") is not None]
    report["verdict"] = judge(report, gates).as_dict()
    problems: list[str] = []
    try:
        written = f"into {write_json(report, out)}"
    except ReportError as exc:
        problems.append(str(exc))
        written = "(NOT WRITTEN, see the error below)"
    if quiet:
        print(f"verdict {report['verdict']['status'].upper()}: {report['verdict']['reason']}")
    else:
        print(render_text(report), end="")
    print(f"merged   {len(files)} reports {written}", flush=True)
    for problem in problems:
        print(error_line(problem), file=sys.stderr)
    return exit_code_for(report, problems)


def report_page(source: str, out: Path, db: Path | None, config_path: Path | None) -> int:
    """`profiler report`: the HTML page of a report file or of a stored run (with its predecessor's curves when
    the history holds the predecessor). Prints where the page went."""
    file = Path(source)
    history = db if db is not None else (load_config(config_path).history.path if config_path is not None else None)
    if file.is_file():
        report = _read_report(file)
        history = history or file.parent / HISTORY_FILE
    else:
        history = history or Path(HISTORY_FILE)
        if not history.is_file():
            raise ProfilerError(f"{source}: no such report file, and no run history at {history} to look the run "
                                "id up in (give --db or --config)")
        found = StoreRuns(history).get_run(source)
        if found is None:
            raise ProfilerError(f"{source}: no such report file, and no run with that id in {history}")
        report = found
    lookup = history_lookup(history) if history.is_file() else None
    written = write_html(report, out, lookup)
    print(f"html     {written}")
    return EXIT_PASS


def _read_report(file: Path) -> dict[str, Any]:
    """A report file as written by `profiler run`; ProfilerError naming the file when it is none."""
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfilerError(f"{file}: cannot read report: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ProfilerError(f"{file}: not a JSON report: {exc}") from None
    if not isinstance(report, dict) or not isinstance(report.get("run"), dict) or "stages" not in report:
        raise ProfilerError(f"{file}: not a profiler report (no run or stages section)")
    return report


def _ci_outputs(args: argparse.Namespace) -> CiOutputs:
    """The JUnit file and Markdown summaries `run` writes; GitHub Actions' step summary when it is set."""
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    return CiOutputs(junit=args.junit, summaries=[args.summary_md] if args.summary_md else [],
                     appended_summaries=[Path(step_summary)] if step_summary else [])


def _history_command(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config is not None else None
    history = open_for_command(args.db, config)
    try:
        if args.command == "history":
            runs = history.list_runs(limit=args.limit, model=args.model)
            print(json.dumps(runs, indent=2, default=str) if args.json else history_table(runs).rstrip("\n"))
        else:
            comparison = compare_runs(history, args.a, args.b)
            print(json.dumps(comparison_json(comparison), indent=2, default=str) if args.json
                  else comparison_text(comparison).rstrip("\n"))
    finally:
        history.close()
    return EXIT_PASS


if __name__ == "__main__":
    main()
