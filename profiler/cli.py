"""Command line: run, serve, demo, history, compare and the example model. Wiring and I/O only.

Exit codes: 0 pass, 1 fail (a gate failed), 2 inconclusive, 3 could not run (bad config or
hold-out file, target never ready, ...). User errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from profiler import __version__, aio
from profiler.errors import ProfilerError

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_INCONCLUSIVE = 2
EXIT_ERROR = 3
_CODES = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}


def exit_code_for(report: dict[str, Any]) -> int:
    """The process exit code that carries a report's verdict to CI."""
    return _CODES.get(report["verdict"]["status"], EXIT_ERROR)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their flags."""
    parser = _Parser(prog="profiler", description="Profile a served model and decide whether to ship it.")
    parser.add_argument("--version", action="version", version=f"profiler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a profile once, print the summary, exit with the verdict")
    run.add_argument("--config", "-c", required=True, type=Path, help="the profile (YAML)")
    run.add_argument("--report", type=Path, help="where to write the JSON report (overrides report.path)")
    run.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")
    run.add_argument("--baseline", metavar="RUN_ID", help="compare with this run (overrides baseline.run)")
    run.add_argument("--history", type=Path, metavar="PATH", help="the run history file (overrides history.path)")

    serve = sub.add_parser("serve", help="sidecar mode: run the profile and serve /report, /metrics, /healthz")
    serve.add_argument("--config", "-c", required=True, type=Path)
    serve.add_argument("--port", type=int, help="overrides server.port")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--once", action="store_true", help="exit with the verdict when the run ends")

    demo = sub.add_parser("demo", help="start the bundled example model and profile it")
    demo.add_argument("--dir", type=Path, default=Path("profiler-demo"), help="where to write config, data, report")
    demo.add_argument("--variant", choices=["good", "weak"], default="good", help="'weak' is a worse model")
    demo.add_argument("--serve", action="store_true", help="run in sidecar mode and keep serving /report")
    demo.add_argument("--port", type=int, default=9090, help="the sidecar's port with --serve")
    demo.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                      help="extra flag for the example server, e.g. --server-arg=--delay-ms=20")
    demo.add_argument("--protocol", default="v2-rest",
                      choices=["v2-rest", "v2-grpc", "v1-rest", "v1-rest-columnar", "json"],
                      help="the wire protocol the demo profile speaks to the example model")

    history = sub.add_parser("history", help="list the recorded runs, newest first")
    history.add_argument("--db", type=Path, help="the history file (default: the one --config names, else "
                         "./profiler-history.sqlite)")
    history.add_argument("--config", "-c", type=Path, help="take the history file from this profile")
    history.add_argument("--model", help="only runs of this model")
    history.add_argument("--limit", type=int, default=50)
    compare = sub.add_parser("compare", help="every metric of two runs side by side, with deltas and significance")
    compare.add_argument("a", metavar="A", help="the baseline run id")
    compare.add_argument("b", metavar="B", help="the candidate run id")
    compare.add_argument("--db", type=Path)
    compare.add_argument("--config", "-c", type=Path)

    sub.add_parser("example-server", help="the bundled example model server (see --help)", add_help=False)
    holdout = sub.add_parser("example-holdout", help="write the example model's labelled hold-out JSONL")
    holdout.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["example-server"]:
        from profiler.examples.server import main as server_main

        server_main(args_list[1:])
        return
    args = build_parser().parse_args(args_list)
    try:
        code = _dispatch(args)
    except ProfilerError as exc:
        print(f"profiler: error: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        print("profiler: interrupted", file=sys.stderr)
        code = EXIT_ERROR
    sys.exit(code)


def _dispatch(args: argparse.Namespace) -> int:
    from profiler.config import load_config

    if args.command == "run":
        config = load_config(args.config)
        if args.report:
            config = config.model_copy(update={"report": config.report.model_copy(update={"path": args.report})})
        if args.baseline:
            config = config.model_copy(update={"baseline": config.baseline.model_copy(update={"run": args.baseline})})
        if args.history:
            config = config.model_copy(update={"history": config.history.model_copy(update={"path": args.history})})
        return run_once(config, quiet=args.quiet)
    if args.command in ("history", "compare"):
        return _history_command(args)
    if args.command == "serve":
        config = load_config(args.config)
        overrides = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
        if overrides:
            config = config.model_copy(update={"server": config.server.model_copy(update=overrides)})
        from profiler.server import serve

        return aio.run(serve(config, once=args.once))
    if args.command == "demo":
        from profiler.demo import run_demo

        return run_demo(args.dir, variant=args.variant, serve_port=args.port if args.serve else None,
                        server_args=args.server_arg, protocol=args.protocol)
    if args.command == "example-holdout":
        from profiler.examples.holdout import write_holdout

        count = write_holdout(args.out)
        print(f"wrote {count} labelled samples to {args.out}")
        return EXIT_PASS
    raise AssertionError(args.command)


def _history_command(args: argparse.Namespace) -> int:
    from profiler.config import HISTORY_FILE, load_config
    from profiler.history import compare_runs, history_table
    from profiler.store import Store

    path = args.db
    if path is None and args.config is not None:
        path = load_config(args.config).history.path
    with Store(path or Path(HISTORY_FILE), create=False) as store:
        if args.command == "history":
            print(history_table(store.list_runs(limit=args.limit, model=args.model)), end="")
        else:
            print(compare_runs(store, args.a, args.b), end="")
    return EXIT_PASS


def run_once(config: Any, quiet: bool = False) -> int:
    """Execute the profile, write the report, print the table; the exit code carries the verdict."""
    from profiler.report import render_text, write_json
    from profiler.run import new_state

    state = new_state(config)
    report = aio.run(_execute_until_signal(state))
    path = write_json(report, config.report.path)
    if quiet:
        print(f"verdict {report['verdict']['status'].upper()}: {report['verdict']['reason']}")
    else:
        print(render_text(report), end="")
    print(f"report   {path}")
    return exit_code_for(report)


async def _execute_until_signal(state: Any) -> dict[str, Any]:
    """Run the profile; SIGINT/SIGTERM stop the load and the report records the run as aborted."""
    import asyncio
    import signal

    from profiler.run import execute

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await execute(state, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


if __name__ == "__main__":
    main()
