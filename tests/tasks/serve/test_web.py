"""The drop-a-video page's logic: uploads refused by size before they are read, a real DFDC video
scored as `avff predict` scores it (plus the faces the model saw), the model reloaded when it moves."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from avff_model import AVFF, get_config
from tasks.ingest.preprocess import face_detector
from tasks.serve.predict import preprocess_for, score_video
from tasks.serve.scorer import load_model
from tasks.serve.web import UploadRefused, UploadScorer, check_upload, page, upload_name
from storage.checkpoint import save_checkpoint

SAMPLE = Path(__file__).resolve().parents[4] / "shared" / "data" / "dfdc_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"the real DFDC sample is not on this machine ({SAMPLE})")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A tiny AVFF with random weights, saved as `avff train` saves a checkpoint."""
    torch.manual_seed(0)
    cfg = get_config("tiny")
    return save_checkpoint(str(tmp_path_factory.mktemp("model") / "ckpt"), AVFF(cfg), dataclasses.asdict(cfg), {})


def test_uploads_are_refused_by_their_announced_size_with_ingests_reasons():
    for size, reason, status in ((0, "empty_file", 400), (11, "too_large", 413), (None, "unreadable", 411)):
        with pytest.raises(UploadRefused, match="^clip.mp4: ") as e:
            check_upload("clip.mp4", size, max_bytes=10)
        assert (e.value.reason, e.value.status) == (reason, status)
        assert e.value.to_json("clip.mp4")["reason"] == reason
    check_upload("clip.mp4", 10, max_bytes=10)  # at the limit: accepted


def test_an_uploads_name_is_its_last_path_part():
    assert upload_name("..%2F..%2Fetc%2Fpasswd") == "passwd"
    assert upload_name("my%20clip.mp4") == "my clip.mp4"
    assert upload_name(None) == upload_name("") == "upload"


def test_the_page_is_self_contained_and_has_what_the_browser_test_reads():
    html = page()
    for element in ('id="file"', 'id="verdict"', 'id="p_fake"', 'id="timeline"', 'id="error"'):
        assert element in html
    assert "http://" not in html and "https://" not in html  # no external resource


@needs_sample
def test_an_upload_is_scored_as_avff_predict_scores_the_file_and_shows_its_faces(checkpoint, tmp_path):
    video = sorted(SAMPLE.glob("*.mp4"))[0]
    loads = []

    def load():
        loads.append(1)
        return load_model(checkpoint, device="cpu")

    key = ["v1"]
    upload = UploadScorer(load, lambda: key[0])
    record = upload(video.read_bytes(), video.name)

    scorer = load_model(checkpoint, device="cpu")
    pre = preprocess_for(scorer)
    with face_detector(pre) as detector:
        reference = score_video(str(video), scorer, pre, detector)
    assert record["video"] == video.name and record["model"] == "v1" and record["reason"] is None
    assert record["p_fake"] == pytest.approx(reference.p_fake, abs=1e-6)
    assert record["clip_p_fake"] == pytest.approx(reference.clip_p_fake, abs=1e-6)
    assert record["clip_start_s"] == reference.clip_start_s and len(record["clip_start_s"]) == record["clips"] > 0
    assert (
        record["verdict"] == ("FAKE" if reference.p_fake >= 0.5 else "REAL") and record["threshold_source"] == "default"
    )
    faces = [Image.open(io.BytesIO(base64.b64decode(f))) for f in record["faces"]]
    assert len(faces) == record["clips"] and {(f.format, f.size) for f in faces} == {("JPEG", (pre.face_size,) * 2)}

    # not a video: ingest's reason, naming the uploaded file (not the temporary copy)
    bad = upload(b"this is not a video", "notes.mp4")
    assert bad["p_fake"] is None and bad["verdict"] is None and bad["reason"] == "undecodable"
    assert bad["error"].startswith("notes.mp4: ") and "avff-score-" not in bad["error"]
    assert len(loads) == 1  # the model is loaded once...
    key[0] = "v2"
    assert upload(b"still not a video", "x.mp4")["model"] == "v2" and len(loads) == 2  # ...and again when it moves
