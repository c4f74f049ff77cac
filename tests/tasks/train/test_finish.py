"""The end-of-run steps one at a time, on hand-made predictions (CPU, real pyarrow/fsspec/matplotlib)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from storage import fs
from storage.tables import PredictionRow, read_table
from tasks.evaluate import calibration as C
from tasks.evaluate import metrics as M
from storage.decision import Decision, read_decision
from tasks.tracking.logger import InMemoryLogger
from tasks.train import finish
from tasks.train.engine import Predictions


def _preds(y: list[int], p: list[float]) -> Predictions:
    """Two clips per video: video i holds clips 2i and 2i+1 with the same label."""
    ids = [f"v{i // 2}" for i in range(len(y))]
    return Predictions(ids, np.arange(len(y)) % 2, np.asarray(y, np.int64), np.asarray(p, np.float64))


VAL = _preds([0, 0, 1, 1, 0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8, 0.4, 0.2, 0.7, 0.9])
TRAIN = finish.TrainLabels(clips=np.array([0, 0, 0, 1]), videos=np.array([0, 1]))


def test_val_threshold_is_chosen_on_videos_and_none_for_one_class():
    _, y, p = M.aggregate_by_video(VAL.video_ids, VAL.y, VAL.p)
    assert finish.val_threshold(VAL, "f1") == M.choose_threshold(y, p, "f1")
    assert finish.by_video(VAL)[0].tolist() == ["v0", "v1", "v2", "v3"]
    one_class = _preds([1, 1, 1, 1], [0.2, 0.4, 0.6, 0.8])
    assert finish.val_threshold(one_class, "f1") is None


def test_score_carries_the_training_prior_and_the_val_threshold():
    out = finish.score(VAL, TRAIN, threshold_val=0.5)
    assert out["video"]["auc"] == 1.0 and out["video@val_threshold"]["threshold"] == 0.5
    assert out["baselines"]["clip"]["prior"]["log_loss"] == pytest.approx(M.log_loss(VAL.y, np.full(8, 0.25)))


def test_summary_keeps_the_charted_keys_and_the_monitor_at_its_best():
    flat = {"test_video_auc": 0.9, "test_clip_n": 8.0, "best_val_video_f1": 0.5, "best_val_clip_log_loss": 0.6}
    assert finish.summary_metrics(flat, "val_video_f1") == {"test_video_auc": 0.9, "best_val_video_f1": 0.5}
    assert finish.summary_metrics(flat, "val_loss") == {"test_video_auc": 0.9, "best_val_clip_log_loss": 0.6}


def test_the_summary_is_logged_headline_first_and_is_told_from_the_curves():
    """Issue 25: MLflow's run page lists metrics in the order first logged: the headline (test, then val,
    video AUC and log loss and their baselines) leads the summary, whatever order scoring produced."""
    flat = M.flatten("best_val", finish.score(VAL, TRAIN)) | M.flatten("test", finish.score(VAL, TRAIN, 0.5))
    logged = list(finish.summary_metrics(flat, "val_video_auc"))
    headline = [k for k in finish.HEADLINE if k in logged]
    assert logged[: len(headline)] == headline and logged[:2] == ["test_video_auc", "test_video_log_loss"]
    assert headline[4:6] == ["best_val_video_auc", "best_val_video_log_loss"]  # no hand-made scores measured here
    assert set(logged) - set(headline) and all(finish.is_summary(k) for k in logged)
    assert finish.is_summary("calibration_slope") and finish.is_summary("test_clip_ece")
    assert not any(finish.is_summary(k) for k in ("val_video_auc", "val_loss", "train_loss", "lr", "pretrain_loss"))


def test_metrics_table_has_one_row_per_split_level_and_predictor():
    rows = finish.metrics_table({"val": finish.score(VAL, TRAIN), "test": finish.score(VAL, TRAIN, 0.5)})
    keys = [(r["split"], r["level"], r["predictor"]) for r in rows]
    assert keys[:3] == [("val", "video", "model"), ("val", "video", "prior baseline"),
                        ("val", "video", "majority baseline")]  # fmt: skip
    assert ("test", "clip", "model @ val threshold") in keys and ("val", "clip", "model @ val threshold") not in keys
    assert len(rows) == 14 and all("auc" in r for r in rows)


def test_predictions_round_trip_through_parquet(tmp_path):
    uris = finish.write_predictions(str(tmp_path), {"val": VAL})
    assert uris == {"val": fs.join(str(tmp_path), "predictions", "val.parquet")}
    table = fs.read_parquet(uris["val"]).to_pydict()
    assert table["video_id"] == VAL.video_ids and table["p_fake"] == VAL.p.tolist() and table["y"] == VAL.y.tolist()


def test_plots_render_and_publish_locally(tmp_path):
    log = InMemoryLogger()
    local = finish.plots_dir(str(tmp_path), tmp_path / "scratch")
    assert local == tmp_path / "plots"
    history = [{"epoch": 1, "stage": "classify", "train_loss": 0.7, "val_loss": 0.6, "lr": 1e-3}]
    paths = finish.render_plots(history, VAL, None, local)
    assert {p.name for p in paths} >= {"test_video_roc.png", "test_clip_pr.png", "test_video_confusion.png"}
    out = finish.publish(str(tmp_path), paths, "# report\n", local, log)
    assert out.report == str(tmp_path / "report.md") and (tmp_path / "report.md").read_text() == "# report\n"
    assert out.plots == [str(p) for p in paths] and all(p.stat().st_size > 0 for p in paths)
    assert log.artifacts[-1] == (str(tmp_path / "report.md"), None) and log.artifacts[0][1] == "plots"


def test_publish_and_log_remote_upload_to_object_storage(tmp_path):
    root = f"memory://avff-finish-{uuid.uuid4().hex}"
    local = finish.plots_dir(root, tmp_path)
    local.mkdir(parents=True)
    (local / "a.png").write_bytes(b"png")
    log = InMemoryLogger()
    out = finish.publish(root, [local / "a.png"], "text", local, log)
    assert out.plots == [fs.join(root, "plots", "a.png")] and fs.read_bytes(out.plots[0]) == b"png"
    assert fs.read_bytes(out.report) == b"text"
    finish.log_remote(log, out.report, "copied")
    finish.log_remote(log, None, "nothing")
    assert log.artifacts[-1][0].endswith("report.md") and log.artifacts[-1][1] == "copied" and len(log.artifacts) == 3


def _overconfident(n: int = 400, factor: float = 4.0) -> Predictions:
    """Labels drawn from sigmoid(z), P(FAKE) reported as sigmoid(factor * z): over-confident by ``factor``."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < C.sigmoid(z)).astype(np.int64)
    return Predictions([f"v{i // 2}" for i in range(n)], np.arange(n) % 2, y, C.sigmoid(factor * z))


