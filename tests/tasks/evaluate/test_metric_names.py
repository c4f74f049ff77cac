"""The metric-name contract against the keys training really produces."""

import numpy as np
import pytest

from tasks.evaluate import metric_names as N
from tasks.evaluate import metrics as M
from tasks.train.finish import SUMMARY_METRICS
from tasks.train.run import CURVE_METRICS


def _flat(split: str) -> dict[str, float]:
    """The keys run_training logs for one split: flatten(evaluate_predictions(...)) with baselines and threshold."""
    ids = ["a", "a", "b", "c", "c", "d"]
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.2, 0.3, 0.8, 0.6, 0.7, 0.4])
    out = M.evaluate_predictions(ids, y, p, threshold_val=0.5, y_train=y, y_train_video=np.array([0, 1, 1, 0]))
    return M.flatten(split, out)


@pytest.mark.parametrize("split", N.SPLITS)
def test_every_key_training_logs_parses_and_rebuilds(split):
    for name in _flat(split):
        k = N.parse(name)
        assert k.split == split
        if k.baseline is not None:
            assert N.baseline_key(k.split, k.level, k.baseline, k.metric) == name
        elif k.at_val_threshold:
            assert N.at_threshold_key(k.split, k.level, k.metric) == name
        else:
            assert N.key(k.split, k.level, k.metric) == name


def test_every_monitor_is_a_val_key_training_logs():
    flat = {**_flat(N.VAL), N.VAL_LOSS: 0.0}  # run.py adds val_loss beside the flattened val metrics
    assert set(N.MONITORS) <= set(flat)
    assert {N.best_key(m) for m in N.MONITORS} <= set(_flat(N.BEST_VAL))
    assert {N.prior_key(m) for m in N.MONITORS} <= set(_flat(N.BEST_VAL))


def test_charted_names_are_metric_keys():
    for name in (*CURVE_METRICS, *SUMMARY_METRICS):
        if not name.startswith("train_") and name != "lr":
            N.parse(name)


def test_monitor_helpers():
    assert N.parse_monitor("val_video_log_loss") == ("video", "log_loss")
    assert N.parse_monitor("val_loss") == ("clip", "log_loss")
    assert N.best_key("val_loss") == "best_val_clip_log_loss"
    assert N.prior_key("val_video_auc") == "best_val_baselines_video_prior_auc"
    assert [N.monitor_mode(m) for m in ("val_video_auc", "val_clip_f1", "val_loss", "val_video_eer")] == [
        "max", "max", "min", "min"]  # fmt: skip


@pytest.mark.parametrize("bad", ["val_video_auroc", "best_val_video_auc", "test_video_auc", "val_video_n", "loss"])
def test_a_misspelled_or_non_val_monitor_is_refused_in_one_line(bad):
    with pytest.raises(ValueError, match=f"unknown monitor '{bad}'; known: val_loss, val_video_auc") as e:
        N.check_monitor(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", ["auc", "val_auc", "val_video_", "test_baselines_video_median_auc", "val_frame_auc"])
def test_parse_refuses_what_is_no_metric_key(bad):
    with pytest.raises(ValueError, match="is no metric key"):
        N.parse(bad)


def test_every_metric_has_one_label_and_binary_metrics_computes_every_metric():
    assert list(N.LABELS) == list(N.METRICS) and all(N.LABELS.values())
    scores = M.binary_metrics(np.array([0, 1, 0, 1]), np.array([0.2, 0.9, 0.6, 0.4]))
    assert set(N.METRICS) <= set(scores)


def test_the_hand_made_baselines_are_the_statistics_and_their_keys_parse():
    from tasks.evaluate.handmade import STATISTICS

    assert tuple(STATISTICS) == N.HANDMADE and set(N.HANDMADE_LABELS) == set(N.HANDMADE)
    k = N.parse("test_baselines_video_lip_sync_auc")
    assert (k.split, k.level, k.baseline, k.metric) == ("test", "video", "lip_sync", "auc")
    assert N.baseline_key("best_val", "clip", "sharpness", "eer") == "best_val_baselines_clip_sharpness_eer"
    with pytest.raises(ValueError, match="baseline must be one of"):
        N.baseline_key("test", "video", "blur", "auc")


def test_the_table_gives_every_metric_its_labels_and_the_direction_binary_metrics_has():
    assert [m.name for m in N.TABLE] == list(N.METRICS) == list(N.SHORT_LABELS) and all(N.SHORT_LABELS.values())
    y = np.array([0, 0, 1, 1, 0, 1])
    right, wrong = np.array([0.1, 0.3, 0.8, 0.9, 0.2, 0.7]), np.array([0.9, 0.7, 0.2, 0.1, 0.8, 0.3])
    good, bad = M.binary_metrics(y, right), M.binary_metrics(y, wrong)
    for m in N.METRICS:  # better predictions score higher on MAX_METRICS, lower on the others
        assert (good[m] > bad[m]) == (m in N.MAX_METRICS), m


def test_the_ranking_metrics_are_those_one_class_labels_leave_undefined_and_the_statistics_have():
    from tasks.evaluate.handmade import RANK_METRICS as STATISTIC_METRICS

    one_class = M.binary_metrics(np.array([0, 0, 0]), np.array([0.2, 0.5, 0.7]))
    assert tuple(m for m in N.METRICS if np.isnan(one_class[m])) == N.RANK_METRICS == M.ONE_CLASS_NAN
    assert set(N.RANK_METRICS) == set(STATISTIC_METRICS) & set(N.METRICS)


def test_every_selection_of_metrics_elsewhere_names_metrics_of_the_table():
    from tasks.evaluate.experiments import TABLE_METRICS
    from tasks.evaluate.registry import _CARD_METRICS
    from tasks.evaluate.videos import REPORTED

    assert set(TABLE_METRICS) | set(REPORTED) | {m for m, _ in _CARD_METRICS} <= set(N.METRICS)
