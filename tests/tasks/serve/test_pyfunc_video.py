"""Issue 25: the logged pyfunc takes a video (its path or its bytes) through MLflow's own loader and
schema check, and answers what `avff predict` computes for the file, with the faces it scored."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from avff_model import AVFF, get_config
from storage.decision import Decision
from storage.checkpoint import save_checkpoint

SAMPLE = Path(__file__).resolve().parents[4] / "shared" / "data" / "dfdc_sample"


def test_video_rows_takes_a_path_or_bytes_per_row_and_refuses_anything_else():
    import pandas as pd

    from tasks.serve.pyfunc_model import video_rows

    assert video_rows({"path": "a.mp4"}) == [{"path": "a.mp4"}]
    frame = pd.DataFrame([{"path": "a.mp4", "video": None}, {"path": None, "video": b"\x00", "name": "b.mp4"}])
    assert video_rows(frame) == [{"path": "a.mp4"}, {"video": b"\x00", "name": "b.mp4"}]
    for bad in ({"name": "x"}, {"path": "a.mp4", "video": b"\x00"}):
        with pytest.raises(ValueError, match="row 0: give exactly one of 'path'"):
            video_rows(bad)
    with pytest.raises(ValueError, match="'path' .* or 'video'"):
        video_rows([1, 2])


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"the real DFDC sample is not on this machine ({SAMPLE})")
def test_the_logged_pyfunc_scores_a_video_by_path_and_by_bytes_as_avff_predict_does(tmp_path, monkeypatch):
    import mlflow
    import pandas as pd

    from tasks.ingest.preprocess import face_detector
    from tasks.serve.predict import preprocess_for, result, score_video
    from tasks.serve.scorer import load_model, log_pyfunc_model

    torch.manual_seed(0)
    cfg = get_config("tiny")
    ckpt = save_checkpoint(str(tmp_path / "ckpt"), AVFF(cfg), dataclasses.asdict(cfg), {})
    decision = Decision(0.45, "f1", 1.3, -0.2)
    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns (the experiment's default artifact root)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("pyfunc-video")  # an earlier in-process flow's active experiment is not in this store
    try:
        with mlflow.start_run():
            info = log_pyfunc_model(f"{ckpt}/model.safetensors", dataclasses.asdict(cfg), decision=decision)
        pyfunc = mlflow.pyfunc.load_model(info.model_uri)
        local = load_model(info.model_uri, device="cpu")
    finally:
        mlflow.set_tracking_uri(None)
    assert [c.name for c in pyfunc.metadata.get_input_schema().inputs] == ["path", "video", "name"]

    video = sorted(SAMPLE.glob("*.mp4"))[0]
    pre = preprocess_for(local)
    with face_detector(pre) as detector:
        expected = result(score_video(str(video), local, pre, detector, faces=True), local.threshold)
    assert expected["threshold"] == 0.45 and expected["p_fake"] is not None

    (by_path,) = pyfunc.predict({"path": str(video)})
    by_bytes, missing = pyfunc.predict(pd.DataFrame([{"video": video.read_bytes(), "name": "drop.mp4"},
                                                     {"path": str(tmp_path / "gone.mp4")}]))  # fmt: skip
    assert by_path == expected
    assert by_bytes == {**expected, "video": "drop.mp4"}
    assert len(by_path["faces"]) == by_path["clips"] == len(by_path["clip_start_s"]) > 0
    assert missing["reason"] == "missing_file" and missing["verdict"] is None  # one bad row, the others scored
