"""The face mesh on the tracked box's region (``mesh_roi="box"``, the default since issue 26) against
the slow, obviously right path: the whole mesh, its own face detector on every frame (``"detect"``).

On real DFDC frames (skipped when ../shared/data is absent) the cheap path finds the face wherever the
whole mesh does and puts its points within a few pixels of the whole mesh's (docs/performance.md,
"Landmarks": 1.2 px at the median where moving the box by half a pixel moves the whole mesh's by 0.7).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.ingest.faces import track_face
from tasks.ingest.landmarks import LandmarkFaceDetector, find_landmarks
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.ingest.video import read_frames

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "dfdc_sample"
CLIPS = ["abofeumbvv", "widuwuoiur"]  # the smallest face (~106 px) and a large one (~200 px)
TIMES = [s + i / 5 for s in (0.0, 6.4) for i in range(8)]  # 16 frames over the video, as ingest spreads them


@pytest.fixture(scope="module")
def detectors():
    with LandmarkFaceDetector(mesh_roi="box") as fast, LandmarkFaceDetector(mesh_roi="detect") as slow:
        yield fast, slow


def _distances(ref: list, new: list) -> np.ndarray:
    """Per frame found both ways: the mean distance over the 468 points, pixels."""
    return np.array([np.linalg.norm(p - q, axis=1).mean() for p, q in zip(ref, new) if p is not None and q is not None])


def _frames_and_track(name: str, detector):
    path = SHARED / f"{name}.mp4"
    if not path.exists():
        pytest.skip(f"{path} is absent (real clips live in ../shared/data)")
    frames, _ = read_frames(str(path), TIMES)
    return frames, track_face(frames, detector)


@pytest.mark.parametrize("name", CLIPS)
@pytest.mark.parametrize("degrees", [0, 25])
def test_the_region_mesh_finds_every_face_the_whole_mesh_finds_within_a_few_pixels(detectors, name, degrees):
    fast, slow = detectors
    frames, track = _frames_and_track(name, slow)
    if degrees:  # a tilted head: the region is turned by the eye line the model finds
        m = cv2.getRotationMatrix2D(tuple(track.boxes.mean(0).reshape(2, 2).mean(0)), degrees, 1.0)
        frames = [cv2.warpAffine(f, m, (f.shape[1], f.shape[0])) for f in frames]
    ref, new = find_landmarks(frames, track, slow), find_landmarks(frames, track, fast)
    lost = [i for i, (p, q) in enumerate(zip(ref, new)) if p is not None and q is None]
    assert lost == [], "a face the whole mesh finds is found on its region (or by the whole mesh after it)"
    d = _distances(ref, new)  # (M,) frames found both ways (a tilted dim face: the whole mesh finds few)
    assert d.size >= 4
    assert np.median(d) < (2.0 if not degrees else 3.5), d
    assert d.max() < (6.0 if not degrees else 12.0), d


def test_the_whole_mesh_is_what_detect_runs(detectors):
    """mesh_roi="detect" is the path before issue 26, call for call: its own detector, no region graph."""
    _, slow = detectors
    assert slow.region is None
    frames, track = _frames_and_track(CLIPS[1], slow)
    a = find_landmarks(frames[:3], track, slow)
    b = [slow.landmarks(f, box) for f, box in zip(frames[:3], track.boxes)]  # no angle: the mesh ignores it
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_mesh_roi_is_validated_and_built_into_the_detector():
    with pytest.raises(ValueError, match=r"mesh_roi\n  Input should be 'box' or 'detect'"):
        PreprocessConfig(mesh_roi="nose")
    with pytest.raises(ValueError, match="mesh_roi must be one of box, detect"):
        LandmarkFaceDetector(mesh_roi="nose")
    with face_detector(PreprocessConfig(crop="landmarks", mesh_roi="detect")) as det:
        assert det.region is None
    with face_detector(PreprocessConfig(crop="landmarks")) as det:
        assert det.region is not None


def test_mesh_roi_counts_in_the_hash_only_where_the_mesh_runs_and_old_configs_keep_theirs():
    assert PreprocessConfig(mesh_roi="detect").hash() == PreprocessConfig().hash() == "7c0c7c06fae2bfcb"  # box crops
    # landmark configs written before issue 26 (the whole mesh) keep their hash; the region path has its own
    assert PreprocessConfig(crop="landmarks", mesh_roi="detect").hash() == "840638dfca42871c"
    assert PreprocessConfig(crop="landmarks").hash() != "840638dfca42871c"
    # a model's stored preprocessing from before the field existed serves with the mesh it was trained on
    old = {k: v for k, v in PreprocessConfig(crop="landmarks").to_dict().items() if k != "mesh_roi"}
    assert PreprocessConfig.from_dict(old).mesh_roi == "detect"
    assert PreprocessConfig.from_dict(PreprocessConfig(crop="landmarks").to_dict()).mesh_roi == "box"