def _uninformative(n: int, fake: float, seed: int) -> Predictions:
    """A model that learned nothing but a 41 % FAKE training prior, scored on clips ``fake`` FAKE."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fake).astype(np.int64)
    p = C.sigmoid(C.to_logits(0.41) + rng.normal(0, 0.3, n))
    return Predictions([f"v{i // 2}" for i in range(n)], np.arange(n) % 2, y, p)


def test_calibration_undoes_a_shifted_base_rate_so_an_uninformative_model_scores_the_prior():
    """Trained at 41 % FAKE, judged on 85 % FAKE: temperature scaling left the test log loss near 0.69
    (fails before Platt scaling); the fitted intercept brings it to the val prior's cross-entropy."""
    val, test = _uninformative(600, 0.85, seed=0), _uninformative(600, 0.85, seed=1)
    cal = finish.calibrate(val, test, enabled=True)
    q = val.y.mean()
    prior = float(np.mean(-(test.y * np.log(q) + (1 - test.y) * np.log(1 - q))))  # val prior on test, ~0.42
    assert cal.splits["test"].nll_before > 0.8
    assert cal.splits["test"].nll_after == pytest.approx(prior, abs=0.01)


def test_calibration_fits_on_val_and_lowers_val_log_loss_and_ece():
    val, test = _overconfident(), _overconfident(200, factor=4.0)
    cal = finish.calibrate(val, test, enabled=True)
    assert cal.reason is None and 1 / cal.platt.slope == pytest.approx(4.0, rel=0.35)
    for split in ("val", "test"):
        s = cal.splits[split]
        assert s.nll_after <= s.nll_before and s.ece_after < s.ece_before
    after = finish.calibrated(val, cal.platt)
    assert M.log_loss(val.y, after.p) <= M.log_loss(val.y, val.p) and after.y is val.y
    assert M.log_loss(val.y, after.p) == pytest.approx(cal.splits["val"].nll_after, rel=1e-4)
    assert finish.calibration_metrics(cal) == {
        "calibration_slope": cal.platt.slope, "calibration_intercept": cal.platt.intercept,
        "test_clip_ece": cal.splits["test"].ece_after, "test_clip_uncalibrated_ece": cal.splits["test"].ece_before,
    }  # fmt: skip


