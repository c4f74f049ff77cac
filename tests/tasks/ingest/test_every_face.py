"""Every face of a video: two-person videos made by putting two clips side by side, one of them
manipulated, through real mediapipe, real shards and (at the end) a real model.

The generated case (tasks.synthetic: a face_blend fake beside another real) runs everywhere; the
real-footage case (FaceForensics++ face swap 004_982 beside the real 634, from ../shared/data)
skips when the clips are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from storage import fs
from storage.shard_io import read_clips
from storage.shard_schema import FAKE, REAL
from tasks.ingest.face_labels import face_differences, face_labels
from tasks.ingest.preprocess import PreprocessConfig, face_detector, preprocess_video
from tasks.ingest.write_unit import UnitVideo, fingerprint, plan_units, process_unit
from tasks.synthetic.two_faces import two_face_pair

PRE = PreprocessConfig(face_size=64, max_clips=1)  # a 3.6 s video gives one 3.2 s clip
FFPP = Path(__file__).resolve().parents[4] / "shared" / "data" / "ffpp_noaudio"


@pytest.fixture(scope="module")
def detector():
    with face_detector(PRE) as det:
        yield det


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """A face_blend FAKE, its REAL original and another REAL (160 px), and the two-person videos:
    the fake beside the other real, on the left and on the right, each with its original."""
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    root = tmp_path_factory.mktemp("two_faces")
    src = make_dfdc_sample(root / "src", n_real=2, parts=0, duration_s=3.6, size=(160, 160), seed=0,
                           manipulations=("face_blend",))  # fmt: skip
    meta = json.loads((src / "metadata.json").read_text())
    fake = next(k for k, v in meta.items() if v["label"] == FAKE)
    original = meta[fake]["original"]
    other = next(k for k, v in meta.items() if v["label"] == REAL and k != original)
    out = {"fake": src / fake, "original": src / original, "other": src / other}
    for left in (True, False):
        side = "left" if left else "right"
        out[f"two_fake_{side}"], out[f"two_original_{side}"] = two_face_pair(
            src / fake, src / original, src / other, root / "two", fake_left=left, height=160, seconds=3.6
        )
    return out


def _unit_video(path: Path, label: str, original: Path | None) -> UnitVideo:
    return UnitVideo(path.stem, str(path), path.name, "p0", label, "train", path.stem, original and original.stem,
                     fingerprint(str(path)), None, str(original) if original else None)  # fmt: skip


def _ingest(videos: list[UnitVideo], out: Path, cfg: PreprocessConfig, detector) -> str:
    (unit,) = plan_units(videos, fs.IngestLayout(str(out)).shard, videos_per_shard=8)
    record = process_unit(unit, cfg, detector=detector)
    assert not record.quarantined, record.quarantined
    return unit.shard


def _faces(shard: str, video_id: str) -> dict[str, str]:
    """side (left | right of the frame's centre) -> the label of that face's samples."""
    clips = [c for c in read_clips(shard) if c.meta.video_id == video_id]
    width = max(c.meta.face_box[2] for c in clips) + min(c.meta.face_box[0] for c in clips)  # ~ the frame's width
    return {("left" if (c.meta.face_box[0] + c.meta.face_box[2]) < width else "right"): c.meta.label for c in clips}


# --------------------------------------------------------------------------- generated (CI)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_two_person_fake_gives_two_faces_and_only_the_manipulated_one_is_fake(generated, detector, tmp_path, side):
    fake, original = generated[f"two_fake_{side}"], generated[f"two_original_{side}"]
    shard = _ingest([_unit_video(fake, FAKE, original), _unit_video(original, REAL, None)], tmp_path, PRE, detector)
    clips = list(read_clips(shard))
    assert sorted((c.meta.video_id, c.meta.face) for c in clips) == sorted(
        [(original.stem, 0), (original.stem, 1), (fake.stem, 0), (fake.stem, 1)]
    )
    keys = sorted(c.key for c in clips if c.meta.video_id == fake.stem)
    assert keys == [f"{fake.stem}/000", f"{fake.stem}/000_f1"]
    other = "right" if side == "left" else "left"
    assert _faces(shard, fake.stem) == {side: FAKE, other: REAL}
    assert _faces(shard, original.stem) == {side: REAL, other: REAL}


def test_without_its_original_every_face_takes_the_video_label(generated, detector, tmp_path):
    fake = generated["two_fake_left"]
    shard = _ingest([_unit_video(fake, FAKE, None)], tmp_path, PRE, detector)
    assert sorted((c.meta.face, c.meta.label) for c in read_clips(shard)) == [(0, FAKE), (1, FAKE)]


def test_the_pixel_difference_separates_the_swapped_face(generated, detector):
    fake = preprocess_video(str(generated["two_fake_left"]), PRE, detector)
    diffs = face_differences(fake.clips, str(generated["two_original_left"]), PRE, (fake.info.width, fake.info.height))
    left = min(fake.by_face(), key=lambda f: fake.by_face()[f][0].face_box[0])
    assert diffs[left] > 4 * max(d for f, d in diffs.items() if f != left)
    # a rescaled original cannot be compared: no per-face label from it
    assert face_differences(fake.clips, str(generated["original"]), PRE, (fake.info.width, fake.info.height)) is None


def test_a_single_face_video_writes_the_shard_a_main_face_only_ingest_writes(generated, detector, tmp_path):
    """Face 0 is the track the main-face tracker picks, and a one-face video's samples carry no
    face field: its shard is byte-identical to max_faces=1's (the ingest before every-face)."""
    videos = [_unit_video(generated[k], REAL if k != "fake" else FAKE, None) for k in ("original", "fake", "other")]
    every = _ingest(videos, tmp_path / "every", PRE, detector)
    single = _ingest(videos, tmp_path / "single", PreprocessConfig(face_size=64, max_clips=1, max_faces=1), detector)
    assert fs.sha256_of(every) == fs.sha256_of(single)
    assert all(c.meta.face == 0 and c.key.endswith("/000") for c in read_clips(every))


def test_max_faces_bounds_the_tracks_and_main_face_is_face_0(generated, detector):
    two = preprocess_video(str(generated["two_fake_left"]), PRE, detector)
    one = preprocess_video(
        str(generated["two_fake_left"]), PreprocessConfig(face_size=64, max_clips=1, max_faces=1), detector
    )
    assert two.faces == 2 and one.faces == 1
    np.testing.assert_array_equal(one.clips[0].frames, two.by_face()[0][0].frames)
    with pytest.raises(ValueError, match="max_faces"):
        PreprocessConfig(max_faces=0)


def test_face_labels_fall_back_to_the_video_label():
    assert face_labels(FAKE, {0: 1.0, 1: 12.0}) == {0: REAL, 1: FAKE}
    assert face_labels(FAKE, {0: 11.0, 1: 12.0}) == {0: FAKE, 1: FAKE}  # both faces swapped
    assert face_labels(FAKE, {0: 1.0, 1: 1.2}) == {0: FAKE, 1: FAKE}  # nothing differs: the metadata's label
    assert face_labels(FAKE, None) == {0: FAKE}
    assert face_labels(REAL, {0: 1.0, 1: 30.0}) == {0: REAL, 1: REAL}


# --------------------------------------------------------------------------- real footage


@pytest.fixture(scope="module")
def real_pair(tmp_path_factory) -> dict[str, Path]:
    """FF++ face swap 004_982 (its original 004) beside the real 634, 3.6 s at 288 rows, both sides."""
    if not (FFPP / "004_982.mp4").exists():
        pytest.skip(f"{FFPP} is absent (real clips live in ../shared/data)")
    root = tmp_path_factory.mktemp("ffpp_two")
    out = {}
    for left in (True, False):
        side = "left" if left else "right"
        out[f"fake_{side}"], out[f"original_{side}"] = two_face_pair(
            FFPP / "004_982.mp4", FFPP / "004.mp4", FFPP / "634.mp4", root, fake_left=left, height=288, seconds=3.6
        )
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_real_footage_two_person_fake_labels_follow_the_pixel_difference(real_pair, detector, tmp_path, side):
    cfg = PreprocessConfig(face_size=64, max_clips=1, require_audio=False)  # FF++ clips carry no audio
    fake, original = real_pair[f"fake_{side}"], real_pair[f"original_{side}"]
    shard = _ingest([_unit_video(fake, FAKE, original), _unit_video(original, REAL, None)], tmp_path, cfg, detector)
    other = "right" if side == "left" else "left"
    assert _faces(shard, fake.stem) == {side: FAKE, other: REAL}
    assert _faces(shard, original.stem) == {side: REAL, other: REAL}


def test_an_unreadable_original_leaves_the_video_label_and_the_fake_ingested(generated, detector, tmp_path):
    broken = tmp_path / "broken_original.mp4"
    broken.write_bytes(b"not a video" * 100)
    fake = generated["two_fake_left"]
    shard = _ingest([_unit_video(fake, FAKE, broken)], tmp_path / "out", PRE, detector)
    assert sorted((c.meta.face, c.meta.label) for c in read_clips(shard)) == [(0, FAKE), (1, FAKE)]
