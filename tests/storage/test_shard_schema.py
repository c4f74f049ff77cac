import io
import json
import os
import pickle

import numpy as np
import pytest
import webdataset as wds

from storage import fs
from storage.shard_schema import ClipMeta, ShardFormatError, decode_sample, encode_sample, lip_track_steps


def _meta(**kw):
    base = dict(
        video_id="abcdefghij",
        clip=1,
        label="FAKE",
        split="train",
        group="origvideoo",
        original="origvideoo",
        start_s=3.2,
        fps=5.0,
        num_frames=4,
        face_box=[1.0, 2.0, 30.0, 31.0],
        det_score=0.9,
        detected_frac=1.0,
        mel_hop_s=0.01,
    )
    return ClipMeta(**{**base, **kw})


def _write(path, samples):
    with wds.TarWriter(str(path), encoder=False) as w:
        for s in samples:
            w.write(s)


def _read(path):
    return list(wds.WebDataset(str(path), shardshuffle=False, handler=wds.reraise_exception))


def test_round_trip_through_a_real_shard(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    frames[:, :16] = 200  # structure survives JPEG
    mel = rng.normal(size=(128, 320)).astype(np.float32)
    _write(tmp_path / "s.tar", [encode_sample(frames, mel, _meta())])
    (raw,) = _read(tmp_path / "s.tar")
    clip = decode_sample(raw)
    assert clip.key == "abcdefghij/001"
    assert clip.frames.shape == (4, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert np.abs(clip.frames[:, :16].astype(int) - 200).mean() < 3
    assert clip.mel.dtype == np.float16 and clip.mel.shape == (128, 320)
    np.testing.assert_allclose(clip.mel, mel.astype(np.float16))
    assert clip.meta == _meta() and clip.meta.target == 1


def test_pickle_member_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    sample = encode_sample(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 4), np.float32), _meta())
    sample["evil.pickle"] = pickle.dumps(Evil())
    sample["evil.pyd"] = pickle.dumps(Evil())
    _write(tmp_path / "s.tar", [sample])
    (raw,) = _read(tmp_path / "s.tar")
    with pytest.raises(ShardFormatError, match="unexpected member"):
        decode_sample(raw)
    assert not marker.exists()


def test_npy_with_object_dtype_is_refused():
    sample = encode_sample(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 4), np.float32), _meta())
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    sample["mel.npy"] = buf.getvalue()
    with pytest.raises(ValueError):
        decode_sample(sample)


def test_bad_keys_and_incomplete_samples():
    with pytest.raises(ShardFormatError):
        encode_sample(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 4)), _meta(video_id="../etc"))
    good = encode_sample(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 4), np.float32), _meta())
    del good["f03.jpg"]
    with pytest.raises(ShardFormatError, match="num_frames"):
        decode_sample(good)


def test_atomic_open_leaves_no_partial_file_on_error(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with fs.atomic_open(str(target)) as f:
            f.write(b"partial")
            raise RuntimeError("disk full")
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_confine_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "outside.mp4", root / "link.mp4")
    for bad in ("../outside.mp4", "/etc/passwd", "a/../../outside.mp4", "link.mp4"):
        with pytest.raises(fs.PathEscapeError):
            fs.confine(str(root), bad)
    assert fs.confine(str(root), "ok.mp4").endswith("ok.mp4")