def test_one_class_val_or_the_switch_off_keep_the_identity_and_say_why():
    one_class = _preds([1, 1, 1, 1], [0.2, 0.4, 0.6, 0.8])
    cal = finish.calibrate(one_class, VAL, enabled=True)
    assert cal.platt.identity and "one class" in cal.reason and "4 clips, 4 FAKE" in cal.reason
    assert cal.splits["test"].nll_before == cal.splits["test"].nll_after
    assert finish.calibrated(VAL, C.Platt()) is VAL  # same arrays: an uncalibrated run scores exactly as before
    off = finish.calibrate(VAL, None, enabled=False)
    assert off.platt.identity and "calibrate = false" in off.reason and set(off.splits) == {"val"}


def test_metrics_table_adds_the_uncalibrated_model_rows_and_the_val_and_test_ece():
    raw = {"val": finish.score(VAL, TRAIN)}
    cal = finish.calibrate(VAL, None, enabled=True)
    rows = finish.metrics_table({"val": finish.score(finish.calibrated(VAL, cal.platt), TRAIN)}, raw, cal)
    uncal = [r for r in rows if r["predictor"] == finish.UNCALIBRATED]
    assert [r["level"] for r in uncal] == ["video", "clip"] and "ece" not in uncal[0]
    assert (
        uncal[1]["log_loss"] == pytest.approx(M.log_loss(VAL.y, VAL.p))
        and uncal[1]["ece"] == cal.splits["val"].ece_before
    )
    model = next(r for r in rows if r["level"] == "clip" and r["predictor"] == "model")
    assert model["ece"] == cal.splits["val"].ece_after and model["log_loss"] <= uncal[1]["log_loss"]


def test_reliability_diagram_and_decision_beside_the_checkpoint(tmp_path):
    test = finish.calibrated(VAL, C.Platt(0.5, 0.2))
    paths = finish.render_plots([], test, 0.5, tmp_path / "plots", raw_test=VAL)
    assert paths[-1] == tmp_path / "plots" / finish.RELIABILITY_PLOT and paths[-1].stat().st_size > 0
    finish.keep_decision(str(tmp_path / "ckpt"), None, "f1", C.Platt(0.5, 0.2))
    assert read_decision(str(tmp_path / "ckpt")) == Decision(None, "default", 0.5, 0.2)


