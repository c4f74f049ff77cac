import math

import numpy as np
import pytest
from sklearn import metrics as skm

from tasks.evaluate.metrics import (
    PROB_EPS,
    aggregate_by_video,
    auc_or_nan,
    all_fake_f1,
    baselines,
    binary_entropy,
    binary_metrics,
    bootstrap_auc_ci,
    check_monitor_defined,
    choose_threshold,
    equal_error_rate,
    evaluate_predictions,
    flatten,
    group_bootstrap,
    paired_auc_difference,
    seed_mean_auc,
)


@pytest.fixture
def random_preds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    # informative but noisy: FAKE clips score higher on average
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, 300), 0, 1)
    return y, p


def test_binary_metrics_match_sklearn(random_preds):
    y, p = random_preds
    thr = 0.55
    pred = (p >= thr).astype(int)
    m = binary_metrics(y, p, threshold=thr)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
    assert (m["n"], m["n_pos"], m["threshold"]) == (300, y.sum(), thr)


def test_log_loss_clips_certain_mistakes():
    m = binary_metrics([1, 0], [0.0, 1.0])
    assert m["log_loss"] == pytest.approx(-math.log(1e-7))


def test_eer_perfect_random_and_interpolated():
    y = np.array([0] * 50 + [1] * 50)
    assert equal_error_rate(y, np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)]) == 0.0
    rng = np.random.default_rng(1)
    y_big = rng.integers(0, 2, 20000)
    assert equal_error_rate(y_big, rng.uniform(size=20000)) == pytest.approx(0.5, abs=0.02)
    # scores 0.1,0.4 (REAL) 0.35,0.8 (FAKE): ROC (0,.5)->(.5,.5) crosses fpr=fnr at 0.5
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5)
    # EER lies between fpr and fnr at every ROC point, equal where they cross
    y, p = np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.5, 0.7, 0.4, 0.8, 0.9])
    eer = equal_error_rate(y, p)
    fpr, tpr, _ = skm.roc_curve(y, p)
    assert min(np.maximum(fpr, 1 - tpr)) >= eer >= max(np.minimum(fpr, 1 - tpr)[1:-1])
    assert binary_metrics(y, p)["eer"] == eer


