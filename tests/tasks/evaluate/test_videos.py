import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tasks.evaluate.videos import evaluate_videos, evaluation_markdown


def _rows():
    rng = np.random.default_rng(0)
    rows = [{"video_id": f"r{i}", "label": "REAL", "manipulation": None, "p_fake": float(rng.uniform(0, 0.5))} for i in range(10)]
    rows += [{"video_id": f"a{i}", "label": "FAKE", "manipulation": "face_blend", "p_fake": float(rng.uniform(0.5, 1))} for i in range(5)]
    rows += [{"video_id": f"b{i}", "label": "FAKE", "manipulation": "audio_swap", "p_fake": float(rng.uniform(0, 1))} for i in range(5)]
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
