"""Bad and unusual input through one real ingest-dfdc flow run.

One DFDC-format folder holds every bad file and metadata entry beside good videos, and is
ingested once (real PyAV, mediapipe, shards, Prefect). Each refused input must land in
quarantine.parquet with its stable reason and an error naming the file; each unusual but
usable input must be ingested correctly; and the good videos of the same run must be
ingested as if the bad ones were not there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from storage.shard_schema import decode_sample
from tasks.ingest.scan import scan_dfdc, video_id_of
from tasks.synthetic.dfdc_sample import write_video

pytestmark = pytest.mark.slow  # one end-to-end flow run over ~50 files (~25 s of work, plus the Prefect server)

FPS, AUDIO_RATE = 25, 44100  # the footage fixture's
MAIN = "a_main"
ODD_NAME = "talk ing é ü.mp4"
LIMITS = dict(max_duration_s=60.0, max_pixels=320 * 240, max_bytes=1_000_000)

# file (relative to the data root) -> the reason it must be quarantined with
REFUSED = {
    f"{MAIN}/empty.mp4": "empty_file",
    f"{MAIN}/random_bytes.mp4": "undecodable",
    f"{MAIN}/cut_10.mp4": "undecodable",  # moov at the end: any cut loses the index
    f"{MAIN}/cut_50.mp4": "undecodable",
    f"{MAIN}/cut_99.mp4": "undecodable",
    f"{MAIN}/faststart_cut_10.mp4": "truncated",  # index first: 0.7 s of 7 s decode
    f"{MAIN}/unknown_video_codec.avi": "undecodable",
    f"{MAIN}/unknown_audio_codec.mkv": "undecodable",
    f"{MAIN}/no_audio.mp4": "no_audio",
    f"{MAIN}/silent.mp4": "silent_audio",
    f"{MAIN}/audio_only.mp4": "no_video",
    f"{MAIN}/no_face.mp4": "no_face",
    f"{MAIN}/short.mp4": "too_short",
    f"{MAIN}/long.mp4": "too_long",
    f"{MAIN}/wide.mp4": "too_large",  # max_pixels
    f"{MAIN}/heavy.mp4": "too_large",  # max_bytes
    # metadata problems: refused before any decoding
    f"{MAIN}/label_maybe.mp4": "bad_metadata",
    f"{MAIN}/no_label.mp4": "bad_metadata",
    f"{MAIN}/entry_is_list.mp4": "bad_metadata",
    f"{MAIN}/label_is_int.mp4": "bad_metadata",
    f"{MAIN}/original_is_int.mp4": "bad_metadata",
    f"{MAIN}/link_out.mp4": "path_escape",
    f"{MAIN}/gone.mp4": "missing_file",
    f"{MAIN}/unlisted.mp4": "missing_metadata",
    f"{MAIN}/../outside.mp4": "path_escape",
    "b_no_metadata/x.mp4": "missing_metadata",
    "c_not_json/y.mp4": "bad_metadata",
    "d_json_list/z.mp4": "bad_metadata",
    "e_duplicate/good.mp4": "duplicate_id",
    # one file is one video
    f"{MAIN}/good_link.mp4": "duplicate_of",  # a symlink to good.mp4
    f"{MAIN}/good_copy.mp4": "duplicate_of",  # its bytes under another name
}
# ingested, with the number of clips (7 s at 3.2 s per clip: 2)
INGESTED = {
    "good.mp4": 2, ODD_NAME: 2, "two_faces.mp4": 2, "face_leaves.mp4": 1, "portrait.mp4": 2, "rot90.mp4": 2,
    "rot270.mp4": 2, "vfr.mp4": 2, "hevc.mp4": 2, "vp9_opus.webm": 2, "vp9.mkv": 2, "mjpeg.avi": 2,
    "faststart_cut_50.mp4": 1, "faststart_cut_99.mp4": 2, "fake_of_absent.mp4": 2, "other_face.mp4": 2,
}  # fmt: skip
ABSOLUTE_ENTRY = "/etc/hostname"
CORRUPT = "corrupt_middle.mp4"  # 20 kB of noise over the middle of the stream


def _portrait(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frames[:, :, 24:136])  # (N, 160, 112, 3): the face stays inside


def _write_zoo(root: Path, footage, media, scratch: Path) -> None:
    a, b, audio = footage.a, footage.b, footage.audio
    d = root / MAIN
    d.mkdir(parents=True)
    good = write_video(d / "good.mp4", a, FPS, audio)
    # the same packets in other files (a byte-identical copy would be refused duplicate_of good.mp4)
    media.remux(good, d / ODD_NAME, title="odd name")
    media.remux(good, d / "fake_of_absent.mp4", title="fake of an absent original")
    os.symlink("good.mp4", d / "good_link.mp4")
    (d / "good_copy.mp4").write_bytes(good.read_bytes())
    write_video(d / "other_face.mp4", b, FPS, audio)  # identity B alone: the wrong answer for comparisons

    # two faces: A full size on the left, B at 60 % on the right; A is the main face
    two = np.zeros((len(a), 160, 256, 3), np.uint8)  # (N, H, W, 3)
    two[:, :, :160] = a
    two[:, 32:128, 160:256] = np.stack([cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA) for f in b])
    write_video(d / "two_faces.mp4", two, FPS, audio)
    # the face slides out of the frame between 3.6 s and 4.6 s and stays out
    leaves = np.empty_like(a)
    for i, frame in enumerate(a):
        shift = int(np.clip((i / FPS - 3.6) / 1.0, 0, 1) * 170)
        leaves[i] = frame[:8, :8].reshape(-1, 3).mean(0).astype(np.uint8)
        if shift < 160:
            leaves[i, :, : 160 - shift] = frame[:, shift:]
    write_video(d / "face_leaves.mp4", leaves, FPS, audio)
    # portrait (160 x 112) upright, and stored sideways with a 90 / 270 degree display matrix
    up = _portrait(a)
    write_video(d / "portrait.mp4", up, FPS, audio)
    write_video(d / "rot90.mp4", np.ascontiguousarray(np.rot90(up, -1, axes=(1, 2))), FPS, audio, rotation_deg=90)
    write_video(d / "rot270.mp4", np.ascontiguousarray(np.rot90(up, 1, axes=(1, 2))), FPS, audio, rotation_deg=270)
    # variable frame rate: irregular gaps of 40-160 ms (exact timing: test_media.py)
    gaps = np.random.default_rng(0).choice([1, 1, 2, 3, 4], size=len(a))
    keep = np.cumsum(gaps) - gaps[0]
    keep = keep[keep < len(a)]
    media.write_av(d / "vfr.mp4", a[keep], times_s=keep / FPS, audio=audio)
    # codecs
    write_video(d / "hevc.mp4", a, FPS, audio, codec="libx265")
    write_video(d / "vp9.mkv", a, FPS, audio, codec="libvpx-vp9")
    opus_rate = 48000  # Opus has no 44.1 kHz
    audio48 = np.interp(
        np.arange(len(audio) * opus_rate // AUDIO_RATE) / opus_rate, np.arange(len(audio)) / AUDIO_RATE, audio
    )
    media.write_av(d / "vp9_opus.webm", a, vcodec="libvpx-vp9", audio=audio48, acodec="libopus", audio_rate=opus_rate)
    mjpeg = write_video(d / "mjpeg.avi", a, FPS, audio, codec="mjpeg")
    (d / "unknown_video_codec.avi").write_bytes(mjpeg.read_bytes().replace(b"MJPG", b"QQQQ"))  # fourcc no decoder has
    (d / "unknown_audio_codec.mkv").write_bytes((d / "vp9.mkv").read_bytes().replace(b"A_AAC", b"A_QQQ"))

    # broken files
    (d / "empty.mp4").write_bytes(b"")
    (d / "random_bytes.mp4").write_bytes(np.random.default_rng(1).bytes(100_000))
    data = good.read_bytes()
    fast = media.remux_faststart(good, scratch / "faststart.mp4").read_bytes()
    for pct in (10, 50, 99):
        (d / f"cut_{pct}.mp4").write_bytes(data[: len(data) * pct // 100])
        (d / f"faststart_cut_{pct}.mp4").write_bytes(fast[: len(fast) * pct // 100])
    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 20_000] = np.random.default_rng(0).bytes(20_000)
    (d / CORRUPT).write_bytes(bytes(damaged))
    write_video(d / "no_audio.mp4", a, FPS)
    write_video(d / "silent.mp4", a, FPS, np.zeros_like(audio))
    media.write_audio_only(d / "audio_only.mp4", audio)
    background = np.repeat(a[:, :20, :20].mean(axis=(1, 2), keepdims=True), 160, 1).repeat(160, 2).astype(np.uint8)
    write_video(d / "no_face.mp4", background, FPS, audio)
    write_video(d / "short.mp4", a[:50], FPS, audio[: 2 * AUDIO_RATE])
    # 90 s at 2 fps: over max_duration_s, small on disk
    slow = np.concatenate([a[::12]] * 13)[:180]
    write_video(d / "long.mp4", slow, 2, np.tile(audio, 13)[: 90 * AUDIO_RATE])
    write_video(d / "wide.mp4", np.zeros((3, 480, 640, 3), np.uint8), FPS, audio[: AUDIO_RATE // 8])
    noise = np.random.default_rng(2).integers(0, 256, (60, 160, 160, 3), dtype=np.uint8)
    write_video(d / "heavy.mp4", noise, FPS, audio[: len(noise) * AUDIO_RATE // FPS], crf=0)
    assert (d / "heavy.mp4").stat().st_size > LIMITS["max_bytes"]

    # metadata: every decodable file plus entries that must be refused before decoding
    for name in ("label_maybe.mp4", "no_label.mp4", "entry_is_list.mp4", "label_is_int.mp4", "original_is_int.mp4",
                 "unlisted.mp4"):  # fmt: skip
        (d / name).write_bytes(data)
    outside = scratch / "outside.mp4"  # a real video beside, not under, the data root
    outside.write_bytes(data)
    os.symlink(outside, d / "link_out.mp4")
    listed = sorted(p.name for p in d.iterdir() if p.name not in ("unlisted.mp4", "link_out.mp4"))
    meta = {name: {"label": "REAL", "original": None, "split": "train"} for name in listed}
    meta.update({
        "fake_of_absent.mp4": {"label": "FAKE", "original": "ghost.mp4"},
        "label_maybe.mp4": {"label": "MAYBE", "original": None},
        "no_label.mp4": {"original": None},
        "entry_is_list.mp4": ["REAL"],
        "label_is_int.mp4": {"label": 1},
        "original_is_int.mp4": {"label": "FAKE", "original": 7},
        "link_out.mp4": {"label": "REAL", "original": None},
        "gone.mp4": {"label": "REAL", "original": None},
        "../outside.mp4": {"label": "REAL", "original": None},
        ABSOLUTE_ENTRY: {"label": "REAL", "original": None},
    })  # fmt: skip
    (d / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")

    for part, metadata, name in (("b_no_metadata", None, "x.mp4"), ("c_not_json", "{not json", "y.mp4"),
                                 ("d_json_list", "[1, 2]", "z.mp4"),
                                 ("e_duplicate", json.dumps({"good.mp4": {"label": "REAL"}}), "good.mp4")):  # fmt: skip
        (root / part).mkdir()
        (root / part / name).write_bytes(data)
        if metadata is not None:
            (root / part / "metadata.json").write_text(metadata)


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, footage, media, ingest_config, flow_env):
    """(data root, output root, flow result, data snapshot before the run) of one ingest of the zoo."""
    from flows.ingest import ingest_dfdc

    base = tmp_path_factory.mktemp("zoo")
    data = base / "data"
    _write_zoo(data, footage, media, base)
    before = _snapshot(data)
    out = base / "out"
    result = ingest_dfdc(ingest_config(data, out, preprocess={"limits": LIMITS}))
    return data, out, result, before


@pytest.fixture(scope="module")
def tables(zoo):
    _, out, _, _ = zoo
    manifest = {r["rel_path"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    clips: dict[str, list] = {}
    for shard in pq.read_table(out / "shards.parquet").to_pylist():
        for raw in wds.WebDataset(shard["path"], shardshuffle=False):
            clip = decode_sample(raw)
            clips.setdefault(clip.meta.video_id, []).append(clip)
    return manifest, quarantine, {k: sorted(v, key=lambda c: c.meta.clip) for k, v in clips.items()}


@pytest.mark.parametrize("rel_path, reason", sorted(REFUSED.items()))
def test_bad_input_is_quarantined_with_a_stable_reason_naming_the_file(tables, rel_path, reason):
    _, quarantine, _ = tables
    rows = [q for q in quarantine if q["rel_path"] == rel_path]
    assert [q["reason"] for q in rows] == [reason], rows
    name = os.path.basename(rel_path)
    assert name in rows[0]["error"], rows[0]["error"]


def test_absolute_metadata_entry_is_refused(tables):
    _, quarantine, _ = tables
    (row,) = [q for q in quarantine if q["rel_path"] == ABSOLUTE_ENTRY]
    assert row["reason"] == "path_escape" and "absolute" in row["error"]


def test_nothing_crashed_and_every_video_is_accounted_for(zoo, tables):
    """No `error` / `worker_failed` rows: every refusal had a known cause; counts add up."""
    result = zoo[2]
    manifest, quarantine, _ = tables
    assert {q["reason"] for q in quarantine} <= set(REFUSED.values())
    statuses = {r["rel_path"]: r["status"] for r in manifest.values()}
    statuses.pop(f"{MAIN}/{CORRUPT}")  # either way: test_a_damaged_stream_is_ingested_or_refused_never_crashes
    ingested = {p for p, s in statuses.items() if s == "ingested"}
    assert ingested == {f"{MAIN}/{name}" for name in INGESTED}
    assert set(statuses.values()) == {"ingested", "quarantined"}  # nothing left "planned"
    refused = {q["rel_path"] for q in quarantine} - {f"{MAIN}/{CORRUPT}"}
    assert refused == set(REFUSED) | {ABSOLUTE_ENTRY}
    assert result["ingested"] + result["quarantined"] == len(INGESTED) + len(REFUSED) + 2


def test_a_damaged_stream_is_ingested_or_refused_never_crashes(tables):
    """Noise over the middle of the stream: the decoder stops at the damage. The clips before it
    are kept (or, had none survived, the video would be refused as truncated/undecodable)."""
    manifest, quarantine, _ = tables
    row = manifest[f"{MAIN}/{CORRUPT}"]
    if row["status"] == "quarantined":
        (q,) = [q for q in quarantine if q["rel_path"] == f"{MAIN}/{CORRUPT}"]
        assert q["reason"] in ("truncated", "undecodable") and CORRUPT in q["error"]
    else:
        assert row["status"] == "ingested" and row["clips"] >= 1
        _assert_same_face(tables, CORRUPT, "good.mp4")


@pytest.mark.parametrize("name, n_clips", sorted(INGESTED.items()))
def test_usable_input_is_ingested_with_its_clips(tables, name, n_clips):
    manifest, _, clips = tables
    row = manifest[f"{MAIN}/{name}"]
    assert row["status"] == "ingested" and row["clips"] == n_clips
    got = clips[row["video_id"]]
    assert [c.meta.clip for c in got] == list(range(n_clips))
    for c in got:
        assert c.frames.shape == (16, 64, 64, 3) and c.frames.std() > 10  # a face, not padding
        assert c.meta.detected_frac >= 0.5


def _crop_diff(x: list, y: list) -> float:
    """Mean absolute pixel difference of two clip lists' face crops (0..255)."""
    return float(np.mean([np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() for a, b in zip(x, y)]))


