"""How our experiments and links present themselves in MLflow 3's UI, through a real sqlite store."""

from __future__ import annotations

import pytest

from tasks.tracking.mlflow_adapter import use_experiment
from tasks.tracking.ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ml_view


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    yield mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def test_experiments_are_model_training_experiments_new_or_old_and_a_chosen_kind_stays(store):
    created = use_experiment("fresh")  # created by the call
    assert store.get_experiment(created.experiment_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = store.create_experiment("made-before")  # e.g. by an earlier version, untagged
    assert EXPERIMENT_KIND_TAG not in store.get_experiment(old).tags
    assert use_experiment("made-before").experiment_id == old
    assert store.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    chosen = store.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})  # set in the UI
    use_experiment("chosen")
    assert store.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_links_open_in_the_model_training_view():
    assert ml_view("http://h:5000/#/experiments/1/runs/r") == "http://h:5000/#/experiments/1/runs/r?workflowType=machine_learning"
    assert ml_view("http://h/#/experiments?a=b") == "http://h/#/experiments?a=b&workflowType=machine_learning"
