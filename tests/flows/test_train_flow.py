"""The train-avff Prefect flow for real: a Prefect test server, a sqlite MLflow store in tmp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from storage import fs
from tasks.serve.scorer import load_model
from tasks.synthetic.shards import write_synthetic_shards

pytestmark = pytest.mark.slow  # every test here starts a Prefect server

REGISTERED = "avff-dfdc"


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns
    client = mlflow.MlflowClient(uri)
    client.create_experiment("avff-test", artifact_location=str(tmp_path / "artifacts"))
    yield uri
    mlflow.set_tracking_uri(None)


def _config(tmp_path, uri: str, out: str = "out", **kw):
    from tasks.train.settings import TrainSettings

    fields = dict(
        data=str(tmp_path / "data"), model_config="tiny", overrides={"num_slices": 2}, pretrain_epochs=1, epochs=2,
        batch_size=8, lr=1e-3, num_workers=0, shuffle_buffer=16, device="cpu", output_dir=str(tmp_path / out),
        experiment="avff-test", registered_model=REGISTERED, tracking_uri=uri,
    )  # fmt: skip
    return TrainSettings(**{**fields, **kw})


def _artifacts(flow_run_id) -> dict:
    """key -> the Prefect artifact a flow run created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_flow_tracks_the_run_and_registers_a_loadable_pyfunc(prefect_server, mlflow_store, tmp_path, monkeypatch):
    import mlflow
    from prefect.client.orchestration import get_client

    from flows.train import train_avff

    monkeypatch.setenv("AVFF_MLFLOW_UI_URL", "http://mlflow.example:5000")
    layout = write_synthetic_shards(str(tmp_path / "data"))
    state = train_avff(_config(tmp_path, mlflow_store), return_state=True)
    out = state.result()

    assert out["model_version"] == "1" and Path(out["report"]).exists()
    assert out["aliases"] == ["candidate", "champion"] and out["registry"].startswith("val_video_log_loss")
    assert out["test_metrics"]["test_video_auc"] > 0.8
    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(out["run_id"])
    params, tags = run.data.params, run.data.tags
    assert params["train.lr"] == "0.001" and params["train.model_config"] == "tiny"
    assert params["model.num_slices"] == "2" and params["model.img_size"] == "32"
    assert tags["manifest_sha256"] == fs.sha256_of(layout.manifest) and len(tags["config_hash"]) == 16
    assert len(tags.get("git_commit", "")) in (0, 40)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_video_auc")] == [2, 3]
    # per-step curves in a child run of their own: on the run they would open its metric list (first-logged order)
    (steps,) = client.search_runs([run.info.experiment_id], f"tags.`avff.steps_of` = '{run.info.run_id}'")
    assert steps.data.tags["mlflow.parentRunId"] == run.info.run_id and steps.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(steps.info.run_id, "train_step_loss")] == list(range(3, 11))
    assert not [k for k in run.data.metrics if "_step_" in k] and "pretrain_step_loss" in steps.data.metrics
    assert "test_video_auc" in run.data.metrics

    # a run page one can read: curves and a short summary as metrics, the rest in a table
    assert len(run.data.metrics) <= 40, sorted(run.data.metrics)
    # the headline beside its baselines, as metrics (MLflow's Compare view): the prior and the hand-made
    # statistics' AUC; the other baselines in the table
    assert {k for k in run.data.metrics if "baselines" in k} == {
        f"{split}_baselines_video_prior_{m}" for split in ("best_val", "test") for m in ("auc", "log_loss")
    } | {f"{split}_baselines_video_{s}_auc" for split in ("best_val", "test") for s in ("lip_sync", "sharpness")}
    assert run.data.metrics["test_baselines_video_prior_auc"] == 0.5
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "metrics_table.json", str(tmp_path))).read_text()
    )
    rows = [dict(zip(table["columns"], r)) for r in table["data"]]
    prior = next(r for r in rows if (r["split"], r["level"], r["predictor"]) == ("test", "video", "prior baseline"))
    assert prior["auc"] == 0.5 and prior["log_loss"] > 0
    model = next(r for r in rows if (r["split"], r["level"], r["predictor"]) == ("test", "video", "model"))
    assert model["auc"] == pytest.approx(run.data.metrics["test_video_auc"])
    assert tags["best_epoch"] == str(out["best_epoch"])

    # tied to the Prefect flow run, both ways
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(flow_run_id)
    assert run.info.run_name == flow_run.name and tags["prefect.flow_run_id"] == str(flow_run_id)
    assert (
        tags["mlflow.note.content"].startswith("Made by Prefect flow run ")
        and flow_run.name in tags["mlflow.note.content"]
    )
    assert (
        "avff-dfdc version 1](http://mlflow.example:5000/#/models/avff-dfdc/versions/1?workflowType=machine_learning)"
        in tags["mlflow.note.content"]
    )
    # links open in MLflow 3's model-training view, not its GenAI view
    run_url = (
        f"http://mlflow.example:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        "?workflowType=machine_learning"
    )
    assert out["run_url"] == run_url
    artifacts = _artifacts(flow_run_id)
    assert f"({run_url})" in artifacts["mlflow-run"].data  # Prefect stores a link artifact as markdown
    assert artifacts["training-report"].data.startswith(f"MLflow run [{run.info.run_id}]({run_url})")
    assert (
        "avff-dfdc version 1](http://mlflow.example:5000/#/models/avff-dfdc/versions/1?workflowType=machine_learning)"
        " (candidate, champion)"
    ) in (artifacts["training-report"].data)
    # a model-training experiment in MLflow 3's UI (not the GenAI view)
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    # the manifest is the run's dataset, named by its digest
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == fs.sha256_of(layout.manifest)[:16]
    assert dataset_input.dataset.name == "dfdc-manifest" and dataset_input.tags[0].value == "training"

    # the registry: a model card, aliases, the decision threshold inside the model
    version = client.get_model_version(REGISTERED, "1")
    assert version.description.startswith("# AVFF deepfake detector") and "| prior baseline |" in version.description
    assert version.tags["monitor"] == "val_video_log_loss" and float(version.tags["monitor_value"]) < float(
        version.tags["prior_value"]
    )
    assert str(client.get_model_version_by_alias(REGISTERED, "champion").version) == "1"

    def listing(path=None):
        return {f.path for f in client.list_artifacts(run.info.run_id, path)}

    assert "report.md" in listing() and "plots/curve_loss.png" in listing("plots")
    assert {"checkpoints/best", "checkpoints/last"} <= listing("checkpoints")
    report = Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path))).read_text()
    assert report.startswith("# AVFF training report")

    # the registered model: models from code + safetensors, nothing pickled
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{REGISTERED}/1", dst_path=str(tmp_path / "m")))
    assert not list(model_dir.rglob("*.pkl")) and "model_code_path" in (model_dir / "MLmodel").read_text()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/1")
    rng = np.random.default_rng(0)
    video = rng.normal(size=(3, 3, 4, 32, 32)).astype(np.float32)
    audio = rng.normal(size=(3, 1, 32, 32)).astype(np.float32)
    p = pyfunc.unwrap_python_model().scorer.predict_proba(video, audio)  # its input is a video: the clips' scores
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()
    scorer = load_model(f"models:/{REGISTERED}/1", device="cpu")
    np.testing.assert_allclose(scorer.predict_proba(video, audio), p, rtol=1e-5, atol=1e-6)
    best = load_model(str(tmp_path / "out" / "checkpoints" / "best.json"), device="cpu")
    np.testing.assert_allclose(best.predict_proba(video, audio), p, rtol=1e-5, atol=1e-6)
    assert scorer.threshold == pytest.approx(float(version.tags["threshold"]))


