"""Resume trusts a shard only after checking its bytes: a complete-looking shard that was damaged
since (4 KiB overwritten in the middle) is rewritten, not indexed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import webdataset as wds

from storage import fs
from storage.shard_schema import decode_sample
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.ingest.write_unit import UnitVideo, fingerprint, is_complete, plan_units, process_unit, shard_intact

PRE = PreprocessConfig(face_size=64, max_clips=2)


@pytest.fixture(scope="module")
def detector():
    with face_detector(PRE) as det:
        yield det


def _unit(video: Path, out: Path):
    v = UnitVideo("talk", str(video), video.name, "p0", "REAL", "train", "talk", None, fingerprint(str(video)))
    (unit,) = plan_units([v], fs.IngestLayout(str(out)).shard, videos_per_shard=8)
    return unit


def _damage(path: Path, size: int = 4096) -> None:
    """Overwrite ``size`` bytes in the middle of the file with other bytes, keeping its length."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        block = f.read(size)
        f.seek(-len(block), os.SEEK_CUR)
        f.write(bytes(b ^ 0xA5 for b in block))


def test_a_shard_damaged_after_its_record_is_rewritten_on_resume(footage, detector, tmp_path):
    unit = _unit(footage.source, tmp_path / "out")
    first = process_unit(unit, PRE, detector=detector)
    shard = Path(unit.shard)
    good = shard.read_bytes()
    assert first.samples == 2 and first.sha256 == fs.sha256_of(unit.shard)
    assert is_complete(unit, PRE.hash())  # intact: a rerun would skip it

    _damage(shard)
    assert shard.stat().st_size == len(good) and shard.read_bytes() != good
    assert not shard_intact(unit.shard, json.loads(Path(fs.IngestLayout.record_of(unit.shard)).read_text()))
    assert is_complete(unit, PRE.hash()) is None  # the record alone no longer vouches for it

    again = process_unit(unit, PRE, detector=detector)
    assert not again.skipped and again.sha256 == first.sha256
    assert shard.read_bytes() == good  # byte-identical rewrite
    clips = [decode_sample(s) for s in wds.WebDataset(unit.shard, shardshuffle=False)]
    assert [c.meta.clip for c in clips] == [0, 1]
    assert process_unit(unit, PRE, detector=detector).skipped  # and now it verifies again


def test_a_shard_of_another_length_is_refused_without_hashing_it(footage, detector, tmp_path):
    """A truncated or extended shard fails the size check first (no full read needed)."""
    unit = _unit(footage.source, tmp_path / "out")
    process_unit(unit, PRE, detector=detector)
    with open(unit.shard, "ab") as f:
        f.write(b"\0" * 512)
    assert is_complete(unit, PRE.hash()) is None
    os.remove(unit.shard)
    assert is_complete(unit, PRE.hash()) is None
