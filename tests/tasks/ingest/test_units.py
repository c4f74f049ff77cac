"""The plain units of ingest, without Prefect or Ray: plan_units, process_unit and finalize on a
tiny generated DFDC sample, real mediapipe, real shards.

The fast twin of tests/flows/test_ingest_flow.py::test_killed_run_resumes_to_identical_shards
(the CLI killed mid-run, kept as the end-to-end check) is here too: one bare unit whose process
is killed while it writes, then resumed.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from storage import fs
from storage.shard_io import read_clips
from tasks.ingest import units as steps
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.ingest.write_unit import UnitVideo, WorkUnit, fingerprint, largest_first, plan_units, process_unit

PRE = PreprocessConfig(face_size=64)  # a 4 s video gives one 3.2 s clip


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """2 REAL videos + a face-swap of each (4 s, 160 px), one part; plus a garbage file with a
    metadata entry (refused while decoding) and a file without one (refused by the scan)."""
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    root = make_dfdc_sample(tmp_path_factory.mktemp("units") / "data", n_real=2, parts=1, duration_s=4.0,
                            size=(160, 160), seed=5, manipulations=("face_blend",))  # fmt: skip
    part = root / "dfdc_train_part_0"
    (part / "garbage.mp4").write_bytes(b"not a video at all" * 100)
    meta = json.loads((part / "metadata.json").read_text())
    meta["garbage.mp4"] = {"label": "REAL", "split": "train", "original": None}
    (part / "metadata.json").write_text(json.dumps(meta))
    (part / "stray.mp4").write_bytes((part / "garbage.mp4").read_bytes())  # no metadata entry
    return root


@pytest.fixture(scope="module")
def detector():
    with face_detector(PRE) as det:
        yield det


def _videos(sample: Path) -> list[UnitVideo]:
    """The sample's decodable videos, all in the train split."""
    paths = sorted(p for p in (sample / "dfdc_train_part_0").glob("*.mp4") if p.stem not in ("garbage", "stray"))
    return [UnitVideo(p.stem, str(p), p.name, "p0", "REAL", "train", p.stem, None, fingerprint(str(p))) for p in paths]


def _clips(shard: str) -> list[tuple[str, int]]:
    return [(c.meta.video_id, c.meta.clip) for c in read_clips(shard)]


# --------------------------------------------------------------------------- plan_units


def test_plan_units_groups_by_split_and_part_sorts_by_id_and_chunks():
    def video(vid: str, split: str, part: str) -> UnitVideo:
        return UnitVideo(vid, f"/data/{part}/{vid}.mp4", f"{part}/{vid}.mp4", part, "REAL", split, vid, None, "fp")

    videos = [video(v, s, p) for v, s, p in [("e", "train", "p1"), ("b", "train", "p0"), ("a", "val", "p0"),
                                             ("d", "train", "p0"), ("c", "train", "p0")]]  # fmt: skip
    layout = fs.IngestLayout("/out")
    units = plan_units(videos, layout.shard, videos_per_shard=2)
    assert [(u.split, u.part, u.chunk, [v.video_id for v in u.videos]) for u in units] == [
        ("train", "p0", 0, ["b", "c"]),
        ("train", "p0", 1, ["d"]),
        ("train", "p1", 0, ["e"]),
        ("val", "p0", 0, ["a"]),
    ]
    assert [u.shard for u in units] == [layout.shard("train", "p0", 0), layout.shard("train", "p0", 1),
                                        layout.shard("train", "p1", 0), layout.shard("val", "p0", 0)]  # fmt: skip
    # the order the videos arrive in does not change the plan: shard names are stable across runs
    assert plan_units(videos[::-1], layout.shard, videos_per_shard=2) == units


