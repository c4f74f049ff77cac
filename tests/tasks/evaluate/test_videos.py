import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tasks.evaluate.videos import evaluate_videos, evaluation_markdown, loses_to_prior, prior_warning, undefined


def _rows():
    rng = np.random.default_rng(0)
    rows = [
        {"video_id": f"r{i}", "label": "REAL", "manipulation": None, "p_fake": float(rng.uniform(0, 0.5))}
        for i in range(10)
    ]
    rows += [
        {"video_id": f"a{i}", "label": "FAKE", "manipulation": "face_blend", "p_fake": float(rng.uniform(0.5, 1))}
        for i in range(5)
    ]
    rows += [
        {"video_id": f"b{i}", "label": "FAKE", "manipulation": "audio_swap", "p_fake": float(rng.uniform(0, 1))}
        for i in range(5)
    ]
    rows += [{"video_id": "x", "label": "FAKE", "manipulation": "audio_swap", "p_fake": None}]
    return rows


def test_per_type_rows_are_that_type_against_all_reals():
    rows = _rows()
    result = evaluate_videos(rows)
    blend = result["by_type"]["face_blend"]
    assert (blend["n_real"], blend["n_fake"]) == (10, 5) and blend["auc"] == 1.0
    sub = [r for r in rows if r["p_fake"] is not None and (r["label"] == "REAL" or r["manipulation"] == "audio_swap")]
    expected = roc_auc_score([r["label"] == "FAKE" for r in sub], [r["p_fake"] for r in sub])
    assert result["by_type"]["audio_swap"]["auc"] == pytest.approx(expected)
    assert result["unscored"] == 1 and result["overall"]["n_fake"] == 10


def test_prior_baseline_and_markdown():
    result = evaluate_videos(_rows(), prior=0.5)
    assert result["overall"]["prior_log_loss"] == pytest.approx(np.log(2), abs=1e-3)
    md = evaluation_markdown(result, "t")
    assert "| face_blend | 10 | 5 | 15 | 1.000 | [1.000, 1.000] |" in md and "could not be scored: 1" in md


def test_the_prior_is_never_taken_from_the_evaluated_labels():
    fakes_only = [r for r in _rows() if r["label"] == "FAKE"]
    result = evaluate_videos(fakes_only)  # the old code's prior: this set's FAKE fraction, 1.0 -> "log loss 0.000"
    assert result["prior"] is None
    assert np.isnan(result["overall"]["prior_log_loss"]) and np.isnan(result["overall"]["majority_accuracy"])
    md = evaluation_markdown(result, "t")
    assert "unknown" in md and "never estimated from the evaluated labels" in md
    with pytest.raises(ValueError, match="probability"):
        evaluate_videos(_rows(), prior=1.5)


def test_auc_interval_resamples_groups():
    rows = [dict(r, group=r["video_id"][:1]) for r in _rows()]  # three groups: r, a, b (x is unscored)
    result = evaluate_videos(rows, prior=0.5, n_bootstrap=100)
    assert result["overall"]["n_groups"] == 3
    lo, hi = result["overall"]["auc_lo"], result["overall"]["auc_hi"]
    assert lo <= result["overall"]["auc"] <= hi
    per_video = evaluate_videos(_rows(), prior=0.5, n_bootstrap=100)["overall"]
    assert per_video["n_groups"] == 20 and (lo, hi) != (per_video["auc_lo"], per_video["auc_hi"])


def test_a_set_of_fakes_only_reports_its_detection_rate_at_the_models_threshold():
    fakes = [r for r in _rows() if r["label"] == "FAKE" and r["p_fake"] is not None]
    result = evaluate_videos(fakes, threshold=0.7, n_bootstrap=20)
    g = result["overall"]
    caught = sum(r["p_fake"] >= 0.7 for r in fakes)
    assert 0 < caught < len(fakes)  # the threshold matters: 0.5 would catch another count
    assert g["fake_called_fake"] == caught and g["detection_rate"] == pytest.approx(caught / len(fakes))
    assert g["accuracy"] == pytest.approx(caught / len(fakes)) and g["threshold"] == 0.7
    assert g["mean_p_fake"] == pytest.approx(np.mean([r["p_fake"] for r in fakes]))
    assert np.isfinite(g["log_loss"]) and np.isnan(g["auc"]) and np.isnan(g["false_positive_rate"])
    why = undefined(g, result["prior"])
    assert {"auc", "auc_lo", "auc_hi", "average_precision", "false_positive_rate", "prior_log_loss"} <= set(why)
    assert "detection_rate" not in why and "log_loss" not in why and "only FAKE" in why["auc"]
    md = evaluation_markdown(result, "t")
    assert f"**Detection rate: {caught} of {len(fakes)} FAKE videos called FAKE" in md
    assert "Undefined here (n/a): AUC, its 95% interval, AP, because they rank FAKE against REAL videos" in md
    assert "FAKE when P(FAKE) >= 0.700" in md


