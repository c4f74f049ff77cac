"""The MLflow side of :class:`tasks.tracking.logger.Logger`, injected into training by the flow, and
:func:`use_experiment`: the experiments our flows write to, as model-training experiments
(:mod:`tasks.tracking.ui` says how MLflow 3's UI tells them apart).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from tasks.tracking.ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

_MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limits
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_CHARS = 6000


def use_experiment(name: str):
    """``mlflow.set_experiment(name)``, the experiment created or reused as a model-training experiment
    (:data:`EXPERIMENT_KIND_TAG`); a kind someone chose in the UI is left as it is. Returns the experiment."""
    import mlflow

    experiment = mlflow.set_experiment(name)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment


def param_value(value: Any) -> str:
    """A parameter as MLflow stores it: its string form, cut to MLflow's length limit."""
    return str(value)[:_MAX_PARAM_CHARS]


class MLflowLogger:
    """Logs to one MLflow run through an explicit client (no global tracking state)."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(str(k), param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items() if not math.isinf(float(v))]
        for i in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _MAX_METRICS_PER_BATCH])

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        if os.path.isdir(path):
            self.client.log_artifacts(self.run_id, path, artifact_path)
        else:
            self.client.log_artifact(self.run_id, path, artifact_path)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """``rows`` as an MLflow table artifact (NaN cells become null)."""
        columns = list(dict.fromkeys(k for r in rows for k in r))
        self.client.log_table(self.run_id, data={c: [r.get(c) for r in rows] for c in columns}, artifact_file=artifact_file)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])
