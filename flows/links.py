"""Links between a Prefect flow run and the MLflow runs and model versions it makes, both ways.

MLflow side: the run is named after the flow run and tagged with its id and UI URL. Prefect
side: a link artifact to the MLflow run. MLflow UI URLs exist only for an ``http(s)``
tracking URI (the stack's server); for a file or sqlite store set ``AVFF_MLFLOW_UI_URL`` to
the address of an ``mlflow ui`` serving it, else the artifacts name the run id only. Every UI
URL opens in MLflow 3's model-training view (:func:`tasks.tracking.ui.ml_view`).
"""

from __future__ import annotations

import os
from urllib.parse import quote

from tasks.tracking.tracker import DEFAULT_TRACKING_URI, resolve_tracking_uri  # noqa: F401 (callers read them here)
from tasks.tracking.ui import ml_view

TAG_FLOW_RUN_ID, TAG_FLOW_RUN_NAME, TAG_FLOW_RUN_URL = (
    "prefect.flow_run_id",
    "prefect.flow_run_name",
    "prefect.flow_run_url",
)
RUN_LINK_KEY = "mlflow-run"  # the Prefect link artifact to a flow run's MLflow run


def flow_run() -> dict[str, str]:
    """{"id", "name", "url"} of the current Prefect flow run ({} outside one; no url without a UI)."""
    from prefect.runtime import flow_run as current
    from prefect.settings import PREFECT_UI_URL

    if current.id is None:
        return {}
    info = {"id": str(current.id), "name": str(current.name)}
    if PREFECT_UI_URL.value():  # else Prefect's ui_url would read "None/flow-runs/..."
        info["url"] = str(current.ui_url)
    return info


def flow_run_tags(info: dict[str, str]) -> dict[str, str]:
    """MLflow tags that point back at the flow run."""
    keys = {"id": TAG_FLOW_RUN_ID, "name": TAG_FLOW_RUN_NAME, "url": TAG_FLOW_RUN_URL}
    return {keys[k]: v for k, v in info.items() if k in keys}


def mlflow_ui(tracking_uri: str) -> str | None:
    """Base URL of the MLflow UI for this tracking URI, or None when there is none to link."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get("AVFF_MLFLOW_UI_URL", "").rstrip("/") or None


def experiment_url(tracking_uri: str, experiment_id: str) -> str | None:
    ui = mlflow_ui(tracking_uri)
    return ml_view(f"{ui}/#/experiments/{experiment_id}") if ui else None


def experiments_url(tracking_uri: str) -> str | None:
    """The experiments list, in the model-training view."""
    ui = mlflow_ui(tracking_uri)
    return ml_view(f"{ui}/#/experiments") if ui else None


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    ui = mlflow_ui(tracking_uri)
    return ml_view(f"{ui}/#/experiments/{experiment_id}/runs/{run_id}") if ui else None


def model_version_url(tracking_uri: str, name: str, version: str) -> str | None:
    ui = mlflow_ui(tracking_uri)
    return ml_view(f"{ui}/#/models/{quote(name)}/versions/{version}") if ui else None


def markdown_link(text: str, url: str | None) -> str:
    return f"[{text}]({url})" if url else f"`{text}`"


def link_artifact(url: str | None, text: str, key: str, description: str) -> None:
    """A Prefect link artifact when there is a URL, else a markdown one naming ``text``."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    if url:
        create_link_artifact(link=url, link_text=text, key=key, description=description)
    else:
        create_markdown_artifact(markdown=f"{description}: `{text}` (no MLflow UI URL for this tracking URI)",
                                 key=key, description=description)  # fmt: skip


def link_run(url: str | None, run_id: str, description: str) -> None:
    """The flow run's link artifact (key :data:`RUN_LINK_KEY`) to its MLflow run ``run_id``."""
    link_artifact(url, f"MLflow run {run_id}", RUN_LINK_KEY, description)