def test_a_video_of_two_faces_scores_as_its_fake_face_and_its_predictions_name_the_face(tmp_path):
    """v0: face 0 REAL (0.2, 0.4), face 1 FAKE (0.9, 0.7); v1: one REAL face (0.1, 0.3). The report's
    and the threshold's video numbers are max over faces; without faces, v0's labels would clash."""
    preds = Predictions(["v0", "v0", "v0", "v0", "v1", "v1"], np.array([0, 1, 0, 1, 0, 1]),
                        np.array([0, 0, 1, 1, 0, 0]), np.array([0.2, 0.4, 0.9, 0.7, 0.1, 0.3]),
                        np.array([0, 0, 1, 1, 0, 0]))  # fmt: skip
    ids, y, p = finish.by_video(preds)
    assert ids.tolist() == ["v0", "v1"] and y.tolist() == [1, 0]
    np.testing.assert_allclose(p, [0.8, 0.2])
    assert finish.score(preds, TRAIN)["video"]["auc"] == 1.0
    rows = read_table(finish.write_predictions(str(tmp_path), {"test": preds})["test"], PredictionRow)
    assert [(r.video_id, r.clip, r.face, r.y) for r in rows][:4] == [("v0", 0, 0, 0), ("v0", 1, 0, 0), ("v0", 0, 1, 1),
                                                                      ("v0", 1, 1, 1)]  # fmt: skip


def test_the_hand_made_statistics_are_baselines_beside_the_prior_in_the_summary_and_the_table():
    """Predictions that carry the clips' statistics (an evaluation loader measured them) score them per video
    (the mean of its clips) as baselines: summary metrics beside the prior's, and rows of the metrics table."""
    lip = np.array([0.1, -0.2, 0.5, 0.3, 0.2, 0.0, 0.6, 0.8])  # FAKE videos v1, v3 highest: AUC 1
    sharp = np.array([-1.0, -1.0, -9.0, -9.0, np.nan, np.nan, -0.5, -0.5])  # v2 undefined; REAL v0 between: AUC 0.5
    val = VAL._replace(handmade={"lip_sync": lip, "sharpness": sharp})
    scored = finish.score(val, TRAIN)
    assert scored["baselines"]["video"]["lip_sync"]["auc"] == 1.0 and "prior" in scored["baselines"]["video"]
    sharpness = scored["baselines"]["video"]["sharpness"]
    assert (sharpness["auc"], sharpness["n"], sharpness["n_pos"]) == (0.5, 3, 2)
    assert sharpness["average_precision"] == pytest.approx((1 + 2 / 3) / 2)  # v3 (FAKE), v0 (REAL), v1 (FAKE)
    summary = finish.summary_metrics(M.flatten("test", scored), "val_loss")
    assert summary["test_baselines_video_lip_sync_auc"] == 1.0 and summary["test_baselines_video_sharpness_auc"] == 0.5
    rows = finish.metrics_table({"test": scored})
    by = {(r["level"], r["predictor"]): r for r in rows}
    assert by[("video", "hand-made lip-sync statistic")]["auc"] == 1.0
    assert by[("clip", "hand-made sharpness statistic")]["n"] == 6  # two clips undefined
    assert "log_loss" not in by[("video", "hand-made lip-sync statistic")]  # a statistic is no probability
    assert len(finish.metrics_table({"test": finish.score(VAL, TRAIN)})) == len(rows) - 4  # not measured: no rows


def test_a_baseline_undefined_on_a_split_is_not_logged_as_a_number():
    """One class in test: the prior's and a statistic's AUC are NaN, left out of the summary (MLflow would
    chart NaN); the model's own numbers and the defined baselines stay."""
    one_class = _preds([1, 1, 1, 1], [0.2, 0.4, 0.6, 0.8])._replace(
        handmade={"lip_sync": np.array([0.1, 0.2, 0.3, 0.4]), "sharpness": np.array([-1.0, -2.0, -3.0, -4.0])}
    )
    flat = M.flatten("test", finish.score(one_class, TRAIN))
    assert np.isnan(flat["test_baselines_video_lip_sync_auc"]) and np.isnan(flat["test_baselines_video_prior_auc"])
    summary = finish.summary_metrics(flat, "val_loss")
    assert not [k for k in summary if k.endswith("_auc") and "baselines" in k]
    assert "test_baselines_video_prior_log_loss" in summary and np.isnan(summary["test_video_auc"])