def _clips_of(tables, name):
    manifest, _, clips = tables
    return clips[manifest[f"{MAIN}/{name}"]["video_id"]]


def _assert_same_face(tables, name, reference, *, box_px=1.5):
    """name's clips crop the face reference's clips crop: same boxes, and pixels far closer to
    them than to the other identity's crops (codec noise on a 64 px crop is ~6-9 grey levels)."""
    got, ref, other = _clips_of(tables, name), _clips_of(tables, reference), _clips_of(tables, "other_face.mp4")
    for g, r in zip(got, ref):
        assert np.allclose(g.meta.face_box, r.meta.face_box, atol=box_px), (g.meta.face_box, r.meta.face_box)
    assert _crop_diff(got, ref) < 0.5 * _crop_diff(got, other), (_crop_diff(got, ref), _crop_diff(got, other))


@pytest.mark.parametrize("name", ["hevc.mp4", "vp9_opus.webm", "vp9.mkv", "mjpeg.avi", "vfr.mp4", ODD_NAME])
def test_other_codecs_and_containers_give_the_same_crops(tables, name):
    _assert_same_face(tables, name, "good.mp4")


def test_the_main_face_is_the_larger_of_two(tables):
    # the tracker settles within a few frames; the smoothed boxes agree to ~3 px
    _assert_same_face(tables, "two_faces.mp4", "good.mp4", box_px=3.0)


