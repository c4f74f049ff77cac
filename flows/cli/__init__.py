"""The ``avff`` command: sample, ingest, train, evaluate, predict, cv, ablate, stack, web.

ingest, train, evaluate, cv and ablate build their flow's typed config from the flags and call
the flow (so such a CLI run is a Prefect flow run too: against PREFECT_API_URL when set, else a
temporary local server), after checking the inputs that cannot work (flows/preflight.py).
predict, sample, stack and web run in this process, with no flow run.

The CLI sits above the flows: each command is a module of this package holding
``COMMANDS = {name: (add_parser, run)}`` (ingest, sample, stack, train, predict, web, evaluate,
experiments for cv and ablate), with the flags generated from the flow's config by
:mod:`flows.cli.fields`; :func:`build_parser` merges them. No flow imports this package
(tests/test_layering.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from flows.cli.console import flow_console, one_line

# commands whose checks run inside their own function, before the flow: Prefect (seconds to import) must wait
# for them, so they call flow_console() once their preflight passed; predict, sample, stack and web run no flow
CONSOLE_AFTER_PREFLIGHT = ("ingest", "evaluate", "predict", "sample", "stack", "web")

DESCRIPTION = "Raw DFDC videos in, a trained audio-visual deepfake detector (AVFF) out."
EPILOG = """typical order:
  avff ingest --data VIDEOS --out SHARDS     videos -> shards (refused videos: SHARDS/quarantine.parquet)
  avff train --data SHARDS --out RUN         train, track in MLflow, register if it beats the prior
  avff evaluate --data VIDEOS                score the registered champion on other videos
  avff predict a.mp4 b.mp4                   FAKE / REAL per video
  avff web                                   the same, for a video dropped on a page (started by avff stack up)

ingest, train, evaluate, cv and ablate are Prefect flow runs: the Prefect UI shows them when
PREFECT_API_URL is set (avff stack up), MLflow at $MLFLOW_TRACKING_URI (default
http://127.0.0.1:5000). predict, sample, stack and web start no flow run.
`avff COMMAND --help` lists a command's options and defaults."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avff")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``avff`` parser and {command: (add_parser, run)}."""
    parser = argparse.ArgumentParser(prog="avff", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)
    from flows.cli import evaluate, experiments, ingest, predict, sample, stack, train, web

    commands = {
        **ingest.COMMANDS,
        **sample.COMMANDS,
        **stack.COMMANDS,
        **train.COMMANDS,
        **predict.COMMANDS,
        **web.COMMANDS,
        **evaluate.COMMANDS,
        **experiments.COMMANDS,
    }
    for add, _ in commands.values():
        add(sub)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; an error is one line on stderr and exit status 1 (--debug: the traceback)."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # MLflow prints "View run ... at" on stdout, which holds the command's JSON (with the run URL in it)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # without PREFECT_API_URL a flow starts a temporary local server; on a busy machine it needs > 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if args.command not in CONSOLE_AFTER_PREFLIGHT:  # train, cv, ablate: checked while parsing
        flow_console(args)
    try:
        return commands[args.command][1](args)
    except KeyboardInterrupt:
        print(f"avff {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"avff {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