def test_a_set_of_reals_only_reports_its_false_positive_rate_and_compares_defined_log_losses():
    reals = [r for r in _rows() if r["label"] == "REAL"]
    result = evaluate_videos(reals, prior=0.8, threshold=0.3, n_bootstrap=20)
    g = result["overall"]
    flagged = sum(r["p_fake"] >= 0.3 for r in reals)
    assert g["real_called_fake"] == flagged and g["false_positive_rate"] == pytest.approx(flagged / len(reals))
    assert np.isnan(g["detection_rate"]) and "detection_rate" in undefined(g, 0.8)
    assert "prior_log_loss" not in undefined(g, 0.8)  # the prior is known: its log loss is defined on one class
    assert g["prior_log_loss"] == pytest.approx(-np.log(0.2), abs=1e-3)
    assert loses_to_prior(g) == (not g["log_loss"] < g["prior_log_loss"])
    assert "**False-positive rate:" in evaluation_markdown(result, "t")


def test_loses_to_prior_never_fires_on_undefined_numbers():
    fakes = [r for r in _rows() if r["label"] == "FAKE"]
    result = evaluate_videos(fakes, threshold=0.5, n_bootstrap=0)  # no prior: its log loss is NaN
    assert not loses_to_prior(result["overall"]) and prior_warning(result) is None
    assert not loses_to_prior({"log_loss": None, "prior_log_loss": 0.3})
    confident_wrong = [{"video_id": "f", "label": "FAKE", "p_fake": 0.01}]
    losing = evaluate_videos(confident_wrong, prior=0.8, n_bootstrap=0)
    assert loses_to_prior(losing["overall"]) and "log loss 4.6052 >= 0.2231" in prior_warning(losing)


def test_unlabelled_and_unscored_videos_are_listed_not_measured():
    rows = _rows() + [{"video_id": "nolabel", "label": None, "manipulation": None, "p_fake": 0.9, "verdict": "FAKE"}]
    result = evaluate_videos(rows, n_bootstrap=0)
    assert result["unlabelled"] == 1 and result["overall"]["n_real"] + result["overall"]["n_fake"] == 20
    md = evaluation_markdown(result, "t")
    assert "| nolabel | 0.900 | FAKE |" in md and "## Scored without a label (no metadata entry)" in md
    assert "## Could not be scored" in md and "| x | FAKE |" in md
    with pytest.raises(ValueError, match="no labelled video"):
        evaluate_videos([rows[-1]])


def test_the_hand_made_statistics_are_reported_beside_the_model_per_type_and_overall():
    """Issue 25: evaluate reports the baselines training reports, each video scoring its clips' mean
    (NaN clips skipped), per type against all reals; n/a where undefined, with the reason."""
    rows = [r for r in _rows() if r["p_fake"] is not None]
    rng = np.random.default_rng(1)
    for r in rows:  # lip_sync separates face_blend from reals perfectly; sharpness is noise; 3 clips a video
        high = r["manipulation"] == "face_blend"
        r["handmade"] = {"lip_sync": [float(rng.uniform(1, 2) if high else rng.uniform(0, 1)) for _ in range(3)],
                         "sharpness": [float(rng.normal()), float("nan"), float(rng.normal())]}  # fmt: skip
    result = evaluate_videos(rows, prior=0.5)
    blend, overall = result["by_type"]["face_blend"], result["overall"]
    assert blend["lip_sync_auc"] == 1.0 and blend["prior_auc"] == 0.5
    y = [r["label"] == "FAKE" for r in rows]
    sharp = [np.nanmean(r["handmade"]["sharpness"]) for r in rows]
    assert overall["sharpness_auc"] == pytest.approx(roc_auc_score(y, sharp))
    lip = [np.mean(r["handmade"]["lip_sync"]) for r in rows]
    assert overall["lip_sync_auc"] == pytest.approx(roc_auc_score(y, lip))
    md = evaluation_markdown(result, "t")
    assert "| videos | model AUC | prior (constant P(FAKE)) AUC | hand-made lip-sync statistic AUC |" in md
    assert f"| face_blend | 1.000 | 0.500 | 1.000 | {blend['sharpness_auc']:.3f} |" in md

    fakes_only = evaluate_videos([r for r in rows if r["label"] == "FAKE"])  # one class, no prior: all n/a
    assert all(np.isnan(fakes_only["overall"][k]) for k in ("prior_auc", "lip_sync_auc", "sharpness_auc"))
    why = undefined(fakes_only["overall"], None)
    assert "only FAKE videos" in why["lip_sync_auc"] and "only FAKE videos" in why["sharpness_auc"]
    md = evaluation_markdown(fakes_only, "t")
    assert "| all | n/a | n/a | n/a | n/a |" in md
    assert (
        "Undefined here (n/a): hand-made lip-sync statistic AUC, hand-made sharpness statistic AUC, "
        "because they too rank FAKE against REAL videos, and this set holds only FAKE videos."
    ) in md
    unmeasured = evaluate_videos([{k: v for k, v in r.items() if k != "handmade"} for r in rows], prior=0.5)
    assert np.isnan(unmeasured["overall"]["lip_sync_auc"]) and unmeasured["overall"]["prior_auc"] == 0.5
    assert "unmeasured" in undefined(unmeasured["overall"], 0.5)["lip_sync_auc"]