def test_a_face_leaving_the_frame_keeps_only_the_clips_where_it_is_seen(tables):
    manifest, _, _ = tables
    assert [c.meta.clip for c in _clips_of(tables, "face_leaves.mp4")] == [0]
    assert manifest[f"{MAIN}/face_leaves.mp4"]["duration"] == pytest.approx(7.0)
    _assert_same_face(tables, "face_leaves.mp4", "good.mp4")  # clip 0: the face, not the background it left


@pytest.mark.parametrize("name, rotation", [("rot90.mp4", 90), ("rot270.mp4", 270)])
def test_rotated_portrait_video_is_ingested_upright(tables, name, rotation):
    manifest, _, _ = tables
    row = manifest[f"{MAIN}/{name}"]
    assert (row["width"], row["height"], row["rotation"]) == (112, 160, rotation)
    _assert_same_face(tables, name, "portrait.mp4")
    rotated, upright = _clips_of(tables, name), _clips_of(tables, "portrait.mp4")
    sideways = [type(c)(c.key, np.rot90(c.frames, 1, axes=(1, 2)), c.mel, c.meta) for c in upright]
    assert _crop_diff(rotated, upright) < 0.5 * _crop_diff(rotated, sideways)


def test_truncated_but_indexed_mp4_keeps_the_clips_that_decode(tables):
    """An mp4 with its index first, cut at 50 % (3.5 s of 7 s): clip 0 is kept, clip 1 is not."""
    (cut,), good = _clips_of(tables, "faststart_cut_50.mp4"), _clips_of(tables, "good.mp4")
    # same packets, same pixels; only the last frames' smoothed boxes see the missing tail
    np.testing.assert_array_equal(cut.frames[:13], good[0].frames[:13])
    # the audio ends at 3.2 s too: the last 40 ms of mel windows run past it and are silence-padded
    np.testing.assert_allclose(cut.mel[:, :316].astype(np.float32), good[0].mel[:, :316].astype(np.float32), atol=0.05)


