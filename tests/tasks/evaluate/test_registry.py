"""The registry's rules as plain functions: the prior gate, the champion, the model card."""

import math

from tasks.evaluate.registry import Gate, champion_verdict, model_card, prior_gate

VAL = {"best_val_video_log_loss": 0.40, "best_val_baselines_video_prior_log_loss": 0.50,
       "best_val_video_auc": 0.81, "best_val_baselines_video_prior_auc": 0.5,
       "best_val_clip_log_loss": 0.70, "best_val_baselines_clip_prior_log_loss": 0.60}  # fmt: skip


def test_prior_gate_compares_the_monitored_metric_with_the_prior_on_val():
    assert prior_gate(VAL, "val_video_log_loss", "min").register  # 0.40 < 0.50
    assert not prior_gate(VAL, "val_video_log_loss", "min", min_improvement=0.2).register  # needs < 0.30
    assert prior_gate(VAL, "val_video_auc", "max").register  # 0.81 > 0.5
    refused = prior_gate(VAL, "val_loss", "min")  # clip log loss 0.70 > 0.60
    assert not refused.register and "does not beat the prior's 0.6000" in refused.reason
    assert prior_gate(VAL, "val_loss", "min", register_if="always").register
    assert not prior_gate(VAL, "val_video_log_loss", "min", register_if="never").register
    assert not prior_gate({"best_val_video_log_loss": math.nan}, "val_video_log_loss", "min").register


def test_champion_moves_only_to_a_better_model_on_the_same_val_set():
    gate = Gate(True, "val_video_log_loss", 0.40, 0.50, "")
    same = {"monitor": "val_video_log_loss", "manifest_sha256": "abc"}
    assert champion_verdict(gate, "min", "abc", None)[0]  # no champion yet
    assert champion_verdict(gate, "min", "abc", {**same, "monitor_value": "0.45"})[0]
    assert not champion_verdict(gate, "min", "abc", {**same, "monitor_value": "0.35"})[0]
    promote, why = champion_verdict(gate, "min", "other", {**same, "monitor_value": "0.45"})
    assert not promote and "not comparable" in why
    assert not champion_verdict(Gate(False, "val_video_log_loss", 0.1, 0.5, ""), "min", "abc", None)[0]


def test_model_card_shows_data_metrics_against_baselines_threshold_and_preprocessing():
    test = {"test_video_auc": 0.79, "test_baselines_video_prior_auc": 0.5, "test_baselines_video_majority_f1": 0.9}
    card = model_card(
        gate=prior_gate(VAL, "val_video_log_loss", "min"), data="/data/shards", manifest_sha256="f" * 64,
        dataset={"train": {"videos_real": 3, "videos_fake": 9, "groups": 3}}, val_metrics=VAL, test_metrics=test,
        threshold=0.42, threshold_criterion="f1", preprocess={"face_size": 224, "require_audio": True},
        model={"preset": "tiny", "best_epoch": 4}, links={"MLflow run": "http://mlflow/#/experiments/1/runs/r"},
    )  # fmt: skip
    assert "| train | 3 | 9 | 3 |" in card and "`/data/shards`" in card
    assert "| model | 0.810 | 0.400 |" in card and "| prior baseline | 0.500 | 0.500 |" in card
    assert "| model | 0.790 |" in card and "| majority baseline | n/a | n/a | n/a | 0.900 |" in card
    assert "P(FAKE) >= 0.4200 (maximises f1 on val videos)" in card
    assert "- face_size: 224" in card and "- MLflow run: http://mlflow/#/experiments/1/runs/r" in card
