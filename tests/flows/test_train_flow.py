"""The train-avff Prefect flow for real: a Prefect test server, a sqlite MLflow store in tmp."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from storage import fs
from tasks.serving import load_model
from tasks.synthetic_shards import write_synthetic_shards

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


def test_flow_tracks_the_run_and_registers_a_loadable_pyfunc(prefect_server, mlflow_store, tmp_path):
    import mlflow

    from flows.train import TrainConfig, train_avff

    data = str(tmp_path / "data")
    layout = write_synthetic_shards(data)
    config = TrainConfig(
        data=data, model_config="tiny", overrides={"num_slices": 2}, pretrain_epochs=1, epochs=2, batch_size=8,
        lr=1e-3, num_workers=0, shuffle_buffer=16, device="cpu", checkpoint_dir=str(tmp_path / "out"),
        experiment="avff-test", registered_model=REGISTERED, tracking_uri=mlflow_store,
    )  # fmt: skip
    out = train_avff(config)

    assert out["model_version"] == "1" and Path(out["report"]).exists()
    assert out["test_metrics"]["test_video_auc"] > 0.8
    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(out["run_id"])
    params, tags = run.data.params, run.data.tags
    assert params["train.lr"] == "0.001" and params["train.model_config"] == "tiny"
    assert params["model.num_slices"] == "2" and params["model.img_size"] == "32"
    assert tags["manifest_sha256"] == fs.sha256_of(layout.manifest) and len(tags["config_hash"]) == 16
    assert len(tags.get("git_commit", "")) in (0, 40)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_video_auc")] == [2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_step_loss")] == list(range(3, 11))
    assert "test_video_auc" in run.data.metrics

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
    p = np.asarray(pyfunc.predict({"video": video, "audio": audio}))
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()
    scorer = load_model(f"models:/{REGISTERED}/1", device="cpu")
    np.testing.assert_allclose(scorer.predict_proba(video, audio), p, rtol=1e-5, atol=1e-6)
    best = load_model(str(tmp_path / "out" / "checkpoints" / "best.json"), device="cpu")
    np.testing.assert_allclose(best.predict_proba(video, audio), p, rtol=1e-5, atol=1e-6)
