"""Checks of a flow's inputs that need no heavy import, run before any Prefect or MLflow run starts.

The CLI calls them before it imports the flows (torch, Prefect and MLflow take seconds to
import); the flows call them again first thing, for runs started from a deployment.
"""

from __future__ import annotations

from storage import fs


class ConfigError(ValueError):
    """A config that cannot work; its message is one line that says what to do."""


def require_ingest_output(data: str) -> None:
    """``data`` must be an ingest output root (it holds manifest.parquet)."""
    layout = fs.IngestLayout(data)
    if not fs.exists(layout.manifest):
        raise ConfigError(f"{data} holds no {layout.manifest.rsplit('/', 1)[-1]}: it is not an ingest output; "
                          f"run `avff ingest --data <videos> --out {data}` first")  # fmt: skip


def require_path(path: str | None, what: str) -> None:
    if path and not fs.exists(path):
        raise ConfigError(f"{what} {path} does not exist")
