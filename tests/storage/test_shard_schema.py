import io
import os
import pickle

import numpy as np
import pytest
import webdataset as wds

from storage import fs
from storage.shard_schema import ClipMeta, ShardFormatError, decode_sample, encode_sample


def _meta(**kw):
    base = dict(video_id="abcdefghij", clip=1, label="FAKE", split="train", group="origvideoo", original="origvideoo",
                start_s=3.2, fps=5.0, num_frames=4, face_box=[1.0, 2.0, 30.0, 31.0], det_score=0.9,
                detected_frac=1.0, mel_hop_s=0.01)
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
