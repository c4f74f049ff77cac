"""track_faces remembers its full-frame looks per frame (issue 26): the probes for other faces look at
frame 0 again, as the main track's first look did. The detections and tracks do not change: the
reference is the same tracking with every look made afresh, on a real DFDC clip (skipped when
../shared/data is absent) and on a generated face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.ingest import faces
from tasks.ingest.faces import FaceDetector, SeenFrames, track_faces
from tasks.ingest.video import read_frames

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "dfdc_sample"
TIMES = [s + i / 5 for s in (0.0, 3.2, 6.4) for i in range(16)]  # what ingest samples


class Counting:
    """A detector that counts its full-frame looks, per frame."""

    def __init__(self, detector: FaceDetector):
        self.detector, self.looks = detector, []

    def detect(self, rgb):
        self.looks.append(id(rgb))
        return self.detector.detect(rgb)

    def refine(self, rgb, box):
        return self.detector.refine(rgb, box)


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


def test_a_frame_is_looked_at_once_and_gets_the_same_detections(detector):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    counting = Counting(detector)
    seen = SeenFrames(counting)
    first = [seen.detect(f) for f in frames]
    again = [seen.detect(f) for f in (frames[0], frames[2], frames[0])]
    assert counting.looks == [id(f) for f in frames]
    for a, b in zip(again, (first[0], first[2], first[0])):
        assert len(a) == len(b) and all(np.array_equal(x, y) and s == t for (x, s), (y, t) in zip(a, b))
    again[0].append("mutated")  # a caller's list is its own
    assert "mutated" not in seen.detect(frames[0])


def test_tracks_with_remembered_looks_equal_tracks_with_fresh_looks_on_a_real_clip(detector, monkeypatch):
    path = SHARED / "lynaeydofd.mp4"
    if not path.exists():
        pytest.skip(f"{path} is absent (real clips live in ../shared/data)")
    frames, _ = read_frames(str(path), TIMES)
    counting = Counting(detector)
    kept = track_faces(frames, counting)
    remembered = len(counting.looks)
    assert len(set(counting.looks)) == remembered, "no frame looked at twice"
    monkeypatch.setattr(faces, "SeenFrames", lambda d: d)  # the reference: every look made afresh
    counting.looks = []
    fresh = track_faces(frames, counting)
    assert len(counting.looks) > remembered  # frame 0: the first look and a probe
    assert len(kept) == len(fresh)
    for a, b in zip(kept, fresh):
        assert np.array_equal(a.boxes, b.boxes)
        assert np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.detected, b.detected)
