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


def test_a_created_experiment_keeps_its_artifacts_where_asked_and_an_old_one_where_it_was(store, tmp_path):
    """A local sqlite store would put them in the working directory's ./mlruns (bench/results.py: under its --out)."""
    where = (tmp_path / "out" / "mlartifacts").as_uri()
    created = use_experiment("placed", artifact_location=where)
    assert store.get_experiment(created.experiment_id).artifact_location == where
    assert use_experiment("placed", artifact_location=(tmp_path / "elsewhere").as_uri()).artifact_location == where


def test_links_open_in_the_model_training_view():
    assert (
        ml_view("http://h:5000/#/experiments/1/runs/r")
        == "http://h:5000/#/experiments/1/runs/r?workflowType=machine_learning"
    )
    assert ml_view("http://h/#/experiments?a=b") == "http://h/#/experiments?a=b&workflowType=machine_learning"


def test_per_step_curves_go_to_one_child_run_found_again_on_resume_and_ended_with_training(store):
    from tasks.tracking.mlflow_adapter import MLflowLogger
    from tasks.tracking.ui import TAG_STEPS_OF

    experiment = use_experiment("steps")
    run = store.create_run(experiment.experiment_id, run_name="brave-otter")
    logger = MLflowLogger(store, run.info.run_id)
    for step in (1, 2):
        logger.log_metrics({"train_step_loss": 1.0 / step, "train_step_lr": 1e-3}, step=step)
    logger.log_metrics({"val_video_auc": 0.7, "test_video_auc": 0.8}, step=2)
    # a resumed run: a new logger finds the same child and continues its curve
    MLflowLogger(store, run.info.run_id).log_metrics({"train_step_loss": 0.25}, step=3)

    assert set(store.get_run(run.info.run_id).data.metrics) == {"val_video_auc", "test_video_auc"}
    (steps,) = store.search_runs([experiment.experiment_id], f"tags.`{TAG_STEPS_OF}` = '{run.info.run_id}'")
    assert steps.info.run_name == "brave-otter · curves" and steps.data.tags["mlflow.parentRunId"] == run.info.run_id
    history = store.get_metric_history(steps.info.run_id, "train_step_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert steps.info.status == "RUNNING"
    logger.close()
    assert store.get_run(steps.info.run_id).info.status == "FINISHED"
    assert len(store.search_runs([experiment.experiment_id])) == 2  # the run and its one per-step child


def test_given_the_summary_a_run_logs_it_first_and_gets_its_curves_when_it_finishes(store):
    """Issue 25: MLflow's run page lists metrics in the order first logged; a training run's summary comes
    after its epochs, so its curves are logged live on the child run and copied onto it at the end."""
    from tasks.tracking.mlflow_adapter import MLflowLogger
    from tasks.tracking.ui import TAG_STEPS_OF
    from tasks.train.finish import is_summary

    experiment = use_experiment("summary-first")
    run = store.create_run(experiment.experiment_id, run_name="calm-heron")
    logger = MLflowLogger(store, run.info.run_id, summary=is_summary)
    for epoch in (1, 2):
        logger.log_metrics({"train_step_loss": 1.0 / epoch}, step=epoch)
        logger.log_metrics({"train_loss": 1.0 / epoch, "val_video_auc": 0.5 + epoch / 10, "lr": 1e-3}, step=epoch)
    assert store.get_run(run.info.run_id).data.metrics == {}  # during training: the curves are on the child
    logger.log_metrics({"test_video_auc": 0.8, "best_val_video_auc": 0.7, "calibration_slope": 1.1}, step=2)
    logger.close()

    (child,) = store.search_runs([experiment.experiment_id], f"tags.`{TAG_STEPS_OF}` = '{run.info.run_id}'")
    assert child.info.run_name == "calm-heron · curves" and child.info.status == "FINISHED"
    ordered = list(store.get_run(run.info.run_id).data.metrics)  # the store's order, the run page's
    assert ordered == ["test_video_auc", "best_val_video_auc", "calibration_slope", "train_loss", "val_video_auc", "lr"]
    history = store.get_metric_history(run.info.run_id, "val_video_auc")
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.7)]  # every epoch, copied once
    assert "train_step_loss" not in store.get_run(run.info.run_id).data.metrics
    logger.close()  # closing again copies nothing twice
    assert len(store.get_metric_history(run.info.run_id, "val_video_auc")) == 2
