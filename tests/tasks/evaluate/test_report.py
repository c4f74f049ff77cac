import dataclasses
import re

import numpy as np
import pytest

from tasks.evaluate.calibration import Calibration, Platt, fit_platt, split_calibration
from tasks.evaluate.registry import GateNumbers, prior_gate
from tasks.evaluate.metrics import aggregate_by_video, all_fake_f1, evaluate_predictions
from tasks.evaluate.report import ReportInputs, diagnose_curves, split_stats, write_training_report

OVERFIT = ([0.690, 0.550, 0.420, 0.310, 0.220, 0.150], [0.650, 0.520, 0.470, 0.500, 0.560, 0.610])
FLAT = ([0.693, 0.692, 0.691, 0.690, 0.690], [0.694, 0.693, 0.693, 0.692, 0.692])
GOOD = ([0.690, 0.500, 0.400, 0.350, 0.320], [0.660, 0.520, 0.450, 0.420, 0.410])


def _history(train, val, auc_start=0.6):
    return [
        {
            "epoch": e,
            "stage": "finetune",
            "train_loss": t,
            "val_loss": v,
            "val_video_auc": round(auc_start + 0.03 * e, 3),
            "val_video_log_loss": v,
            "val_video_f1": 0.7,
            "lr": 1e-4 * 0.5**e,
        }
        for e, (t, v) in enumerate(zip(train, val), start=1)
    ]


def _predictions(kind, n_videos=40, clips=3, fake_frac=0.5, seed=0):
    rng = np.random.default_rng(seed)
    y_vid = (np.arange(n_videos) < int(n_videos * fake_frac)).astype(int)
    ids = np.repeat([f"vid{i:03d}" for i in range(n_videos)], clips)
    y = np.repeat(y_vid, clips)
    if kind == "good":
        p = np.clip(0.1 + 0.7 * y + rng.uniform(-0.1, 0.1, len(y)), 0, 1)
    else:  # "prior": the train FAKE fraction for every clip
        p = np.full(len(y), fake_frac)
    return ids, y, p


def _inputs(history, kind="good", fake_frac=0.5, **kw):
    ids, y, p = _predictions(kind, fake_frac=fake_frac)
    n_train_fake = int(100 * fake_frac)
    y_train = np.r_[np.ones(n_train_fake), np.zeros(100 - n_train_fake)]
    test = evaluate_predictions(ids, y, p, threshold_val=0.45, y_train=y_train)
    _, yv, pv = aggregate_by_video(ids, y, p)
    best = min((r for r in history if "val_loss" in r), key=lambda r: r["val_loss"])["epoch"]
    args = dict(
        history=history,
        dataset={
            "train": {
                "videos_real": 100 - n_train_fake,
                "videos_fake": n_train_fake,
                "clips_real": 3 * (100 - n_train_fake),
                "clips_fake": 3 * n_train_fake,
                "groups": 37,
            },
            "test": split_stats(ids, y, groups=[i[:5] for i in ids]),
        },
        config={"model": {"preset": "tiny", "dropout": 0.1}},
        patience=3,
        max_epochs=6,
        test=test,
        early_stopped=False,
        best_epoch=best,
        monitor="val_loss",
        monitor_mode="min",
        y_test_video=yv,
        p_test_video=pv,
        n_bootstrap=50,
    )
    args.update(kw)
    return ReportInputs(**args)


def test_overfitting_history_is_diagnosed_with_its_numbers():
    text = write_training_report(_inputs(_history(*OVERFIT), early_stopped=True))
    assert "**Diagnosis: overfitting**" in text
    # val min 0.470 at epoch 3, ends 0.610 (+29.8%); train 0.420 -> 0.150 after it (-64.3%)
    for number in ("0.470", "epoch 3", "0.610", "29.8%", "0.420", "0.150", "64.3%"):
        assert number in text, number
    assert "Early stopping triggered after epoch 6, 3 epochs after the best epoch 3 (patience 3)" in text
    assert "**Overfitting** (val loss +29.8%" in text
    d = diagnose_curves(_history(*OVERFIT))
    assert d.verdict == "overfitting" and d.val_min_epoch == 3
    assert d.val_rise == pytest.approx(0.61 / 0.47 - 1)


