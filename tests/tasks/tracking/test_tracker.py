"""The tracker boundary on a real MLflow sqlite store: runs, child runs, the run record, the registry."""

from __future__ import annotations

import pytest

from tasks.tracking.mlflow_tracker import MLflowTracker
from tasks.tracking.tracker import (
    DEFAULT_TRACKING_URI,
    NotInRegistry,
    Run,
    recorded_run_id,
    remember_run,
    resolve_tracking_uri,
)


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns
    yield MLflowTracker.connect(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(None)


def _client(tracker):
    from mlflow import MlflowClient

    return MlflowClient(tracker.uri)


def test_the_tracking_uri_is_the_argument_else_the_environment_else_the_local_stack(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == DEFAULT_TRACKING_URI == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(None) == "sqlite:///env.db"
    assert resolve_tracking_uri("http://h:5000") == "http://h:5000"


def test_a_run_opens_resumes_with_its_params_and_fails_on_an_exception(tracker):
    experiment_id = tracker.use_experiment("runs")
    with tracker.open_run(name="brave-otter", tags={"avff.kind": "evaluation"}) as run:
        tracker.logger(run.run_id).log_params({"lr": 0.001})
        tracker.set_note(run.run_id, "made by a test")
    assert (run.experiment_id, run.name) == (experiment_id, "brave-otter")
    stored = _client(tracker).get_run(run.run_id)
    assert stored.info.status == "FINISHED" and stored.data.tags["mlflow.note.content"] == "made by a test"
    assert stored.data.tags["avff.kind"] == "evaluation"

    with pytest.raises(RuntimeError, match="boom"), tracker.open_run(resume=run.run_id) as again:
        assert again.run_id == run.run_id and again.params == {"lr": "0.001"}  # what a resume compares against
        raise RuntimeError("boom")
    assert _client(tracker).get_run(run.run_id).info.status == "FAILED"
    assert tracker.find_run(run.run_id) == Run(run.run_id, experiment_id, "brave-otter", {"lr": "0.001"})
    assert tracker.find_run("0" * 32) is None  # another server's run, or a deleted one


def test_child_runs_hang_under_the_parent_and_end_finished_or_failed(tracker):
    tracker.use_experiment("children")
    with tracker.open_run(name="cv-1234") as parent:
        with tracker.child_run(parent, "fold-0", {"avff.fold": "0"}) as ok:
            ok.log_metrics({"val_video_auc": 0.75, "train_step_loss": 0.5}, step=1)
        with pytest.raises(ValueError), tracker.child_run(parent, "fold-1", {"avff.fold": "1"}) as bad:
            bad.log_metrics({"train_step_loss": 0.4}, step=1)  # opens the per-step grandchild
            raise ValueError("diverged")
    client = _client(tracker)
    done, failed = client.get_run(ok.run_id), client.get_run(bad.run_id)
    assert done.data.tags["mlflow.parentRunId"] == parent.run_id == failed.data.tags["mlflow.parentRunId"]
    assert (done.info.run_name, done.data.tags["avff.fold"], done.info.status) == ("fold-0", "0", "FINISHED")
    assert (failed.info.run_name, failed.info.status) == ("fold-1", "FAILED")
    assert done.data.metrics == {"val_video_auc": 0.75}  # the step curve went to its own child
    steps = client.search_runs([parent.experiment_id], f"tags.`avff.steps_of` = '{bad.run_id}'")
    assert [s.info.status for s in steps] == ["FAILED"]


def test_the_run_record_is_found_from_the_root_a_pointer_or_an_epoch_folder(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints" / "epoch-3").mkdir(parents=True)
    assert recorded_run_id(str(out)) is None and recorded_run_id(None) is None
    remember_run(str(out), "abc123")
    assert (out / "mlflow_run.json").exists()  # the file name old output folders carry
    for where in (out, out / "checkpoints", out / "checkpoints" / "epoch-3", out / "checkpoints" / "best.json"):
        assert recorded_run_id(str(where)) == "abc123", where


class _Echo:  # the smallest pyfunc (a PythonModel subclass is made in the test, where mlflow is loaded)
    def predict(self, context, model_input, params=None):
        return model_input


def test_log_register_alias_describe_and_a_missing_model_is_not_in_registry(tracker):
    import mlflow

    from tasks.serve.scorer import load_model

    tracker.use_experiment("registry")
    echo = type("Echo", (_Echo, mlflow.pyfunc.PythonModel), {})()
    with tracker.open_run(name="r") as run:
        pass
    # the run is no longer active: log_model attaches it, as the train flow's register task does
    uri = tracker.log_model(run.run_id, lambda: mlflow.pyfunc.log_model(name="model", python_model=echo,
                                                                         pip_requirements=["mlflow"]))  # fmt: skip
    assert uri.startswith("models:/") and mlflow.active_run() is None
    assert tracker.alias_tags("avff-test", "champion") is None  # no such model yet
    version = tracker.register(uri, "avff-test", {"monitor": "val_video_auc"})
    tracker.set_alias("avff-test", "champion", version)
    tracker.describe_version("avff-test", version, "# card")
    assert version == "1" and tracker.aliases("avff-test") == {"champion": "1"}
    assert tracker.alias_tags("avff-test", "champion") == {"monitor": "val_video_auc"}
    assert [(v.version, v.run_id) for v in tracker.model_versions("avff-test")] == [(1, run.run_id)]
    assert _client(tracker).get_model_version("avff-test", "1").description == "# card"
    assert tracker.model_version("avff-test", "champion") == tracker.model_version("avff-test", "1")
    assert tracker.model_version("avff-test", "1").tags == {"monitor": "val_video_auc"}
    assert tracker.version_uri("avff-test", 1) == "models:/avff-test/1"
    with pytest.raises(NotInRegistry), tracker.registry_lookup():
        tracker.model_version("avff-test", "nope")
    with pytest.raises(NotInRegistry), tracker.registry_lookup():
        load_model("models:/avff-test@nope")
    with pytest.raises(ValueError, match="other"), tracker.registry_lookup():
        raise ValueError("other errors pass through")


def test_datasets_named_with_a_source_or_without_one(tracker):
    import pandas as pd

    tracker.use_experiment("datasets")
    frame = pd.DataFrame({"video_id": ["a", "b"], "label": [0, 1], "p_fake": [0.2, 0.9]})
    with tracker.open_run(name="d") as run:
        tracker.log_dataset(
            run.run_id,
            frame,
            name="dfdc-manifest",
            digest="0123456789abcdef",
            source="memory://manifest.parquet",
            context="training",
        )  # a scheme MLflow cannot name
        tracker.log_dataset(run.run_id, frame, name="evaluated:x", predictions="p_fake", context="evaluation")
    inputs = _client(tracker).get_run(run.run_id).inputs.dataset_inputs
    got = {d.dataset.name: (d.dataset.digest, {t.key: t.value for t in d.tags}["mlflow.data.context"]) for d in inputs}
    assert got["dfdc-manifest"] == ("0123456789abcdef", "training")
    assert got["evaluated:x"][1] == "evaluation"