def test_a_pool_takes_the_largest_units_first_and_the_plan_keeps_each_files_size(tmp_path):
    """Units ordered by their videos' bytes (the scan's sizes, carried by the plan), ties in plan order: two
    workers taking 12, 4, 12, 8 and 12 equal videos in that order end 3 videos apart at best; largest first,
    the last unit to start is the smallest."""

    def unit(shard: str, sizes: list[int]) -> WorkUnit:
        vs = tuple(UnitVideo(f"{shard}{i}", "", "", "p0", "REAL", "train", "g", None, "fp", bytes=b)
                   for i, b in enumerate(sizes))  # fmt: skip
        return WorkUnit("train", "p0", 0, shard, vs)

    units = [unit("a", [10] * 12), unit("b", [10] * 4), unit("c", [10] * 12), unit("d", [10] * 8), unit("e", [10] * 12)]
    assert [u.shard for u in largest_first(units)] == ["a", "c", "e", "d", "b"]
    assert [u.shard for u in largest_first([unit("x", [5, 5]), unit("y", [30])])] == ["y", "x"]  # bytes, not count
    for name, size in (("small", 1000), ("big", 5000)):
        (tmp_path / f"{name}.mp4").write_bytes(b"\0" * size)
    (tmp_path / "metadata.json").write_text(json.dumps({"small.mp4": {"label": "REAL"}, "big.mp4": {"label": "REAL"}}))
    result = steps.scan(str(tmp_path))
    units, _ = steps.plan(result, str(tmp_path), fs.IngestLayout(str(tmp_path / "out")), ratios=(1.0, 0.0, 0.0), folds=1,
                    seed=0, videos_per_shard=1)  # fmt: skip
    assert {v.video_id: v.bytes for u in units for v in u.videos} == {"small": 1000, "big": 5000}
    assert [u.videos[0].video_id for u in largest_first(units)] == ["big", "small"]


# --------------------------------------------------------------------------- process_unit


def test_process_unit_writes_the_shard_its_record_describes(sample, detector, tmp_path):
    videos = _videos(sample)
    (unit,) = plan_units(videos, fs.IngestLayout(str(tmp_path)).shard, videos_per_shard=8)
    record = process_unit(unit, PRE, detector=detector)

    assert not record.skipped and not record.quarantined
    assert record.bytes == os.path.getsize(unit.shard) and record.sha256 == fs.sha256_of(unit.shard)
    assert _clips(unit.shard) == [(v.video_id, 0) for v in videos]  # one 3.2 s clip per 4 s video, in id order
    assert record.samples == len(videos) and [v["video_id"] for v in record.videos] == [v.video_id for v in videos]
    assert all(v["clips"] == 1 and v["duration"] == pytest.approx(4.0, abs=0.1) for v in record.videos)
    on_disk = json.loads(Path(fs.IngestLayout.record_of(unit.shard)).read_text())  # the completion record
    assert (on_disk["sha256"], on_disk["signature"]) == (record.sha256, unit.signature(PRE.hash()))

    again = process_unit(unit, PRE, detector=detector)
    assert again.skipped and again.sha256 == record.sha256  # complete and intact: not redone


def test_one_detector_for_many_units_writes_the_bytes_of_a_fresh_one_per_unit(sample, detector, tmp_path):
    """What the Ray actor and the local executor do (one detector per worker) changes no byte."""
    videos = _videos(sample)
    shared = plan_units(videos, fs.IngestLayout(str(tmp_path / "shared")).shard, videos_per_shard=2)
    fresh = plan_units(videos, fs.IngestLayout(str(tmp_path / "fresh")).shard, videos_per_shard=2)
    assert len(shared) == 2
    shared_hashes = [process_unit(u, PRE, detector=detector).sha256 for u in shared]
    fresh_hashes = []
    for u in fresh:
        with face_detector(PRE) as own:
            fresh_hashes.append(process_unit(u, PRE, detector=own).sha256)
    assert shared_hashes == fresh_hashes


def test_a_video_that_does_not_decode_is_quarantined_and_the_others_written(sample, detector, tmp_path):
    good = _videos(sample)[:1]
    path = sample / "dfdc_train_part_0" / "garbage.mp4"
    bad = UnitVideo("garbage", str(path), path.name, "p0", "REAL", "train", "garbage", None, fingerprint(str(path)))
    (unit,) = plan_units(good + [bad], fs.IngestLayout(str(tmp_path)).shard, videos_per_shard=8)
    record = process_unit(unit, PRE, detector=detector)
    assert [q["video_id"] for q in record.quarantined] == ["garbage"]
    assert "garbage.mp4" in record.quarantined[0]["error"] and record.quarantined[0]["reason"]
    assert _clips(unit.shard) == [(good[0].video_id, 0)]