def test_flat_history_is_underfitting():
    text = write_training_report(_inputs(_history(*FLAT)))
    assert "**Diagnosis: underfitting**" in text
    assert "fell only 0.4%" in text  # (0.693 - 0.690) / 0.693
    assert "**Underfitting**" in text
    assert "Early stopping did not trigger: training ran 5 epochs of max_epochs 6." in text


def test_good_history_is_neither_and_model_beats_baselines():
    text = write_training_report(_inputs(_history(*GOOD)))
    assert "**Diagnosis: neither**" in text
    assert "Overfitting" not in text and "Underfitting" not in text
    assert "Warning" not in text
    assert "AUC 1.000 vs 0.500 for the prior baseline (+0.500)" in text
    assert re.search(r"log loss 0\.\d{3} vs 0\.693 for the prior \(-0\.\d{3}, lower is better\)", text)
    assert "| **5** (best) | finetune | 0.320 | 0.410 |" in text
    assert "Still improving" in text  # best epoch is the last and no early stop
    assert "| model.preset | tiny |" in text


def test_texts_differ_with_histories():
    a = write_training_report(_inputs(_history(*GOOD)))
    b = write_training_report(_inputs(_history(*OVERFIT)))
    scaled = [[round(x * 0.9, 3) for x in GOOD[0]], [round(x * 0.9, 3) for x in GOOD[1]]]
    c = write_training_report(_inputs(_history(*scaled)))
    assert len({a, b, c}) == 3
    assert "0.288" in c and "0.288" not in a  # 0.9 * 0.320: the last train loss is quoted


def test_model_equal_to_prior_triggers_warnings():
    text = write_training_report(_inputs(_history(*GOOD), kind="prior", fake_frac=0.75))
    assert "does not beat the prior baseline" in text
    assert "within noise of chance" in text
    assert "CI [0.500, 0.500] includes 0.5" in text
    # every clip at 0.75 >= 0.5 is called FAKE: F1 is the all-FAKE F1 = 2*30/(40+30)
    assert f"{all_fake_f1(40, 30):.3f}" == "0.857"
    assert "video F1 0.857 equals the all-FAKE predictor's F1 0.857" in text
    assert "**Class imbalance** (train majority class 0.750 > 0.7" in text
    assert text.index("warning(s)") < text.index("## Dataset")  # warnings are surfaced at the top


def test_dataset_section_and_split_stats():
    ids = ["a", "a", "b", "c", "c", "c"]
    stats = split_stats(
        ids, ["FAKE", "FAKE", "REAL", "FAKE", "FAKE", "FAKE"], groups=["g1", "g1", "g1", "g2", "g2", "g2"]
    )
    assert stats == {"videos_real": 1, "videos_fake": 2, "clips_real": 1, "clips_fake": 5, "groups": 2}
    text = write_training_report(_inputs(_history(*GOOD), dataset={"val": stats}))
    assert (
        "- val: 3 videos (1 REAL, 2 FAKE; FAKE fraction 0.667), 6 clips (1 REAL, 5 FAKE; FAKE fraction 0.833), 2 groups."
        in text
    )


def test_short_history_is_not_diagnosed():
    assert diagnose_curves(_history([0.7, 0.6], [0.7, 0.65])).verdict == "insufficient"
    text = write_training_report(_inputs(_history([0.7, 0.6], [0.7, 0.65])))
    assert "**Diagnosis: insufficient.** Only 2 epochs" in text


def test_degenerate_run_reports_without_crashing():
    ids, y = ["a", "b"], [1, 1]  # one-class test set, no baselines, no history
    run = ReportInputs(
        history=[],
        dataset={},
        config={},
        test=evaluate_predictions(ids, y, [0.9, 0.6]),
        early_stopped=False,
        best_epoch=None,
        monitor="val_video_auc",
        y_test_video=np.array(y),
        p_test_video=np.array([0.9, 0.6]),
    )
    text = write_training_report(run)
    assert "The history is empty" in text
    assert "test video AUC CI is undefined (2 videos" in text
    assert "no baselines were computed" in text