def test_registry_takes_only_models_that_beat_the_prior_and_the_champion(prefect_server, mlflow_store, tmp_path):
    import mlflow

    from flows.train import train_avff

    write_synthetic_shards(str(tmp_path / "data"))
    client = mlflow.MlflowClient(mlflow_store)
    good = train_avff(_config(tmp_path, mlflow_store, "good", stages="classify", epochs=2))
    assert good["model_version"] == "1" and good["aliases"] == ["candidate", "champion"]

    # an impossible margin over the prior: logged in its run, never registered
    refused = train_avff(_config(tmp_path, mlflow_store, "refused", stages="classify", epochs=1, min_improvement=10.0))
    assert refused["model_version"] is None and "does not beat the prior" in refused["registry"]
    assert len(client.search_model_versions(f"name='{REGISTERED}'")) == 1
    assert client.get_run(refused["run_id"]).data.tags["registry"].startswith("not registered: ")
    experiment = client.get_run(refused["run_id"]).info.experiment_id
    kept = client.search_logged_models([experiment], filter_string=f"source_run_id = '{refused['run_id']}'")
    assert len(kept) == 1  # the model stays in its run, to be registered by hand if wanted

    # registered on request, but a barely trained model does not take the champion alias (its logits as trained:
    # a read-out fitted after training is a learner of its own, which finds the synthetic pattern untrained)
    weak = train_avff(_config(tmp_path, mlflow_store, "weak", stages="classify", epochs=1, lr=1e-9,
                              register_if="always", readout="end_to_end"))  # fmt: skip
    assert weak["model_version"] == "2" and weak["aliases"] == ["candidate"]
    assert str(client.get_model_version_by_alias(REGISTERED, "candidate").version) == "2"
    assert str(client.get_model_version_by_alias(REGISTERED, "champion").version) == "1"


def test_resume_from_continues_the_same_mlflow_run_and_registers_once(prefect_server, mlflow_store, tmp_path):
    """Stopped after one epoch, resumed to two, then to three: one MLflow run whose curves continue,
    the changed setting as a tag, and one registered version."""
    import mlflow

    from flows.train import train_avff

    write_synthetic_shards(str(tmp_path / "data"))
    first = train_avff(_config(tmp_path, mlflow_store, epochs=1, register_if="never"))
    assert first["model_version"] is None
    out = str(tmp_path / "out")
    second = train_avff(_config(tmp_path, mlflow_store, epochs=2, register_if="always", resume_from=out))
    third = train_avff(_config(tmp_path, mlflow_store, epochs=3, register_if="always", resume_from=out))
    assert first["run_id"] == second["run_id"] == third["run_id"]
    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(first["run_id"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_video_auc")] == [2, 3, 4]
    assert run.data.params["train.epochs"] == "1" and run.data.tags["resumed.train.epochs"] == "3"
    assert run.data.tags["resumed.train.resume_from"] == out
    assert second["model_version"] == third["model_version"] == "1"
    assert [str(v.version) for v in client.search_model_versions(f"name='{REGISTERED}'")] == ["1"]
    assert third["registry"] == "already registered as version 1 by this run"
    runs = client.search_runs([run.info.experiment_id])
    # one run, and one per-step child run that the resumed attempts found again and continued
    assert [r.info.run_id for r in runs if "avff.steps_of" not in r.data.tags] == [run.info.run_id]
    (steps,) = [r for r in runs if r.data.tags.get("avff.steps_of") == run.info.run_id]
    assert steps.info.status == "FINISHED"
