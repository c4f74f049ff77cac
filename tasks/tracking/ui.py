"""How our experiments, runs and links present themselves in MLflow 3's UI (no mlflow import: links
are built by light scripts too, e.g. ``deployments/runs.py``).

MLflow 3 opens an experiment in its GenAI view (traces, a token dashboard; the registry hidden)
unless told otherwise. Two switches, both read from mlflow 3.17's UI bundle and handlers:

- the experiment tag :data:`EXPERIMENT_KIND_TAG` (what the UI's kind selector writes;
  ``custom_model_development`` is "Machine learning"), set by
  :func:`tasks.tracking.mlflow_adapter.use_experiment` on the experiments our flows write to;
- the URL query :data:`ML_VIEW_QUERY`: 3.17's UI takes the view from the page (URL query, else
  the browser's stored choice, default GenAI) before the tag, so every link we print carries it
  (:func:`ml_view`); the UI keeps it while one navigates.

An evaluation run carries :data:`RUN_TYPE_TAG` = :data:`RUN_TYPE_EVALUATION` (the value MLflow's
runs table looks for to fold evaluation runs under their parent) and its scored videos as an
:data:`EVALUATION_CONTEXT` dataset input. The UI's telemetry notice has no server-side switch:
telemetry itself is off by environment (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``; the server
then answers the UI "disabled"), the notice is dismissed per browser (local storage key
``mlflow.telemetry.info.alert.dismissed_v1``).
"""

from __future__ import annotations

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
ML_VIEW_QUERY = "workflowType=machine_learning"
RUN_TYPE_TAG, RUN_TYPE_EVALUATION = "mlflow.runType", "evaluation"
EVALUATION_CONTEXT = "evaluation"  # the dataset input's context tag, beside training runs' "training"
TAG_GIT_COMMIT = "mlflow.source.git.commit"  # the run page's "source" commit
TAG_STEPS_OF = "avff.steps_of"  # on the child run holding a run's per-step curves: that run's id


def ml_view(url: str) -> str:
    """An MLflow UI URL (``.../#/route``) that opens in the model-training view."""
    return url + ("&" if "?" in url.partition("#")[2] else "?") + ML_VIEW_QUERY