def test_the_headline_comes_first_with_interval_and_both_baselines():
    def head(kind):
        ids, y, p = _predictions(kind)
        y_train_video = np.r_[np.ones(50), np.zeros(50)]
        test = evaluate_predictions(ids, y, p, y_train=np.repeat(y_train_video, 3), y_train_video=y_train_video)
        text = write_training_report(_inputs(_history(*GOOD), kind=kind, test=test))
        return text.split("## ")[0]  # everything before the first section

    good = head("good")
    assert "Test, video level (40 videos, 20 FAKE)" in good and "**beats** the prior" in good
    assert re.search(r"\| AUC \| 1\.000 \[1\.000, 1\.000\] \| 0\.500 \| 0\.500 \|", good)  # interval, both baselines
    assert re.search(r"\| log loss \| 0\.\d{3} \| 0\.693 \|", good)
    assert "**does not beat** the prior" in head("prior")


def test_intervals_resample_groups_when_the_groups_are_known():
    run = _inputs(_history(*GOOD))
    groups = [f"g{i % 8}" for i in range(len(run.y_test_video))]  # 40 videos in 8 groups
    text = write_training_report(dataclasses.replace(run, groups_test_video=groups))
    assert "resamples of 8 groups of 40 videos (a REAL and its fakes resampled together)" in text
    assert "bootstrap over groups" in text.split("## ")[0]
    assert "resamples of 40 videos" in write_training_report(run)  # without groups: videos, said so


def test_early_stopping_settings_are_taken_as_passed_never_read_from_the_config():
    history = _history(*OVERFIT)
    config = {"train": {"patience": 99, "epochs": 99}, "model": {"max_epochs": 98}}
    stopped = write_training_report(_inputs(history, config=config, early_stopped=True))
    assert "(patience 3)" in stopped and "99" not in stopped.split("## Training")[1].split("## Curve")[0]
    ran = write_training_report(_inputs(history, config=config, patience=None, max_epochs=None))
    assert "Early stopping did not trigger: training ran 6 epochs." in ran


def test_calibration_section_quotes_the_map_and_the_numbers_or_why_it_is_the_identity():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 600)
    y = (rng.random(600) < 1 / (1 + np.exp(-z))).astype(int)
    val, test = (y[:300], 3 * z[:300]), (y[300:], 3 * z[300:])  # logits over-confident by 3
    platt = fit_platt(*val)
    cal = Calibration(platt, None, {"val": split_calibration(*val, platt), "test": split_calibration(*test, platt)})
    text = write_training_report(_inputs(_history(*GOOD), calibration=cal))
    section = text[text.index("## Calibration") : text.index("## Recommendations")]
    a, b = platt.slope, platt.intercept
    assert f"Platt scaling fitted on 300 val clips (P(FAKE) = sigmoid({a:.3f} · logit {b:+.3f})" in section and a < 1
    assert "over-confident: a slope < 1 softens them" in section and f"an intercept of {b:+.3f}" in section
    s = cal.splits["test"]
    assert (
        f"| test | 300 | {s.nll_before:.3f} | {s.nll_after:.3f} | {s.ece_before:.3f} | {s.ece_after:.3f} |" in section
    )
    assert f"moves the clip log loss {s.nll_after - s.nll_before:+.3f}" in section and s.nll_after < s.nll_before
    no_gain = write_training_report(_inputs(_history(*GOOD), kind="prior", fake_frac=0.75, calibration=cal))
    assert f"even after Platt scaling (slope {a:.3f}, intercept {b:+.3f}): check whether" in no_gain
    assert "calibrate (Platt scaling on val, `calibrate`)" in write_training_report(
        _inputs(_history(*GOOD), kind="prior", fake_frac=0.75)
    )
    one = Calibration(Platt(), "val holds one class only (3 clips, 3 FAKE): no calibration can be fitted",
                      {"val": split_calibration([1, 1, 1], [0.1, 0.2, 0.3], Platt())})  # fmt: skip
    text = write_training_report(_inputs(_history(*GOOD), calibration=one))
    assert "Slope 1, intercept 0 (P(FAKE) left as the model outputs it): val holds one class only (3 clips" in text
    assert "moves the clip log loss" not in text and "## Calibration" not in write_training_report(
        _inputs(_history(*GOOD))
    )


