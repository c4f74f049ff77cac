"""What a command prints when it fails: one line per error, Prefect's console without tracebacks."""

from __future__ import annotations

import logging


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
