"""The ``avff`` command: sample, ingest, train, evaluate, predict, cv, ablate, stack, web.

ingest, train, evaluate, cv and ablate build their flow's typed config from the flags and call
the flow (so such a CLI run is a Prefect flow run too: against PREFECT_API_URL when set, else a
temporary local server), after checking the inputs that cannot work (flows/preflight.py).
predict, sample, stack and web run in this process, with no flow run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _ingest_flags():
    """IngestSettings' flags: ``--field-name`` each, ``--config FILE``, defaults and help from the fields."""
    from flows.cli.fields import ConfigFlags
    from tasks.ingest.settings import IngestSettings

    return ConfigFlags(IngestSettings)


def _add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="DFDC folder -> WebDataset shards + parquet manifests",
                       description="Decode each video, crop the tracked face, extract the log-mel and write "
                       "WebDataset shards + manifest.parquet (an ingest-dfdc flow run).")  # fmt: skip
    _ingest_flags().add_arguments(p, "ingest settings (tasks/ingest/settings.py, docs/ingest.md)")


def _ingest(args) -> int:
    from pydantic import ValidationError

    from flows.preflight import ConfigError, check_ingest_inputs
    from tasks.ingest.settings import IngestSettings

    flags = _ingest_flags()
    try:  # before the flow's import and its run: a refused command leaves no failed run behind
        cfg = IngestSettings.model_validate(flags.values(args))
        check_ingest_inputs(cfg.data, cfg.out, cfg.identity_map)
    except (ValidationError, ConfigError) as e:
        return flags.usage_error("ingest", e)
    flow_console(args)
    from flows.ingest import ingest_dfdc

    print(json.dumps(ingest_dfdc(cfg), indent=2))
    return 0


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="write a small synthetic DFDC-format dataset (real + labelled fakes)")
    p.add_argument("--out", required=True, help="folder to write (dfdc_train_part_*/ with metadata.json)")
    p.add_argument(
        "--n-real", type=int, default=8, help="real videos per part; each gets its fakes (default: %(default)s)"
    )
    p.add_argument(
        "--parts", type=int, default=1, help="dfdc_train_part_* folders; 0: one flat folder (default: %(default)s)"
    )
    p.add_argument("--duration", type=float, default=4.0, help="seconds per video (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument(
        "--pool",
        choices=["train", "pretrain", "external"],
        default="train",
        help="identity pool: sets of different pools share no face or voice (default: %(default)s)",
    )
    p.add_argument(
        "--with-refusals",
        action="store_true",
        help="also list a video that is not there and add a file with no metadata entry, so ingest "
        "shows its refusals (the demo's sample)",
    )


def _sample(args) -> int:
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    path = make_dfdc_sample(
        args.out,
        n_real=args.n_real,
        parts=args.parts,
        duration_s=args.duration,
        size=(args.size, args.size),
        seed=args.seed,
        pool=args.pool,
    )
    if args.with_refusals:
        from tasks.synthetic.dfdc_sample import add_refusals

        refused = add_refusals(path)
        print(f"listed but missing: {refused['missing']}; no metadata entry: {refused['unlisted']}", file=sys.stderr)
    print(path)
    return 0


def _add_stack(sub) -> None:
    from deployments.stack import add_arguments

    add_arguments(sub.add_parser("stack", help="start/stop the local Prefect + MLflow (+ Ray) stack"))


def _stack(args) -> int:
    from deployments.stack import run

    return run(args)


def one_line(exc: BaseException) -> str:
    """An exception as one line: the cause a Ray/pydantic wrapper hides, whitespace collapsed."""
    exc = getattr(exc, "cause", None) or exc  # RayTaskError: the worker's own exception
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":  # pydantic: one clause per field
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in errors())
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    name = type(exc).__name__
    return text if name in ("RuntimeError", "ValueError", "StackError", "ValidationError") else f"{name}: {text}"


class _NoTraceback(logging.Formatter):
    """Wraps a console formatter: records without their traceback, errors cut to their first line.

    The record is restored afterwards, so Prefect's API handler (the UI's run logs) keeps it whole.
    """

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            text = self.inner.format(record)
            return text.split("\n", 1)[0] if record.levelno >= logging.ERROR else text
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


# commands whose checks run inside their own function, before the flow: Prefect (seconds to import) must wait
# for them, so they call flow_console() once their preflight passed; predict, sample, stack and web run no flow
CONSOLE_AFTER_PREFLIGHT = ("ingest", "evaluate", "predict", "sample", "stack", "web")


def flow_console(args) -> None:
    """Prefect's console without tracebacks (unless --debug), for a command about to run its flow."""
    if not getattr(args, "debug", False):
        _console_without_tracebacks()


def _console_without_tracebacks() -> None:
    """Prefect prints a failed flow's traceback on the console; without --debug only its first line."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # what the first flow would do; later set-ups are incremental and keep handlers
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(_NoTraceback(handler.formatter))


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
    from flows.cli import evaluate, experiments, predict, train, web

    commands = {
        "ingest": (_add_ingest, _ingest),
        "sample": (_add_sample, _sample),
        "stack": (_add_stack, _stack),
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
