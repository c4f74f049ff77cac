"""storage.shard_io: the one shard writer (atomic, reproducible bytes) and the reader stages, on real tars."""

import hashlib
import os
import tarfile

import numpy as np
import pytest

from storage.shard_schema import ClipMeta, encode_sample
from storage.shard_io import Pipeline, ShardWriter, batched, open_shards, read_clips, read_samples, tar_samples


def _sample(video_id: str, clip: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)  # (T, H, W, 3)
    mel = rng.normal(size=(8, 12)).astype(np.float16)  # (F, Tm)
    meta = ClipMeta(video_id=video_id, clip=clip, label="REAL", split="train", group=video_id, original=None,
                    start_s=0.0, fps=5.0, num_frames=2, face_box=[0.0, 0.0, 16.0, 16.0], det_score=1.0,
                    detected_frac=1.0, mel_hop_s=0.01)  # fmt: skip
    return encode_sample(frames, mel, meta)


def _write(uri: str, samples: list[dict]) -> ShardWriter:
    with ShardWriter(uri) as sink:
        for s in samples:
            sink.write(s)
    return sink


def test_a_written_shard_reads_back_and_describes_itself(tmp_path):
    uri = str(tmp_path / "shards" / "train" / "p-00000.tar")
    samples = [_sample("vid_a", 0), _sample("vid_a", 1, seed=1), _sample("vid_b", 0, seed=2)]
    sink = _write(uri, samples)
    data = open(uri, "rb").read()
    assert (sink.samples, sink.bytes, sink.sha256) == (3, len(data), hashlib.sha256(data).hexdigest())
    raw = list(read_samples(uri))
    assert [r["__key__"] for r in raw] == ["vid_a/000", "vid_a/001", "vid_b/000"]
    assert all(r[k] == s[k] for r, s in zip(raw, samples) for k in s if k != "__key__")  # members byte for byte
    clips = list(read_clips(uri))
    assert clips[1].frames.shape == (2, 16, 16, 3) and clips[1].mel.shape == (8, 12) and clips[1].meta.clip == 1


def test_the_same_samples_give_byte_identical_shards_with_fixed_headers(tmp_path):
    a = _write(str(tmp_path / "a.tar"), [_sample("v", 0)])
    b = _write(str(tmp_path / "b.tar"), [_sample("v", 0)])
    assert a.sha256 == b.sha256
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert {(m.mtime, m.uname, m.gname, m.mode) for m in tar.getmembers()} == {(0, "avff", "avff", 0o444)}


def test_an_exception_inside_the_block_publishes_nothing_and_keeps_the_old_shard(tmp_path):
    uri = str(tmp_path / "s.tar")
    old = _write(uri, [_sample("old", 0)])
    with pytest.raises(RuntimeError, match="killed"):
        with ShardWriter(uri) as sink:
            sink.write(_sample("new", 0))
            raise RuntimeError("killed mid-shard")
    assert hashlib.sha256(open(uri, "rb").read()).hexdigest() == old.sha256
    assert [r["__key__"] for r in read_samples(uri)] == ["old/000"]
    assert os.listdir(tmp_path) == ["s.tar"]  # no temp file left beside it
    with pytest.raises(RuntimeError, match="killed"):
        with ShardWriter(str(tmp_path / "never.tar")) as sink:
            raise RuntimeError("killed before the first sample")
    assert not (tmp_path / "never.tar").exists()


def test_write_outside_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError, match="outside"):
        ShardWriter(str(tmp_path / "s.tar")).write(_sample("v", 0))


def test_the_reader_stages_compose_into_a_batched_pipeline(tmp_path):
    urls = [str(tmp_path / f"{i}.tar") for i in range(2)]
    for i, url in enumerate(urls):
        _write(url, [_sample(f"v{i}", c, seed=c) for c in range(3)])
    keys = lambda batch: [s["__key__"] for s in batch]  # noqa: E731
    pipeline = Pipeline(lambda: iter([{"url": u} for u in urls]), open_shards, tar_samples, batched(4, keys))
    assert list(pipeline) == [["v0/000", "v0/001", "v0/002", "v1/000"], ["v1/001", "v1/002"]]
