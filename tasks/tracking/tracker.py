"""The tracker boundary: everything a flow asks of the experiment tracker, in our own words.

Runs (open or resume, child runs, tags and notes, the run record in an output folder), metrics,
params and artifacts (:class:`RunLogger`, the :class:`tasks.tracking.logger.Logger` training writes
to), datasets, models (log, register, version tags and descriptions, aliases) and the tracking URI.
The one implementation is :class:`tasks.tracking.mlflow_tracker.MLflowTracker`; callers see only
the plain records below, never the tracker library's types or exceptions (a registry lookup that
finds nothing is :class:`NotInRegistry`). No tracker import here: light scripts and tests read it.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from storage import fs
from tasks.tracking.logger import Logger

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
RUN_FILE = "mlflow_run.json"  # in an output_dir: the run that trains there, for --resume-from


def resolve_tracking_uri(uri: str | None) -> str:
    """The tracking URI: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the local stack's server."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class NotInRegistry(LookupError):
    """The registry has no such model, version or alias (the tracker's own message as text)."""


@dataclass(frozen=True)
class Run:
    """A run as flows see it: ids, its name and the params it has logged (a resumed run's)."""

    run_id: str
    experiment_id: str
    name: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its number, the run that logged it, its tags."""

    version: int
    run_id: str | None
    tags: Mapping[str, str]


class RunLogger(Logger, Protocol):
    """A :class:`Logger` bound to one run; ``close`` ends what it opened (the child run of curves)."""

    run_id: str

    def close(self, status: str = "FINISHED") -> None: ...


class Tracker(Protocol):
    """What flows need of a tracker; picklable (it holds its URI only), so a rank or a thread builds loggers."""

    uri: str | None

    def use_experiment(self, name: str, artifact_location: str | None = None) -> str:
        """Create or reuse experiment ``name`` for the runs this process opens; returns its id.
        ``artifact_location``: where a created experiment keeps its artifacts (None: the store's default)."""
        ...

    def open_run(
        self, *, name: str | None = None, resume: str | None = None, tags: Mapping[str, str] | None = None
    ) -> AbstractContextManager[Run]:
        """A new run called ``name`` (or run ``resume`` continued) with ``tags``, active in this thread, ended
        FINISHED, or FAILED on an exception."""
        ...

    def child_run(self, parent: Run, name: str, tags: Mapping[str, str]) -> AbstractContextManager[RunLogger]:
        """A run under ``parent`` (any thread), its logger closed and the run ended FINISHED or FAILED."""
        ...

    def find_run(self, run_id: str) -> Run | None:
        """The run ``run_id``, None when this tracker has no such run."""
        ...

    def logger(self, run_id: str, summary: Callable[[str], bool] | None = None) -> RunLogger:
        """Run ``run_id``'s logger; ``summary`` names its summary metrics (the rest are curves, shown after them:
        :class:`tasks.tracking.mlflow_adapter.MLflowLogger`)."""
        ...

    def set_note(self, run_id: str, markdown: str) -> None:
        """The run page's description."""
        ...

    def log_dataset(self, run_id: str, frame: Any, *, name: str, context: str, digest: str | None = None,
                    source: str | None = None, predictions: str | None = None) -> None:  # fmt: skip
        """A pandas frame as the run's input dataset (``label`` its target column, ``predictions`` a column of
        scores); a ``source`` the tracker cannot name is left out."""
        ...

    def log_model(self, run_id: str, write: Callable[[], Any]) -> str:
        """Call ``write`` (it logs a model, e.g. :func:`tasks.serve.scorer.log_pyfunc_model`) inside
        run ``run_id``; returns the logged model's URI."""
        ...

    def register(self, model_uri: str, name: str, tags: Mapping[str, str]) -> str:
        """Register ``model_uri`` as a new version of ``name``; returns the version."""
        ...

    def model_version(self, name: str, ref: str) -> ModelVersion:
        """Version ``ref`` (digits) or alias ``ref`` of ``name``; a missing one raises (see :meth:`registry_lookup`)."""
        ...

    def version_uri(self, name: str, version: str | int) -> str:
        """The URI that loads exactly this version (``models:/name/3``)."""
        ...

    def model_versions(self, name: str) -> list[ModelVersion]: ...

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version of registered model ``name``."""
        ...

    def alias_tags(self, name: str, alias: str) -> dict[str, str] | None:
        """The tags of ``name@alias``; None when there is no such model or alias."""
        ...

    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    def describe_version(self, name: str, version: str, markdown: str) -> None: ...

    def registry_lookup(self) -> AbstractContextManager[None]:
        """Turns the tracker's "no such model / version / alias" into :class:`NotInRegistry`."""
        ...


def quiet_tracker() -> None:
    """Off for a command-line user: the tracker's download progress bars, its INFO logs and its
    warning that a model's ``predict`` has no type hints."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def remember_run(output_dir: str, run_id: str) -> None:
    """Record in ``output_dir`` the run that trains there (what ``--resume-from`` continues)."""
    fs.atomic_write_bytes(fs.join(output_dir, RUN_FILE), json.dumps({"run_id": run_id}).encode())


def recorded_run_id(resume_from: str | None) -> str | None:
    """The run id :func:`remember_run` wrote for ``resume_from`` (a checkpoint root, a pointer .json or
    an epoch directory: the record sits in the root, so the folder, its parent and grandparent are read)."""
    if not resume_from:
        return None
    folder = resume_from.rstrip("/")
    for _ in range(3):
        uri = fs.join(folder, RUN_FILE)
        if fs.exists(uri):
            return json.loads(fs.read_bytes(uri)).get("run_id")
        folder = os.path.dirname(folder)
    return None
