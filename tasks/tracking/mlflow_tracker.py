"""The one :class:`tasks.tracking.tracker.Tracker`: MLflow, a thin wrapper (no behaviour of its own).

Runs a flow owns are opened with MLflow's fluent API (so they carry its source/user tags and the
flow's thread owns them); child runs and every write go through an explicit ``MlflowClient`` on
this tracker's URI, so they work from worker threads and other processes (a data-parallel rank 0).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from tasks.tracking.mlflow_adapter import MLflowLogger, use_experiment
from tasks.tracking.tracker import ModelVersion, NotInRegistry, Run, resolve_tracking_uri

NOTE_TAG = "mlflow.note.content"  # the run page's description


class MLflowTracker:
    """MLflow on ``uri`` (None: the process's tracking URI). :meth:`connect` is how flows make one."""

    def __init__(self, uri: str | None = None):
        self.uri = uri

    @classmethod
    def connect(cls, uri: str | None) -> MLflowTracker:
        """The process's tracking URI set to ``uri`` resolved (:func:`resolve_tracking_uri`): the fluent
        API (runs, model logging, ``models:/`` downloads) reads it."""
        mlflow.set_tracking_uri(resolve_tracking_uri(uri))
        return cls(mlflow.get_tracking_uri())

    def _client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def use_experiment(self, name: str, artifact_location: str | None = None) -> str:
        return use_experiment(name, artifact_location).experiment_id

    @contextlib.contextmanager
    def open_run(
        self, *, name: str | None = None, resume: str | None = None, tags: Mapping[str, str] | None = None
    ) -> Iterator[Run]:
        tags = dict(tags) if tags else None
        started = mlflow.start_run(run_id=resume, tags=tags) if resume else mlflow.start_run(run_name=name, tags=tags)
        with started as active:
            yield Run(active.info.run_id, active.info.experiment_id, active.info.run_name, dict(active.data.params))

    @contextlib.contextmanager
    def child_run(self, parent: Run, name: str, tags: Mapping[str, str]) -> Iterator[MLflowLogger]:
        client = self._client()
        run = client.create_run(parent.experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent.run_id,
                                                            MLFLOW_RUN_NAME: name, **tags})  # fmt: skip
        logger = MLflowLogger(client, run.info.run_id)
        try:
            yield logger
        except BaseException:
            logger.close("FAILED")
            client.set_terminated(run.info.run_id, "FAILED")
            raise
        logger.close()
        client.set_terminated(run.info.run_id, "FINISHED")

    def find_run(self, run_id: str) -> Run | None:
        try:
            run = self._client().get_run(run_id)
        except MlflowException:  # another tracking server, or a deleted run
            return None
        return Run(run.info.run_id, run.info.experiment_id, run.info.run_name, dict(run.data.params))

    def logger(self, run_id: str, summary: Callable[[str], bool] | None = None) -> MLflowLogger:
        return MLflowLogger(self._client(), run_id, summary=summary)

    def set_note(self, run_id: str, markdown: str) -> None:
        self.logger(run_id).set_tags({NOTE_TAG: markdown})

    def log_dataset(self, run_id: str, frame: Any, *, name: str, context: str, digest: str | None = None,
                    source: str | None = None, predictions: str | None = None) -> None:  # fmt: skip
        given = {k: v for k, v in (("digest", digest), ("predictions", predictions)) if v is not None}
        try:
            with warnings.catch_warnings():  # "the source can be interpreted in multiple ways" (all of them local)
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(frame, targets="label", name=name, **given,
                                                  **({"source": source} if source is not None else {}))  # fmt: skip
        except MlflowException:  # a storage scheme MLflow has no dataset source for (e.g. memory://)
            if source is None:
                raise
            dataset = mlflow.data.from_pandas(frame, targets="label", name=name, **given)
        with _attached(run_id):
            mlflow.log_input(dataset, context=context)

    def log_model(self, run_id: str, write: Callable[[], Any]) -> str:
        with _attached(run_id):
            return write().model_uri

    def register(self, model_uri: str, name: str, tags: Mapping[str, str]) -> str:
        return str(mlflow.register_model(model_uri, name, tags=dict(tags)).version)

    def model_version(self, name: str, ref: str) -> ModelVersion:
        client = self._client()
        found = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
        return ModelVersion(int(found.version), found.run_id, dict(found.tags))

    def version_uri(self, name: str, version: str | int) -> str:
        return f"models:/{name}/{version}"

    def model_versions(self, name: str) -> list[ModelVersion]:
        found = self._client().search_model_versions(f"name='{name}'")
        return [ModelVersion(int(v.version), v.run_id, dict(v.tags)) for v in found]

    def aliases(self, name: str) -> dict[str, str]:
        return {a: str(v) for a, v in self._client().get_registered_model(name).aliases.items()}

    def alias_tags(self, name: str, alias: str) -> dict[str, str] | None:
        try:
            return dict(self._client().get_model_version_by_alias(name, alias).tags)
        except MlflowException:  # no such model or alias yet
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._client().set_registered_model_alias(name, alias, version)

    def describe_version(self, name: str, version: str, markdown: str) -> None:
        self._client().update_model_version(name, version, description=markdown)

    @contextlib.contextmanager
    def registry_lookup(self) -> Iterator[None]:
        try:
            yield
        except MlflowException as e:
            if "not found" not in str(e).lower() and "RESOURCE_DOES_NOT_EXIST" not in str(e):
                raise
            raise NotInRegistry(str(e)) from None


def _attached(run_id: str):
    """The fluent API needs the run active in this thread (a Prefect task may run in another)."""
    active = mlflow.active_run()
    return contextlib.nullcontext() if active and active.info.run_id == run_id else mlflow.start_run(run_id=run_id)