def test_fake_with_an_absent_original_is_kept_and_reported(zoo, tables):
    data = zoo[0]
    manifest, _, _ = tables
    row = manifest[f"{MAIN}/fake_of_absent.mp4"]
    assert row["status"] == "ingested" and row["label"] == "FAKE" and row["original"] == "ghost"
    assert row["group"] == "ghost"  # its own group: it cannot leak across splits with anything
    assert scan_dfdc(str(data)).missing_originals == ["ghost"]


def test_odd_file_names_get_shard_safe_ids(tables):
    manifest, _, clips = tables
    vid = manifest[f"{MAIN}/{ODD_NAME}"]["video_id"]
    assert vid == video_id_of(ODD_NAME) and vid.isascii() and " " not in vid
    assert {c.key for c in clips[vid]} == {f"{vid}/000", f"{vid}/001"}


def test_duplicate_id_keeps_the_first_part(tables):
    manifest, _, _ = tables
    assert manifest[f"{MAIN}/good.mp4"]["status"] == "ingested"
    assert "e_duplicate/good.mp4" not in manifest


def test_ingest_never_writes_into_the_data_root(zoo):
    """Outputs, temp files and locks go under `out` only (the data root may be read-only)."""
    data, out, _, before = zoo
    assert _snapshot(data) == before
    assert (out / "manifest.parquet").exists() and (out / ".ingest.lock").exists()
