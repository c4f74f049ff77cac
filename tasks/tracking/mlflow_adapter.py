"""The MLflow side of :class:`tasks.tracking.logger.Logger`, injected into training by the flow, and
:func:`use_experiment`: the experiments our flows write to, as model-training experiments
(:mod:`tasks.tracking.ui` says how MLflow 3's UI tells them apart).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from tasks.tracking.ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, TAG_STEPS_OF

_MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limits
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_CHARS = 6000


def use_experiment(name: str, artifact_location: str | None = None):
    """``mlflow.set_experiment(name)``, the experiment created or reused as a model-training experiment
    (:data:`EXPERIMENT_KIND_TAG`); a kind someone chose in the UI is left as it is. Returns the experiment.
    ``artifact_location``: where the experiment keeps its artifacts if this call creates it (None: the
    store's default, ``./mlruns`` of the working directory for a local sqlite file)."""
    import mlflow

    if artifact_location and mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_location)
    experiment = mlflow.set_experiment(name)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment


def param_value(value: Any) -> str:
    """A parameter as MLflow stores it: its string form, cut to MLflow's length limit."""
    return str(value)[:_MAX_PARAM_CHARS]


def is_step_series(key: str) -> bool:
    """A per-optimiser-step curve (``train_step_loss``, ``pretrain_step_grad_norm``, ...)."""
    return "_step_" in key


class MLflowLogger:
    """Logs to one MLflow run through an explicit client (no global tracking state).

    Per-step curves (:func:`is_step_series`: a dozen of them, loss terms, gradient norms, learning
    rates) go to a child run ``<run name> · curves`` (tag :data:`TAG_STEPS_OF`), made on the first
    one and found again when a run resumes: MLflow's run page lists metrics in the order they were
    first logged (mlflow 3.17's ``RunViewMetricsTable`` shows the store's order, unsorted), so on the
    run itself they would push the summary at the best checkpoint (the headline and its baselines)
    below a dozen step series.

    Given ``summary`` (which keys are the run's summary: training's
    :func:`tasks.train.finish.is_summary`), every other metric is a curve, too: logged live on the
    child run and copied onto the run, every point, when it finishes (:meth:`close`), so the run page
    lists the summary first and the run keeps its per-epoch curves (charts, Compare).
    """

    def __init__(self, client: MlflowClient, run_id: str, summary: Callable[[str], bool] | None = None):
        self.client, self.run_id, self.summary = client, run_id, summary
        self._steps_run_id: str | None = None

    @property
    def steps_run_id(self) -> str:
        """The child run holding the per-step curves, created (or found, on resume) on first use."""
        if self._steps_run_id is None:
            found = self._steps_runs()
            run = self.client.get_run(self.run_id)
            self._steps_run_id = found[0].info.run_id if found else self.client.create_run(
                run.info.experiment_id, run_name=f"{run.info.run_name} · curves",
                tags={MLFLOW_PARENT_RUN_ID: self.run_id, TAG_STEPS_OF: self.run_id}).info.run_id  # fmt: skip
        return self._steps_run_id

    def _steps_runs(self) -> list:
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        return self.client.search_runs([experiment_id], f"tags.`{TAG_STEPS_OF}` = '{self.run_id}'", max_results=1)

    def close(self, status: str = "FINISHED") -> None:
        """End the child run of curves, whichever process made it (a data-parallel rank 0 logs too); on a
        finished run with a ``summary``, first copy its curves onto the run (:meth:`copy_curves`)."""
        for run in self._steps_runs():
            if status == "FINISHED" and self.summary is not None:
                self.copy_curves(run.info.run_id)
            if run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, status)

    def curve(self, key: str) -> bool:
        """A metric logged on the child run: a per-step series, or (given ``summary``) anything but the summary."""
        return is_step_series(key) or (self.summary is not None and not self.summary(key))

    def copy_curves(self, child_run_id: str) -> None:
        """Every point of the child's per-epoch curves (not its step series) onto the run, in the order
        they were first logged; points the run already holds (a resumed run finishing again) are skipped."""
        items: list[Metric] = []
        for key in self.client.get_run(child_run_id).data.metrics:
            if is_step_series(key):
                continue
            held = {(m.step, m.timestamp) for m in self.client.get_metric_history(self.run_id, key)}
            items += [Metric(key, m.value, m.timestamp, m.step) for m in self.client.get_metric_history(child_run_id, key)
                      if (m.step, m.timestamp) not in held]  # fmt: skip
        for i in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _MAX_METRICS_PER_BATCH])

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(str(k), param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items() if not math.isinf(float(v))]
        for run_id, mine in ((self.run_id, [m for m in items if not self.curve(m.key)]),
                             (None, [m for m in items if self.curve(m.key)])):  # fmt: skip
            for i in range(0, len(mine), _MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id or self.steps_run_id, metrics=mine[i : i + _MAX_METRICS_PER_BATCH])

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        if os.path.isdir(path):
            self.client.log_artifacts(self.run_id, path, artifact_path)
        else:
            self.client.log_artifact(self.run_id, path, artifact_path)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """``rows`` as an MLflow table artifact (NaN cells become null)."""
        columns = list(dict.fromkeys(k for r in rows for k in r))
        self.client.log_table(
            self.run_id, data={c: [r.get(c) for r in rows] for c in columns}, artifact_file=artifact_file
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])