# --------------------------------------------------------------------------- kill and resume


_CHILD = """
import pickle, sys
from tasks.ingest.preprocess import face_detector
from tasks.ingest.write_unit import process_unit
unit, pre = pickle.load(sys.stdin.buffer)
with face_detector(pre) as det:
    process_unit(unit, pre, detector=det)
"""


def _kill_while_writing(unit: WorkUnit, tmp: Path, timeout: float = 240) -> None:
    """Run process_unit in a child process; SIGKILL it once its shard holds a sample but is unfinished."""
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}  # where the shard is written before it is published
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, env=env, cwd=os.getcwd())
    child.stdin.write(pickle.dumps((unit, PRE)))
    child.stdin.close()
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and child.poll() is None:
            if any(p.stat().st_size > 0 for p in tmp.glob("avff-shard-*/shard.tar")):
                break
            time.sleep(0.01)
        assert child.poll() is None, "the unit finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()


def test_a_unit_killed_mid_write_leaves_nothing_visible_and_resumes_to_identical_bytes(sample, detector, tmp_path):
    videos = _videos(sample)
    (reference,) = plan_units(videos, fs.IngestLayout(str(tmp_path / "reference")).shard, videos_per_shard=8)
    expected = process_unit(reference, PRE, detector=detector)

    out = tmp_path / "out"
    (unit,) = plan_units(videos, fs.IngestLayout(str(out)).shard, videos_per_shard=8)
    _kill_while_writing(unit, tmp_path / "tmp")
    assert not [p for p in out.rglob("*") if p.is_file()]  # no shard, no record, no partial file
    resumed = process_unit(unit, PRE, detector=detector)
    assert not resumed.skipped and resumed.sha256 == expected.sha256
    assert Path(unit.shard).read_bytes() == Path(reference.shard).read_bytes()


# --------------------------------------------------------------------------- finalize


def test_finalize_joins_the_plan_the_records_and_every_refusal(sample, detector, tmp_path):
    """Ingested, refused while decoding, refused by the scan, and a failed unit: each video once, with its fate."""
    result = steps.scan(str(sample))
    layout = fs.IngestLayout(str(tmp_path))
    units, planned = steps.plan(result, str(sample), layout, ratios=(1.0, 0.0, 0.0), folds=2, seed=0,
                                videos_per_shard=2)  # fmt: skip
    assert [r.reason for r in result.rejected] == ["missing_metadata"]  # stray.mp4
    assert {r.status for r in planned} == {"planned"} and len(planned) == 5
    failed, done = units[0], units[1:]
    records = [asdict(process_unit(u, PRE, detector=detector)) for u in done]  # as the flow passes them

    manifest, shards, quarantine = steps.finalize(planned, records, result, [(failed, "OSError: disk full")])

    by_id = {r.video_id: r for r in manifest}
    assert list(by_id) == [r.video_id for r in planned]  # the plan's rows and order
    lost = {v.video_id for v in failed.videos}
    for vid, row in by_id.items():
        if vid in lost or vid == "garbage":
            assert row.status == "quarantined" and row.shard is None, row
        else:
            assert row.status == "ingested" and row.clips == 1 and row.width == 160 and row.has_audio, row
            assert row.shard in {u.shard for u in done}
    assert [s.path for s in shards] == sorted(s.path for s in shards)
    written = {rec["shard"]: rec for rec in records if rec["samples"]}
    assert {s.path: (s.samples, s.bytes, s.sha256) for s in shards} == {
        p: (r["samples"], r["bytes"], r["sha256"]) for p, r in written.items()
    }
    reasons = {(q.rel_path.split("/")[-1], q.reason) for q in quarantine}
    assert ("stray.mp4", "missing_metadata") in reasons
    assert {q.video_id for q in quarantine if q.reason == "worker_failed"} == lost
    assert all(failed.shard in q.error and "disk full" in q.error for q in quarantine if q.reason == "worker_failed")
    assert len(quarantine) == 1 + len(lost) + ("garbage" not in lost)
