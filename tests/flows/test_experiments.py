"""cv-avff and ablate-avff for real: Prefect test server, sqlite MLflow, tiny synthetic shards (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.synthetic.shards import write_synthetic_shards


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns
    mlflow.MlflowClient(uri).create_experiment("avff-exp", artifact_location=str(tmp_path / "artifacts"))
    yield uri
    mlflow.set_tracking_uri(None)


def _base(tmp_path, uri, **kw):
    from tasks.train.settings import TrainSettings

    data = str(tmp_path / "data")
    write_synthetic_shards(data, videos={"train": 10, "val": 5, "test": 5}, shards={"train": 2, "val": 1, "test": 1})
    return TrainSettings(data=data, output_dir=str(tmp_path / "out"), overrides={"num_slices": 2},
                         stages="classify", epochs=1, batch_size=8, lr=1e-3, num_workers=0, shuffle_buffer=8,
                         device="cpu", experiment="avff-exp", tracking_uri=uri, **kw)  # fmt: skip


def _children(client, parent_id: str):
    exp = client.get_experiment_by_name("avff-exp").experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


@pytest.mark.slow  # starts a Prefect server
def test_ablation_writes_the_comparison_into_the_parent_run(prefect_server, mlflow_store, tmp_path):
    import mlflow

    from flows.experiments import AblationConfig, ablate_avff

    variants = {"concat": {"fusion": "avff_concat"}, "video": {"fusion": "video_only"}}
    config = AblationConfig(base=_base(tmp_path, mlflow_store), variants=variants)
    out = ablate_avff(config)

    client = mlflow.MlflowClient(mlflow_store)
    children = _children(client, out["run_id"])
    assert sorted(r.info.run_id for r in children) == sorted(out["child_run_ids"]) and len(children) == 2
    by_variant = {r.data.tags["avff.variant"]: r for r in children}
    assert by_variant["concat"].data.params["model.fusion"] == "avff_concat"
    assert by_variant["video"].data.params["model.fusion"] == "video_only"
    assert all(r.info.status == "FINISHED" and "best_val_video_auc" in r.data.metrics for r in children)
    listing = {f.path for f in client.list_artifacts(out["run_id"], "ablation")}
    assert {"ablation/comparison.md", "ablation/comparison.png", "ablation/runs.json"} <= listing
    table = Path(client.download_artifacts(out["run_id"], "ablation/comparison.md", str(tmp_path))).read_text()
    rows = ("| concat | variant | 1 |", "| video | variant | 1 |", "| prior | baseline |", "| majority | baseline |")
    assert all(row in table for row in rows)
    parent = client.get_run(out["run_id"])
    assert parent.data.tags["avff.experiment"] == "ablation" and "concat_auc_mean" in parent.data.metrics
    assert client.get_metric_history(out["run_id"], "video_log_loss_mean")[0].step == 0
    assert not client.search_registered_models()  # experiments compare; only train-avff registers


@pytest.mark.slow  # starts a Prefect server
def test_three_fold_cv_gives_three_children_and_mean_std_in_the_parent(prefect_server, mlflow_store, tmp_path):
    import mlflow

    from flows.experiments import CVConfig, cv_avff

    out = cv_avff(CVConfig(train=_base(tmp_path, mlflow_store), folds=[0, 1, 2], max_parallel=2))

    client = mlflow.MlflowClient(mlflow_store)
    children = _children(client, out["run_id"])
    assert len(children) == 3 and {r.data.tags["avff.fold"] for r in children} == {"0", "1", "2"}
    parent = client.get_run(out["run_id"]).data.metrics
    aucs = [r.data.metrics["best_val_video_auc"] for r in children]
    assert parent["cv_mean_best_val_video_auc"] == pytest.approx(sum(aucs) / 3)
    assert "cv_std_best_val_video_log_loss" in parent and out["folds"] == [0, 1, 2]
    assert not any(k.startswith("test_") for r in children for k in r.data.metrics)  # test never touched
    assert all(Path(tmp_path / "out" / f"fold-{k}" / "predictions" / "val.parquet").exists() for k in range(3))
    summary = client.download_artifacts(out["run_id"], "cv_summary.md", str(tmp_path))
    assert "| **mean ± std** |" in Path(summary).read_text()


def test_variants_may_not_move_what_the_experiment_owns(tmp_path):
    from flows.experiments import AblationConfig

    base = _base(tmp_path, "sqlite:///unused.db")
    with pytest.raises(ValueError, match="may not override"):
        AblationConfig(base=base, variants={"a": {"seed": 3}})
    with pytest.raises(ValueError, match="must match"):
        AblationConfig(base=base, variants={"a b": {}})
    cfg = AblationConfig(base=base, variants={"drop": {"overrides": {"dropout": 0.2}, "mix": {"mixup_alpha": 0.2}}},
                         seeds=[0, 1])  # fmt: skip
    v = cfg.variant_config("drop", 1)
    assert v.overrides == {"num_slices": 2, "dropout": 0.2} and v.mix.mixup_alpha == 0.2 and v.seed == 1
    assert v.output_dir.endswith("drop/seed-1") and v.log_checkpoints is False


def test_cli_flags_build_the_same_configs_the_flows_take(tmp_path, monkeypatch):
    import argparse

    monkeypatch.chdir(tmp_path)  # --data d must look like an ingest output: the flag is checked while parsing
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.parquet").touch()

    from flows.cli import experiments as cli_experiments, train as cli_train
    from flows.cli.experiments import ablation_config, cv_config
    from flows.cli.train import train_config
    from flows.experiments import AblationConfig, CVConfig
    from tasks.train.settings import TrainSettings

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    for add, _ in {**cli_train.COMMANDS, **cli_experiments.COMMANDS}.values():
        add(sub)
    plain = parser.parse_args(["train", "--data", "d", "--out", "o"])
    assert train_config(plain) == TrainSettings(data="d", output_dir="o")  # no switch moves a default
    args = parser.parse_args([
        "ablate", "--data", "d", "--out", "o", "--video-augment", "light", "--audio-augment", '{"noise_p": 0.5}',
        "--mixup-alpha", "0.2", "--mix", '{"prob": 0.5}', "--class-weight", "prior", "--fusion", "late",
        "--variant", 'focal={"loss": "focal"}', "--variant", "base={}", "--seeds", "0", "1",
    ])  # fmt: skip
    config = train_config(args)
    assert config.video_augment.hflip == 0.5 and config.audio_augment.noise_p == 0.5
    assert (config.mix.mixup_alpha, config.mix.prob) == (0.2, 0.5) and config.class_weight == "prior"
    assert config.fusion == "late"
    assert ablation_config(args, config) == AblationConfig(  # the base logs checkpoints as the ablation says
        base=config.replace(log_checkpoints=False), variants={"focal": {"loss": "focal"}, "base": {}}, seeds=[0, 1]
    )
    cv = parser.parse_args(["cv", "--data", "d", "--out", "o", "--folds", "0", "2", "--max-parallel", "2"])
    assert cv_config(cv, train_config(cv)) == CVConfig(train=TrainSettings(data="d", output_dir="o", log_checkpoints=False), folds=[0, 2],
                                                       max_parallel=2)  # fmt: skip
    with pytest.raises(SystemExit):  # cv and ablate set fold and log_checkpoints per run: no such flags
        parser.parse_args(["ablate", "--data", "d", "--out", "o", "--fold", "1"])
