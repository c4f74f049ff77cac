"""Landmark crops on real faces: a tilted face comes out level, its mouth inside the stored mouth box."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avff_model.crop_geometry import EYE_MOUTH, EYE_Y, MOUTH_BOX, MOUTH_Y
from tasks.ingest.faces import crop_track, track_face
from tasks.ingest.landmarks import (
    LIPS,
    LandmarkFaceDetector,
    align,
    alignment_matrix,
    crop_landmarks,
    find_landmarks,
    lip_shape,
    mouth_box,
    pose_of,
    transform_points,
)
from tasks.ingest.preprocess import PreprocessConfig, face_detector, preprocess_video
from tasks.ingest.video import sample_frames

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "dfdc_sample"
SIZE = 224


def _clip(name: str) -> Path:
    path = SHARED / f"{name}.mp4"
    if not path.exists():
        pytest.skip(f"{path} is absent (real clips live in ../shared/data)")
    return path


@pytest.fixture(scope="module")
def detector():
    with LandmarkFaceDetector() as det:
        yield det


def _rotated(frames: np.ndarray, box: np.ndarray, degrees: float) -> np.ndarray:
    """Every frame rotated by ``degrees`` (counter-clockwise) about the face box's centre."""
    m = cv2.getRotationMatrix2D(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), degrees, 1.0)
    return np.stack([cv2.warpAffine(f, m, (f.shape[1], f.shape[0])) for f in frames])


def _measure(crops: np.ndarray, box: list[float], detector) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks found afresh on each crop -> (eye-line angle in degrees, share of lip points inside box)."""
    angles, inside = [], []
    for crop in crops:
        p = detector.landmarks(crop, np.array([0, 0, SIZE, SIZE], dtype=float))
        assert p is not None, "the face mesh finds the face in the crop"
        angles.append(np.degrees(pose_of(p)[1]))
        lips = p[list(LIPS)]
        x0, y0, x1, y1 = box
        inside.append(np.mean((lips[:, 0] >= x0) & (lips[:, 0] <= x1) & (lips[:, 1] >= y0) & (lips[:, 1] <= y1)))
    return np.abs(np.array(angles)), np.array(inside)


@pytest.mark.parametrize("degrees", [-25, 25])
def test_a_tilted_real_face_is_levelled_and_its_mouth_is_in_the_stored_box(detector, degrees):
    """A real DFDC face rotated by 25 degrees: the box crop keeps the tilt and the fixed mouth box
    misses part of the lips; the landmark crop is level and its mouth box holds every lip point."""
    frames = sample_frames(str(_clip("widuwuoiur")), [0.4 * k for k in range(8)])[0]  # (8, 1080, 1920, 3)
    upright = track_face(frames, detector)
    tilted = _rotated(frames, upright.boxes.mean(0), degrees)
    track = track_face(tilted, detector)

    old = crop_track(tilted, track, SIZE, 1.3)  # (8, S, S, 3)
    top, bottom, left, right = MOUTH_BOX
    old_angle, old_inside = _measure(old, [left * SIZE, top * SIZE, right * SIZE, bottom * SIZE], detector)
    assert np.median(old_angle) > 15, "the box crop keeps the tilt"
    assert old_inside.mean() < 0.8, "the fixed box misses part of the tilted mouth"

    lm = align(find_landmarks(tilted, track, detector), SIZE)
    assert lm is not None and lm.found.all()
    new = crop_landmarks(tilted, lm, SIZE)
    box = mouth_box(lm.lips, SIZE)
    new_angle, new_inside = _measure(new, box, detector)
    assert np.median(new_angle) < 3 and new_angle.max() < 8, f"eyes level in the aligned crop: {new_angle}"
    assert new_inside.min() == 1.0, "every lip point of every frame is inside the clip's mouth box"
    assert box[3] - box[1] < 0.45 * SIZE and box[2] - box[0] < 0.6 * SIZE, f"a mouth box, not the face: {box}"


def test_alignment_puts_the_eyes_and_the_mouth_on_the_template():
    """Points of a face tilted by 30 degrees, 80 px eyes-to-mouth -> the template's eye line and mouth."""
    a = np.radians(30)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = np.zeros((468, 2))
    pts[[33, 133]] = [-40, 0]
    pts[[362, 263]] = [40, 0]
    pts[list(LIPS)] = [0, 80]
    pts = pts @ rot.T + [500, 300]
    eyes, angle, dist = pose_of(pts)
    assert np.degrees(angle) == pytest.approx(30) and dist == pytest.approx(80)
    m = alignment_matrix(eyes, angle, dist, SIZE)
    out = transform_points(m, pts)
    assert out[[33, 362]][:, 1] == pytest.approx([EYE_Y * SIZE] * 2), "eyes level, on the template's eye line"
    assert out[list(LIPS)].mean(0) == pytest.approx([SIZE / 2, MOUTH_Y * SIZE])
    assert out[362, 0] - out[33, 0] == pytest.approx(80 * EYE_MOUTH * SIZE / 80)


