"""The end-of-run steps one at a time, on hand-made predictions (CPU, real pyarrow/fsspec/matplotlib)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from storage import fs
from tasks.evaluate import metrics as M
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