def test_one_class_gives_nan_not_crash():
    m = binary_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert math.isnan(m["auc"]) and math.isnan(m["average_precision"]) and math.isnan(m["eer"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert bootstrap_auc_ci([0, 0], [0.1, 0.2]) == (pytest.approx(math.nan, nan_ok=True),) * 2


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        binary_metrics([0, 1], [0.5])
    with pytest.raises(ValueError):
        binary_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        binary_metrics([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError):
        binary_metrics([], [])


def test_choose_threshold(random_preds):
    y, p = random_preds
    # brute force over every candidate threshold, vectorised: pred[i, j] = p[j] >= t_i
    cand = np.unique(p)
    pred = p[None, :] >= cand[:, None]
    tp = (pred & (y == 1)).sum(1)
    f1 = 2 * tp / (pred.sum(1) + y.sum())
    youden = tp / y.sum() - (pred & (y == 0)).sum(1) / (y == 0).sum()
    t_f1 = choose_threshold(y, p, "f1")
    assert skm.f1_score(y, (p >= t_f1).astype(int)) == pytest.approx(f1.max())
    t_j = choose_threshold(y, p, "youden")
    assert youden[cand == t_j][0] == pytest.approx(youden.max())
    sep_y, sep_p = [0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]
    for crit in ("f1", "youden", "eer"):
        t = choose_threshold(sep_y, sep_p, crit)
        assert 0.2 < t <= 0.7, crit  # every criterion separates a separable set
    with pytest.raises(ValueError):
        choose_threshold(y, p, "accuracy")
    with pytest.raises(ValueError):
        choose_threshold([1, 1], [0.3, 0.6])


def test_aggregate_by_video():
    ids = ["b", "a", "b", "c", "a", "b"]
    y = [1, 0, 1, 1, 0, 1]
    p = [0.9, 0.2, 0.6, 0.5, 0.4, 0.3]
    vid, yv, pv = aggregate_by_video(ids, y, p)
    assert vid.tolist() == ["a", "b", "c"]
    assert yv.tolist() == [0, 1, 1]
    np.testing.assert_allclose(pv, [0.3, 0.6, 0.5])
    np.testing.assert_allclose(aggregate_by_video(ids, y, p, how="max")[2], [0.4, 0.9, 0.5])
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    sigmoid_mean_logit = lambda qs: 1 / (1 + np.exp(-np.mean(logit(np.array(qs)))))  # noqa: E731
    expected = [sigmoid_mean_logit([0.2, 0.4]), sigmoid_mean_logit([0.9, 0.6, 0.3]), 0.5]
    np.testing.assert_allclose(aggregate_by_video(ids, y, p, how="logit_mean")[2], expected)
    with pytest.raises(ValueError, match="both labels"):
        aggregate_by_video(["a", "a"], [0, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        aggregate_by_video(ids, y, p, how="median")


def test_baselines_prior_and_majority():
    y_train = np.array([1] * 80 + [0] * 20)  # prior 0.8
    y_eval = np.array([1] * 6 + [0] * 4)  # eval FAKE fraction 0.6
    b = baselines(y_train, y_eval)
    assert b["prior"]["auc"] == 0.5
    # cross-entropy of the train prior q on eval labels with FAKE fraction f:
    # -(f ln q + (1 - f) ln(1 - q)) = -(0.6 ln 0.8 + 0.4 ln 0.2)
    expected = -(0.6 * math.log(0.8) + 0.4 * math.log(0.2))
    assert b["prior"]["log_loss"] == pytest.approx(expected)
    assert binary_entropy(0.8, y_eval) == pytest.approx(expected)
    # majority says FAKE with certainty: 4 mistakes cost -ln(1e-7) each
    assert b["majority"]["log_loss"] == pytest.approx(0.4 * -math.log(PROB_EPS), rel=1e-6)
    assert b["majority"]["accuracy"] == pytest.approx(0.6)
    assert b["majority"]["f1"] == pytest.approx(all_fake_f1(10, 6)) == pytest.approx(0.75)
    assert baselines([0, 0, 1], y_eval)["majority"]["recall"] == 0.0


def test_bootstrap_ci_is_seeded_and_brackets_auc(random_preds):
    y, p = random_preds
    ci = bootstrap_auc_ci(y, p, n_resamples=100, seed=3)
    assert ci == bootstrap_auc_ci(y, p, n_resamples=100, seed=3)
    assert ci[0] < skm.roc_auc_score(y, p) < ci[1]


def test_evaluate_predictions_and_flatten():
    ids = np.repeat([f"v{i}" for i in range(20)], 3)  # 20 videos x 3 clips
    y = np.repeat([0] * 8 + [1] * 12, 3)
    rng = np.random.default_rng(2)
    p = np.clip(0.4 * y + rng.uniform(0, 0.6, len(y)), 0, 1)
    # train: 2 videos, one REAL of 1 clip and one FAKE of 3: clip prior 0.75, video prior 0.5
    out = evaluate_predictions(ids, y, p, threshold_val=0.4, y_train=[1, 1, 1, 0], y_train_video=[1, 0])
    assert set(out) == {"clip", "video", "clip@val_threshold", "video@val_threshold", "baselines"}
    assert out["clip"]["n"] == 60 and out["video"]["n"] == 20 and out["video"]["n_pos"] == 12
    _, yv, pv = aggregate_by_video(ids, y, p)
    assert out["video"]["auc"] == pytest.approx(skm.roc_auc_score(yv, pv))
    assert out["video@val_threshold"]["threshold"] == 0.4
    assert out["baselines"]["video"]["prior"]["log_loss"] == pytest.approx(binary_entropy(0.5, yv))
    assert out["baselines"]["clip"]["prior"]["log_loss"] == pytest.approx(binary_entropy(0.75, y))
    flat = flatten("test", out)
    assert flat["test_video_auc"] == out["video"]["auc"]
    assert flat["test_video_at_val_threshold_f1"] == out["video@val_threshold"]["f1"]
    assert flat["test_baselines_clip_prior_log_loss"] == out["baselines"]["clip"]["prior"]["log_loss"]
    assert all("@" not in k for k in flat)
    assert flatten("val_video", {"auc": 0.8, "note": "x"}) == {"val_video_auc": 0.8}
    assert set(evaluate_predictions(ids, y, p)) == {"clip", "video"}


def _grouped_preds(n_groups=60, per_group=7, seed=0):
    """A REAL and its fakes per group; the fakes of one original share how well they were made
    (a per-group offset on their score), so they are correlated evidence, not independent."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = np.tile([0] + [1] * (per_group - 1), n_groups)
    offset = rng.normal(0, 1.0, n_groups)[groups] * y
    score = 0.6 * y + offset + rng.normal(0, 0.3, len(y))
    return y, 1 / (1 + np.exp(-score)), groups


def test_group_bootstrap_resamples_whole_groups():
    seen = []
    group_bootstrap(lambda idx: seen.append(np.sort(idx)) or 0.0, ["b", "a", "b", "c"], n_resamples=30, seed=1)
    members = {"a": [1], "b": [0, 2], "c": [3]}
    for idx in seen:
        assert len(idx) >= 3
        counts = np.bincount(idx, minlength=4)
        assert counts[0] == counts[2]  # the two videos of group b always come together
        assert all(len({counts[i] for i in videos}) == 1 for videos in members.values())


def test_group_bootstrap_interval_is_wider_than_the_video_bootstrap_on_correlated_videos():
    y, p, groups = _grouped_preds()
    auc = skm.roc_auc_score(y, p)
    by_video = bootstrap_auc_ci(y, p, n_resamples=400, seed=0)
    by_group = bootstrap_auc_ci(y, p, groups=groups, n_resamples=400, seed=0)
    assert by_group[0] < auc < by_group[1]
    assert by_group[1] - by_group[0] > 1.3 * (by_video[1] - by_video[0])
    assert bootstrap_auc_ci(y, p, groups=np.arange(len(y)), n_resamples=50, seed=4) == bootstrap_auc_ci(
        y, p, n_resamples=50, seed=4
    )  # one group per video = the video bootstrap


def test_paired_auc_difference_tells_a_real_gain_from_noise():
    y, p, groups = _grouped_preds(seed=1)
    rng = np.random.default_rng(5)
    better = np.clip(p + 0.25 * y, 0, 1)
    noisy_twin = np.clip(p + rng.normal(0, 0.01, len(p)), 0, 1)
    gain = paired_auc_difference(y, better, p, groups, n_resamples=300, seed=0)
    assert gain["diff"] == pytest.approx(skm.roc_auc_score(y, better) - skm.roc_auc_score(y, p))
    assert gain["lo"] > 0 and gain["p_le_0"] < 0.025
    tie = paired_auc_difference(y, noisy_twin, p, groups, n_resamples=300, seed=0)
    assert tie["lo"] < 0 < tie["hi"]


def test_a_monitor_undefined_on_one_class_val_is_refused():
    check_monitor_defined("val_video_auc", 3, 5)
    check_monitor_defined("val_video_log_loss", 0, 5)  # a loss is defined on one class
    with pytest.raises(ValueError, match="holds 0 REAL and 5 FAKE"):
        check_monitor_defined("val_video_auc", 0, 5)
    with pytest.raises(ValueError, match="undefined"):
        check_monitor_defined("val_clip_eer", 4, 0)
    with pytest.raises(ValueError, match="undefined"):
        check_monitor_defined("val_video_log_loss", 0, 0)


def test_seed_mean_auc_averages_seeds_and_pairs_models():
    runs = [_grouped_preds(n_groups=30, seed=s) for s in range(3)]
    out = seed_mean_auc(runs, n_resamples=200, seed=0)
    per_seed = [skm.roc_auc_score(y, p) for y, p, _ in runs]
    assert out["per_seed"] == pytest.approx(per_seed) and out["mean"] == pytest.approx(np.mean(per_seed))
    assert out["lo"] < out["mean"] < out["hi"]
    one = seed_mean_auc(runs[:1], n_resamples=200, seed=0)
    assert one["hi"] - one["lo"] > out["hi"] - out["lo"]  # three evaluation sets pin the mean down better than one
    paired = seed_mean_auc([(y, np.clip(p + 0.25 * y, 0, 1), p, g) for y, p, g in runs], n_resamples=200)
    assert paired["lo"] > 0 and paired["p_le_0"] == 0.0
    same = seed_mean_auc([(y, p, p, g) for y, p, g in runs], n_resamples=50)
    assert same["mean"] == same["lo"] == same["hi"] == 0.0


def test_seed_mean_auc_interval_carries_the_seeds_spread():
    """Three seeds whose models differ (signal 0.3, 1.2, 3.0) on large evaluation sets: resampling groups
    within each fixed seed alone gives an interval far narrower than the seeds' spread (before: about +-0.02)."""
    runs = []
    for s, signal in enumerate((0.3, 1.2, 3.0)):
        rng = np.random.default_rng(s)
        g = np.repeat(np.arange(300), 7)
        y = np.tile([0] + [1] * 6, 300)
        runs.append((y, 1 / (1 + np.exp(-(signal * y + rng.normal(0, 1.0, len(y))))), g))
    out = seed_mean_auc(runs, n_resamples=300, seed=0)
    lo_seed, hi_seed = min(out["per_seed"]), max(out["per_seed"])
    assert hi_seed - lo_seed > 0.3
    assert out["lo"] < out["mean"] - 0.1 and out["hi"] > out["mean"] + 0.1  # the seeds' spread is in it
    assert lo_seed - 0.02 <= out["lo"] and out["hi"] <= hi_seed + 0.02  # a mean of seeds stays within their range
    y, p, g = runs[0]
    one = seed_mean_auc(runs[:1], n_resamples=300, seed=0)  # one run: exactly its group bootstrap
    assert (one["lo"], one["hi"]) == pytest.approx(bootstrap_auc_ci(y, p, groups=g, n_resamples=300, seed=0))


def test_the_bootstraps_fast_auc_equals_sklearn_with_and_without_ties():
    rng = np.random.default_rng(0)
    for n in (2, 5, 40, 500):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        for p in (rng.uniform(0, 1, n), np.round(rng.uniform(0, 1, n), 1), np.full(n, 0.3)):  # ties, all tied
            assert auc_or_nan(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert math.isnan(auc_or_nan(np.array([1, 1]), np.array([0.2, 0.3])))


def test_a_video_of_several_faces_scores_as_its_most_fake_face():
    """Video 'a': face 0 REAL (clips 0.1, 0.3), face 1 FAKE (0.8, 0.6); 'b': one face, REAL."""
    ids = ["a", "a", "a", "a", "b", "b"]
    faces = [0, 0, 1, 1, 0, 0]
    y = [0, 0, 1, 1, 0, 0]
    p = [0.1, 0.3, 0.8, 0.6, 0.2, 0.4]
    vid, yv, pv = aggregate_by_video(ids, y, p, faces=faces)
    assert vid.tolist() == ["a", "b"] and yv.tolist() == [1, 0]
    np.testing.assert_allclose(pv, [0.7, 0.3])  # max(mean(0.1, 0.3), mean(0.8, 0.6)); b's mean
    _, _, pmax = aggregate_by_video(ids, y, p, how="max", faces=faces)
    np.testing.assert_allclose(pmax, [0.8, 0.4])
    with pytest.raises(ValueError, match="both labels"):  # without faces, a's clips disagree
        aggregate_by_video(ids, y, p)
    # all faces 0: exactly the single-face aggregation
    np.testing.assert_allclose(
        aggregate_by_video(ids[4:], y[4:], p[4:], faces=[0, 0])[2], aggregate_by_video(ids[4:], y[4:], p[4:])[2]
    )
    video = evaluate_predictions(ids, y, p, faces=faces)["video"]
    assert video["auc"] == 1.0