def test_mouth_box_holds_every_frame_lips_padded_and_inside_the_crop():
    lips = np.array([[[100, 150], [120, 160]], [[90, 155], [130, 170]]], dtype=float)  # (T=2, L=2, 2)
    assert mouth_box(lips, SIZE, pad=0.0) == [90, 150, 130, 170]
    assert mouth_box(lips, SIZE, pad=0.5) == [70, 140, 150, 180]
    assert mouth_box(lips + [0, 60], SIZE, pad=0.5) == [70, 200, 150, SIZE], "clipped to the crop"


def test_lip_shape_is_the_lips_gap_and_the_mouths_width_over_the_eyes_to_mouth_distance():
    points = np.zeros((468, 2))
    points[13], points[14] = [100, 200], [100, 210]  # the inner lips 10 px apart
    points[61], points[291] = [80, 205], [120, 205]  # the corners 40 px apart
    assert lip_shape(points, 50.0) == pytest.approx([0.2, 0.8])
    assert lip_shape(points * 2, 100.0) == pytest.approx([0.2, 0.8]), "scale-free"


def test_landmark_ingest_stores_a_mouth_box_and_falls_back_to_the_box_when_told(detector):
    """Real clip through the ingest path: aligned clips carry their mouth box; a video with landmarks
    in fewer frames than min_landmark_frac is cropped by the box and says so."""
    path = str(_clip("abqwwspghj"))
    cfg = PreprocessConfig(crop="landmarks", max_clips=1)
    with face_detector(cfg) as det:
        out = preprocess_video(path, cfg, det)
        assert out.crop == "landmarks" and out.landmark_frac == 1.0
        clip = out.clips[0]
        assert clip.crop == "landmarks" and clip.landmark_frac == 1.0 and clip.frames.shape == (16, SIZE, SIZE, 3)
        x0, y0, x1, y1 = clip.mouth_box
        assert 0 <= x0 < SIZE / 2 < x1 <= SIZE and y0 < MOUTH_Y * SIZE < y1, "the mouth sits on the template"
        shape = np.array(clip.lip_shape)  # (T, 2) a talking face: the lips part and close
        assert shape.shape == (16, 2) and np.isfinite(shape).all()
        assert (shape[:, 0] < shape[:, 1]).all() and 0.5 < shape[:, 1].mean() < 2.0, "a gap narrower than the mouth"
        assert shape[:, 0].std() > 0.01, "the speaker's lips move"

        strict = PreprocessConfig(crop="landmarks", max_clips=1, min_landmark_frac=1.0)
        dim = preprocess_video(str(_clip("abofeumbvv")), strict, det)  # a dim room: some frames lack landmarks
    assert dim.crop == "box_fallback" and 0 < dim.landmark_frac < 1.0
    assert all(c.crop == "box_fallback" and c.mouth_box is None and c.lip_shape is None for c in dim.clips)
    assert strict.hash() != cfg.hash() != PreprocessConfig().hash()


def test_box_crop_is_unchanged_by_landmarks_existing():
    """crop="box" hashes and crops as before: no landmark fields, no face mesh (max_faces=1: one face,
    as before every face was tracked; see test_preprocess for the every-face default)."""
    assert PreprocessConfig(crop="box", max_faces=1).hash() == "5229b89333b5808d", "the hash before landmarks existed"
    with pytest.raises(ValueError, match=r"crop\n  Input should be 'box' or 'landmarks'"):
        PreprocessConfig(crop="mesh")