def test_the_report_opens_with_the_gates_decision_number_and_reason():
    refused = prior_gate(GateNumbers(0.4123, 0.4047, (-0.004, 0.021), 40, "2-fold cross-fitted by group"),
                         "val_video_log_loss", "min")  # fmt: skip
    lines = write_training_report(_inputs(_history(*GOOD), gate=refused)).splitlines()
    assert lines[0] == "# AVFF training report" and lines[2] == refused.headline()
    assert lines[2].startswith("**Registry gate: refuse.** Cross-fitted val val_video_log_loss: model 0.4123, prior "
                               "0.4047, difference +0.0076 (95 % group-bootstrap interval [-0.0040, +0.0210]). "
                               "Reason: val_video_log_loss 0.4123 does not beat the prior's 0.4047")  # fmt: skip
    assert not write_training_report(_inputs(_history(*GOOD))).splitlines()[2].startswith("**Registry gate")


def _two_stage_history():
    """One pretrain epoch (it logs pretrain_loss, no train_loss), then the GOOD classify epochs."""
    pre = {"epoch": 1, "stage": "pretrain", "pretrain_loss": 1.234, "lr": 1e-4}
    rest = [{**r, "epoch": r["epoch"] + 1, "stage": "classify"} for r in _history(*GOOD)[:3]]
    return [pre, *rest]


def test_max_epochs_counts_the_epochs_of_the_stage_it_caps_and_the_pretrain_loss_is_shown():
    text = write_training_report(_inputs(_two_stage_history(), max_epochs=3, best_epoch=4))
    # 4 epochs ran in all, 3 of them classify: max_epochs 3 caps those, not the pretrain epoch
    assert "training ran 3 classify epochs of max_epochs 3, after 1 epochs of pretrain." in text
    assert "ran 4 epochs of max_epochs 3" not in text
    pretrain_row = next(line for line in text.splitlines() if line.startswith("| 1 | pretrain |"))
    assert pretrain_row.split(" | ")[2] == "1.234"  # the logged stage-1 loss, not n/a


def test_an_interval_from_one_group_is_undefined_never_a_passed_check():
    run = _inputs(_history(*GOOD), y_val_video=None)
    one = ["g0"] * len(run.y_test_video)
    text = write_training_report(dataclasses.replace(run, groups_test_video=one, y_val_video=run.y_test_video,
                                                     p_val_video=run.p_test_video, groups_val_video=one))  # fmt: skip
    assert "1.000 (interval undefined)" in text.split("## ")[0]
    # the headline said "AUC interval: 95 % bootstrap over groups" above a table saying there is none
    assert "no AUC interval (40 videos in 1 group" in text.split("## ")[0] and "AUC interval: " not in text
    assert "CI [n/a, n/a]" not in text and "resamples of 1 group" not in text
    assert "the test video AUC CI is undefined (40 videos in 1 group" in text
    assert "Val video AUC 95% bootstrap CI undefined (40 videos in 1 group" in text
    recs = text.split("## Recommendations")[1]
    assert "**test video AUC interval undefined**" in recs and "**val video AUC interval undefined**" in recs
    assert "excludes 0.5" not in recs and "[1.000, 1.000]" not in text
    # two groups or more: a real interval, and the check can pass
    two = [f"g{i % 2}" for i in range(len(run.y_test_video))]
    assert "test video AUC 95% CI [" in write_training_report(dataclasses.replace(run, groups_test_video=two))
