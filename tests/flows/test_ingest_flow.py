"""ingest-dfdc end to end: real videos, real mediapipe, real Prefect flow runs, real shards."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from storage.shard_schema import decode_sample
from tasks.ingest.units import IngestLockedError, output_lock


def _metadata(root: Path) -> dict:
    entries = {}
    for meta in root.rglob("metadata.json"):
        for name, e in json.loads(meta.read_text()).items():
            entries[Path(name).stem] = e
    return entries


def _shard_hashes(out: Path) -> dict:
    t = pq.read_table(out / "shards.parquet").to_pylist()
    return {os.path.relpath(r["path"], out): r["sha256"] for r in t}


@pytest.mark.slow  # starts a Prefect server
def test_manifest_lists_every_video_with_probe_facts(ingested, dfdc_sample):
    meta = _metadata(dfdc_sample)
    m = pq.read_table(ingested / "manifest.parquet").to_pylist()
    assert {r["video_id"] for r in m} == set(meta)
    for r in m:
        assert r["label"] == meta[r["video_id"]]["label"]
        assert r["status"] == "ingested", r
        assert r["duration"] == pytest.approx(7.0, abs=0.1) and r["width"] == 160 and r["has_audio"]
        assert r["clips"] == 2 and r["split"] in ("train", "val", "test")
        if r["label"] == "FAKE":
            assert r["original"] == Path(meta[r["video_id"]]["original"]).stem == r["group"]


@pytest.mark.slow  # starts a Prefect server
def test_no_group_crosses_splits_or_folds(ingested):
    m = pq.read_table(ingested / "manifest.parquet").to_pylist()
    splits, folds = defaultdict(set), defaultdict(set)
    for r in m:
        splits[r["group"]].add(r["split"])
        folds[r["group"]].add(r["fold"])
    assert all(len(v) == 1 for v in splits.values()) and all(len(v) == 1 for v in folds.values())
    assert {r["split"] for r in m} == {"train", "val", "test"}


@pytest.mark.slow  # starts a Prefect server
def test_shards_read_back_through_webdataset(ingested):
    index = pq.read_table(ingested / "shards.parquet").to_pylist()
    manifest = {r["video_id"]: r for r in pq.read_table(ingested / "manifest.parquet").to_pylist()}
    seen = set()
    for shard in index:
        samples = list(wds.WebDataset(shard["path"], shardshuffle=False))
        assert len(samples) == shard["samples"]
        for raw in samples:
            clip = decode_sample(raw)
            m = clip.meta
            assert clip.frames.shape == (16, 64, 64, 3) and clip.frames.dtype == np.uint8
            assert clip.mel.shape == (128, 320) and clip.mel.dtype == np.float16
            assert m.split == shard["split"] == manifest[m.video_id]["split"]  # one split per shard
            assert m.label == manifest[m.video_id]["label"]
            assert m.start_s == pytest.approx(m.clip * 3.2) and m.fps == 5.0 and m.mel_hop_s == 0.01
            assert m.detected_frac >= 0.5 and 0.5 <= m.det_score <= 1.0
            assert clip.frames.std() > 10  # a face, not padding
            seen.add(clip.key)
    assert len(seen) == sum(s["samples"] for s in index)
    assert all(not p.name.startswith(".") for p in (ingested / "shards").rglob("*"))  # no temp files left


@pytest.mark.slow  # starts a Prefect server
def test_rerun_does_no_new_work(ingested, dfdc_sample, ingest_config):
    from flows.ingest import ingest_dfdc

    before = _shard_hashes(ingested)
    mtimes = {p: p.stat().st_mtime_ns for p in (ingested / "shards").rglob("*.tar")}
    result = ingest_dfdc(ingest_config(dfdc_sample, ingested))
    assert result["skipped_units"] == result["shards"] == len(before)
    assert _shard_hashes(ingested) == before
    assert {p: p.stat().st_mtime_ns for p in (ingested / "shards").rglob("*.tar")} == mtimes


@pytest.mark.slow  # starts a Prefect server
def test_killed_run_resumes_to_identical_shards(ingested, dfdc_sample, tmp_path):
    """kill -9 the CLI mid-run, rerun: same shards as the uninterrupted run, nothing partial visible.

    End to end (Prefect, the CLI, several units); the fast twin on one bare unit is in
    tests/tasks/ingest/test_units.py."""
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "ingest",
        "--data",
        str(dfdc_sample),
        "--out",
        str(out),
        "--executor",
        "local",
        "--face-size",
        "64",
        "--videos-per-shard",
        "8",
    ]
    # the session fixture used ratios (0.6, 0.2, 0.2); the CLI must match it for identical output
    cmd += ["--ratios", "0.6", "0.2", "0.2"]
    # its own process group: kill -9 takes the CLI *and* the temporary Prefect server it started
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "shards").rglob("*.tar.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "shards").rglob("*.tar.json")))
    assert 1 <= done_before < len(_shard_hashes(ingested)), "kill landed mid-run"
    assert not (out / "shards.parquet").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout[rerun.stdout.index("{") :])["skipped_units"] >= done_before
    assert _shard_hashes(out) == _shard_hashes(ingested)
    assert not [p for p in out.rglob(".*.tmp")]


@pytest.mark.slow  # starts a Prefect server and a Ray head
def test_ray_fanout_gives_identical_shards(ray_address, dfdc_sample, ingested, ingest_config, tmp_path):
    from flows.ingest import ingest_dfdc

    out = tmp_path / "ray_out"
    result = ingest_dfdc(ingest_config(dfdc_sample, out, executor="ray", ray_address=ray_address))
    assert result["quarantined"] == 0
    assert _shard_hashes(out) == _shard_hashes(ingested)


def test_second_ingest_on_same_output_refuses(tmp_path):
    with output_lock(str(tmp_path)):
        with pytest.raises(IngestLockedError, match="another ingest"):
            with output_lock(str(tmp_path)):
                pass
    with output_lock(str(tmp_path)):  # released: usable again
        pass


def test_the_ingest_flow_parameter_refuses_a_flat_preprocessing_key_naming_its_place(tmp_path):
    """What a deployment run or the Prefect form hands the flow is validated into IngestSettings: the same refusal."""
    from prefect.exceptions import ParameterTypeError

    from flows.ingest import ingest_dfdc

    config = {"data": str(tmp_path / "in"), "out": str(tmp_path / "out"), "face_size": 64}
    with pytest.raises(
        ParameterTypeError, match=r"face_size is a preprocessing setting: give it as preprocess\.face_size"
    ):
        ingest_dfdc.validate_parameters({"config": config})


def test_relative_local_paths_are_resolved_where_the_flow_runs(tmp_path, monkeypatch):
    """Ray workers run in their own directory: the flow hands them absolute paths."""
    from tasks.ingest.settings import IngestSettings

    monkeypatch.chdir(tmp_path)
    cfg = IngestSettings(data="data/sample", out="./data/shards")
    assert (cfg.data, cfg.out) == (str(tmp_path / "data" / "sample"), str(tmp_path / "data" / "shards"))
    assert IngestSettings(data="s3://bucket/dfdc", out="s3://bucket/shards").out == "s3://bucket/shards"


@pytest.mark.slow  # starts a Prefect server
def test_a_run_that_ingests_nothing_fails_and_says_why(tmp_path, ingest_config, prefect_server):
    """Every video unusable: the flow run fails naming the reason; CV on that output refuses before training."""
    from flows.experiments import CVConfig, fold_jobs
    from flows.ingest import ingest_dfdc
    from tasks.train.settings import TrainSettings

    part = tmp_path / "dfdc" / "dfdc_train_part_0"
    part.mkdir(parents=True)
    (part / "aaaa.mp4").write_bytes(b"this is not a video")
    (part / "metadata.json").write_text(json.dumps({"aaaa.mp4": {"label": "REAL", "split": "train", "original": None}}))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"none of the 1 videos .* was ingested.*aaaa\.mp4"):
        ingest_dfdc(ingest_config(tmp_path / "dfdc", out))
    assert pq.read_table(out / "quarantine.parquet").num_rows == 1  # recorded before failing
    with pytest.raises(ValueError, match="nothing to cross-validate"):
        fold_jobs(CVConfig(train=TrainSettings(data=str(out), output_dir=str(tmp_path / "cv"))))


def test_a_unit_worker_names_the_unit_that_failed_and_keeps_going(tmp_path):
    """What the Ray driver relies on: a failed unit raises UnitFailed naming its shard (through
    pickling, as Ray carries it), and the same worker, detector and all, writes the next unit."""
    import pickle

    from flows.ingest import UnitFailed, UnitWorker
    from storage import fs
    from tasks.ingest.preprocess import PreprocessConfig
    from tasks.ingest.write_unit import UnitVideo, fingerprint, plan_units
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    data = make_dfdc_sample(tmp_path / "data", n_real=1, parts=0, duration_s=3.5, size=(160, 160), seed=5,
                            manipulations=())  # fmt: skip
    (path,) = data.glob("*.mp4")
    video = UnitVideo(path.stem, str(path), path.name, "p0", "REAL", "train", path.stem, None, fingerprint(str(path)))
    out = tmp_path / "out"
    (unit,) = plan_units([video], fs.IngestLayout(str(out)).shard, videos_per_shard=8)
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "train").write_text("not a directory")  # the shard cannot be published

    worker = UnitWorker(PreprocessConfig(face_size=64), jpeg_quality=90)
    try:
        with pytest.raises(UnitFailed) as failed:
            worker.write(unit)
        (out / "shards" / "train").unlink()
        record = worker.write(unit)
    finally:
        worker.close()
    carried = pickle.loads(pickle.dumps(failed.value))
    assert carried.shard == unit.shard and ("File exists" in carried.error or "Not a directory" in carried.error)
    assert record["shard"] == unit.shard and record["samples"] == 1 and fs.sha256_of(unit.shard) == record["sha256"]