def test_a_second_face_has_its_own_key_and_the_main_face_writes_no_face_field(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    mel = rng.normal(size=(32, 32)).astype(np.float32)
    main, second = encode_sample(frames, mel, _meta()), encode_sample(frames, mel, _meta(face=1))
    assert b'"face"' not in main["json"]  # the bytes a shard held before faces existed
    _write(tmp_path / "s.tar", [main, second])
    clips = [decode_sample(raw) for raw in _read(tmp_path / "s.tar")]
    assert [(c.key, c.meta.face) for c in clips] == [("abcdefghij/001", 0), ("abcdefghij/001_f1", 1)]
    # a sample whose json names another face than its key is refused
    forged = {**second, "__key__": "abcdefghij/001"}
    with pytest.raises(ShardFormatError, match="face 1"):
        decode_sample(forged)
    with pytest.raises(ShardFormatError, match="invalid sample key"):
        encode_sample(frames, mel, _meta(face=10))


def test_a_landmark_clip_keeps_its_mouth_box_and_a_box_clip_writes_the_json_it_wrote_before(tmp_path):
    """crop / mouth_box / landmark_frac travel with the sample; left None they are absent from the
    json, so box-crop shards are byte-identical to those written before the fields existed."""
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    mel = np.zeros((8, 10), np.float32)
    box_json = encode_sample(frames, mel, _meta())["json"]
    assert not {"crop", "mouth_box", "landmark_frac", "lip_shape"} & set(json.loads(box_json))
    assert decode_sample({"__key__": "abcdefghij/001", **encode_sample(frames, mel, _meta())}).meta.mouth_box is None
    lips = [[0.1, 1.1], [0.2, 1.0], [0.0, 1.2], [0.15, 1.05]]  # (T, 2) opening, width
    meta = _meta(crop="landmarks", mouth_box=[8.0, 18.0, 24.0, 28.0], landmark_frac=0.75, lip_shape=lips)
    _write(tmp_path / "s.tar", [encode_sample(frames, mel, meta)])
    (raw,) = _read(tmp_path / "s.tar")
    back = decode_sample(raw).meta
    assert (back.crop, back.mouth_box, back.landmark_frac) == ("landmarks", [8.0, 18.0, 24.0, 28.0], 0.75)
    assert back.lip_shape == lips


@pytest.mark.parametrize("lips", [[[0.1, 1.0]] * 3, [[0.1]] * 4, [[0.1, float("nan")]] * 4, [[-0.1, 1.0]] * 4, "0.1"])
def test_a_lip_shape_of_the_wrong_length_or_values_is_refused(lips):
    sample = encode_sample(np.zeros((4, 32, 32, 3), np.uint8), np.zeros((8, 10), np.float32), _meta())
    sample["json"] = json.dumps({**json.loads(sample["json"]), "lip_shape": lips}).encode()
    with pytest.raises(ShardFormatError, match="lip_shape is not 4 rows of"):
        decode_sample(sample)


@pytest.mark.parametrize(
    "box", [[8, 18, 40, 28], [24, 18, 8, 28], [8, 18, 24], "8,18,24,28", [8, float("nan"), 24, 28]]
)
def test_a_mouth_box_outside_the_crop_or_malformed_is_refused(box):
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    sample = encode_sample(frames, np.zeros((8, 10), np.float32), _meta())
    raw = json.loads(sample["json"])
    sample["json"] = json.dumps({**raw, "mouth_box": box}).encode()
    with pytest.raises(ShardFormatError, match="mouth_box .* is not \\[x0, y0, x1, y1\\] inside the 32x32 crop"):
        decode_sample(sample)


def test_a_lip_track_travels_with_the_sample_and_one_of_the_wrong_length_is_refused():
    """A lip track is the clip's span (num_frames / fps s) at 25 fps; absent from a clip without one."""
    frames, mel = np.zeros((4, 32, 32, 3), np.uint8), np.zeros((8, 10), np.float32)
    meta = _meta()
    steps = lip_track_steps(meta.num_frames, meta.fps)
    assert steps == round(meta.num_frames / meta.fps * 25)
    assert "lip_track" not in json.loads(encode_sample(frames, mel, meta)["json"])
    track = [[0.1 + 0.01 * i, 1.0] for i in range(steps)]
    back = decode_sample({"__key__": "abcdefghij/001", **encode_sample(frames, mel, _meta(lip_track=track))}).meta
    assert back.lip_track == track
    short = encode_sample(frames, mel, _meta(lip_track=track[:-1]))
    with pytest.raises(ShardFormatError, match=f"lip_track is not {steps} rows of"):
        decode_sample({"__key__": "abcdefghij/001", **short})