def test_a_landmark_unit_stores_the_mouth_box_in_its_shard_and_the_crop_in_the_manifest(tmp_path):
    """Real DFDC clips through process_unit and finalize with crop="landmarks": the shard's clips carry
    their mouth boxes, and the manifest says which video was aligned and which fell back to the box."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from storage.shard_io import read_clips
    from storage.tables import ManifestRow
    from tasks.ingest.units import finalize
    from tasks.ingest.write_unit import UnitVideo, WorkUnit, fingerprint, process_unit

    names = ["abqwwspghj", "abofeumbvv"]  # well lit; a dim room where the mesh misses some frames
    videos = tuple(UnitVideo(n, str(_clip(n)), f"p0/{n}.mp4", "p0", "FAKE", "train", n, None, fingerprint(str(_clip(n))))
                   for n in names)  # fmt: skip
    unit = WorkUnit("train", "p0", 0, str(tmp_path / "train" / "p0-00000.tar"), videos)
    pre = PreprocessConfig(crop="landmarks", max_clips=1, face_size=112, min_landmark_frac=0.9)
    with face_detector(pre) as det:
        record = process_unit(unit, pre, detector=det)
    clips = {c.meta.video_id: c.meta for c in read_clips(unit.shard)}
    assert clips["abqwwspghj"].crop == "landmarks" and len(clips["abqwwspghj"].mouth_box) == 4
    assert np.array(clips["abqwwspghj"].lip_shape).shape == (16, 2), "the lips' shape per frame rides in the shard"
    assert clips["abofeumbvv"].crop == "box_fallback" and clips["abofeumbvv"].mouth_box is None

    planned = [ManifestRow(video_id=n, part="p0", rel_path=f"p0/{n}.mp4", label="FAKE", split="train", fold=0, group=n)
               for n in names]  # fmt: skip
    manifest, _, _ = finalize(planned, [asdict(record)], SimpleNamespace(rejected=[]), [])
    rows = {r.video_id: r for r in manifest}
    assert rows["abqwwspghj"].crop == "landmarks" and rows["abqwwspghj"].landmark_frac == 1.0
    assert rows["abofeumbvv"].crop == "box_fallback" and rows["abofeumbvv"].landmark_frac < 0.9


def test_lip_track_resamples_the_frames_lips_to_the_grid_and_refuses_a_mostly_faceless_span():
    from tasks.ingest.landmarks import lip_track

    times = np.array([0.0, 0.04, 0.08, 0.12])
    shapes = [np.array([0.1, 1.0]), None, np.array([0.3, 0.8]), np.array([0.3, 0.8])]
    track = lip_track(times, shapes, np.array([0.0, 0.02, 0.04, 0.2]))
    assert track.shape == (4, 2)
    assert np.allclose(track[:, 0], [0.1, 0.15, 0.2, 0.3])  # linear across the faceless frame, held at the end
    assert lip_track(times, [None, None, None, shapes[0]], np.array([0.0])) is None


REALAV = Path(__file__).resolve().parents[4] / "shared" / "data" / "realav"


def test_a_real_talkers_lip_track_peaks_with_its_own_sound_and_not_with_it_moved():
    """A real talking clip ingested with ``lip_track``: each clip carries its lips at 25 fps over its
    3.2 s span, and against the clip's own sound they peak near lag 0 where the sound moved 0.6 s later
    (silence first, as bench/real.py's shifted fakes) does not. Without ``lip_track``: no track."""
    from tasks.evaluate.handmade import track_sync
    from tasks.ingest.audio import SILENCE_LOG_MEL, decode_audio, log_mel, mel_window

    path = REALAV / "Hangz-nju-cuhk__Talking-Face_PC-AVS" / "Audio_Source_00086.mp4"
    if not path.exists():
        pytest.skip(f"{path} is absent (real clips live in ../shared/data)")
    cfg = PreprocessConfig(crop="landmarks", lip_track=True, face_size=64, max_clips=1, max_faces=1)
    with face_detector(cfg) as det:
        (clip,) = preprocess_video(str(path), cfg, det).clips
        plain = preprocess_video(str(path), PreprocessConfig(crop="landmarks", face_size=64, max_clips=1), det)
    assert plain.clips[0].lip_track is None
    track = np.array(clip.lip_track)
    assert track.shape == (80, 2) and np.isfinite(track).all() and track[:, 0].std() > 0.005  # the lips move
    wave = decode_audio(str(path), 16000)
    moved = np.concatenate([np.zeros(int(0.6 * 16000), np.float32), wave])[: wave.size]
    hop = cfg.mel.hop_s

    def mel(w):
        return mel_window(log_mel(w, cfg.mel), clip.mel_start_s, 320, hop, SILENCE_LOG_MEL)

    def peak(w):
        return track_sync(clip.lip_track, mel(w), hop)

    assert np.allclose(mel(wave), clip.mel, atol=1e-4)  # the clip's own sound, as ingest cut it
    assert peak(wave) > 0.1 > peak(moved)
