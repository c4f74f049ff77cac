"""Security properties: servers on loopback only, no path escaping its root, untrusted shards.

Covered elsewhere (not repeated here):
- shards with `.pickle` / `.pyd` members are refused, never unpickled:
  tests/storage/test_shard_schema.py::test_pickle_member_is_refused_and_never_executed
- npy members are loaded with allow_pickle=False: tests/storage/test_shard_schema.py::test_npy_with_object_dtype_is_refused
- a code-running pickle posing as a checkpoint is refused:
  tests/tasks/train/test_checkpoint.py::test_a_malicious_pickle_posing_as_a_checkpoint_is_refused
- checkpoint pointers naming ../ are refused: tests/tasks/train/test_checkpoint.py::test_store_pointers_resolve_and_prune
- metadata entries with ../, absolute paths and symlinks out: tests/tasks/ingest/test_scan_splits.py and
  tests/reliability/test_bad_input.py (quarantined as path_escape); storage.fs.confine itself:
  tests/storage/test_shard_schema.py::test_confine_refuses_escapes
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from pydantic import ValidationError

from storage import fs
from storage.shard_schema import ClipMeta, ShardFormatError, decode_sample, encode_sample

# --------------------------------------------------------------------------- listening sockets

_LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}  # /proc/net hex


def _listening() -> dict[str, str]:
    """socket inode -> 'address:port' for every TCP socket in LISTEN state (IPv4 and IPv6)."""
    found = {}
    for table in ("tcp", "tcp6"):
        with open(f"/proc/net/{table}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A":  # TCP_LISTEN
                    found[cols[9]] = cols[1]
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    except OSError:
        pass  # exited
    return inodes


@pytest.mark.slow
def test_every_server_this_session_started_listens_on_loopback_only(ray_address, flow_env, procs):
    """The Ray head (GCS, raylet, agents, client server), its workers, this process as a Ray
    driver (flows.ingest.init_ray) and the Prefect API server: no socket reachable off-host."""
    from flows.ingest import init_ray

    ray = init_ray(ray_address, None)
    ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker exists while we look
    listening = _listening()
    seen = {}
    for pid in procs.descendants(os.getpid()):
        for inode in _socket_inodes(pid) & listening.keys():
            seen[f"{pid} {procs.cmdline(pid)[:80]} {inode}"] = listening[inode]
    ports = {int(addr.split(":")[1], 16) for addr in seen.values()}
    assert int(ray_address.rsplit(":", 1)[1]) in ports  # the GCS was among them
    assert int(flow_env["PREFECT_API_URL"].rsplit(":", 1)[1].split("/")[0]) in ports  # so was Prefect
    exposed = {who: addr for who, addr in seen.items() if addr.split(":")[0] not in _LOOPBACK}
    assert not exposed, exposed


# --------------------------------------------------------------------------- untrusted shards


def _meta(**kw) -> ClipMeta:
    base = dict(video_id="abcdefghij", clip=0, label="REAL", split="train", group="abcdefghij", original=None,
                start_s=0.0, fps=5.0, num_frames=2, face_box=[0.0, 0.0, 8.0, 8.0], det_score=0.9,
                detected_frac=1.0, mel_hop_s=0.01)  # fmt: skip
    return ClipMeta(**{**base, **kw})


def _sample(**kw) -> dict:
    return encode_sample(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((4, 4), np.float32), _meta(**kw))


def _tar_with_members(path: Path, members: dict[str, bytes]) -> Path:
    """A tar written member by member (tarfile, not webdataset): names are taken as given."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_shard_whose_member_names_climb_out_is_refused_and_writes_nothing(tmp_path):
    """A tar whose members are named ../../x/000.*: the reader never extracts anything to disk,
    and the sample key ('../../x/000') is refused by decode_sample."""
    good = _sample()
    members = {f"../../escaped/000.{k}": v for k, v in good.items() if not k.startswith("__")}
    (tmp_path / "shards").mkdir()
    shard = _tar_with_members(tmp_path / "shards" / "evil.tar", members)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    (raw,) = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert raw["__key__"].startswith("../")
    with pytest.raises(ShardFormatError, match="invalid sample key"):
        decode_sample(raw)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize(
    "kind, why",
    [(tarfile.SYMTYPE, "a symlink"), (tarfile.LNKTYPE, "a hard link"), (tarfile.CHRTYPE, "a character device"),
     (tarfile.BLKTYPE, "a block device"), (tarfile.FIFOTYPE, "a FIFO"), (tarfile.DIRTYPE, "a directory")],
    ids=["symlink", "hardlink", "chardev", "blockdev", "fifo", "directory"],
)  # fmt: skip
def test_a_shard_member_that_is_not_a_regular_file_is_refused_not_skipped(tmp_path, kind, why):
    """Issue 27: training's tar reader (webdataset's) silently skipped symlinks, hard links and
    devices while ``../`` names and pickles raised. Every member type but a regular file now
    raises ShardFormatError naming the member; the same shard without it reads as before."""
    from storage.shard_io import read_samples

    good = {f"000.{k}": v for k, v in _sample().items() if not k.startswith("__")}
    clean = _tar_with_members(tmp_path / "clean.tar", good)
    assert [s["__key__"] for s in read_samples(str(clean))] == ["000"]
    path = tmp_path / "odd.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in good.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        odd = tarfile.TarInfo("000.odd")
        odd.type = kind
        odd.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
        tar.addfile(odd)
    with pytest.raises(ShardFormatError, match=rf"odd\.tar: member '000\.odd' is {why}, not a regular file"):
        list(read_samples(str(path)))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: {**m, "video_id": "../../etc"}, "not this sample"),  # json disagrees with the key
        (lambda m: {**m, "clip": 7}, "not this sample"),
        (lambda m: {**m, "label": "UNKNOWN"}, "label"),
        (lambda m: {**m, "num_frames": 10**12}, "num_frames"),  # refused without building a 10**12 list
        (lambda m: {**m, "exec": "os.system('x')"}, "not a ClipMeta"),  # unknown field
        (lambda m: {k: v for k, v in m.items() if k != "label"}, "not a ClipMeta"),
    ],
)
def test_a_sample_whose_json_lies_is_refused(edit, match):
    sample = _sample()
    sample["json"] = json.dumps(edit(json.loads(sample["json"]))).encode()
    with pytest.raises(ShardFormatError, match=match):
        decode_sample(sample)


# --------------------------------------------------------------------------- paths from records and parameters


@pytest.mark.slow  # starts a Prefect server
def test_a_moved_output_root_is_indexed_where_it_now_is(ingest_config, footage, tmp_path, flow_env):
    """Completion records name their shard by absolute path. After the output root is moved
    (or a record is edited to point elsewhere) a rerun must index the shards under the
    new root only, never a path the record names."""
    from flows.ingest import ingest_dfdc

    data = tmp_path / "data" / "part_0"
    data.mkdir(parents=True)
    shutil.copy(footage.source, data / "aaaaaaaaaa.mp4")
    (data / "metadata.json").write_text(json.dumps({"aaaaaaaaaa.mp4": {"label": "REAL", "original": None}}))
    first = tmp_path / "first"
    ingest_dfdc(ingest_config(data.parent, first))
    (record,) = first.rglob("*.tar.json")
    tampered = json.loads(record.read_text())
    tampered["shard"] = "/etc/passwd"
    record.write_text(json.dumps(tampered))
    moved = tmp_path / "moved"
    first.rename(moved)

    result = ingest_dfdc(ingest_config(data.parent, moved))
    assert result["skipped_units"] == 1 and result["shards"] == 1  # the shard is reused, not redone
    (row,) = pq.read_table(moved / "shards.parquet").to_pylist()
    assert Path(row["path"]).is_relative_to(moved / "shards") and Path(row["path"]).exists()
    assert fs.sha256_of(row["path"]) == row["sha256"]


def test_resource_bounds_come_from_config_and_nonsense_is_refused(ingest_config, tmp_path):
    """The flow's typed config carries every bound to the per-video code; a bound that would
    switch a check off (zero, negative) is refused before any video is opened."""
    from tasks.ingest.video import Limits

    data = tmp_path / "data"  # the output may not sit inside the input
    limits = dict(max_bytes=10_000, max_duration_s=5.0, max_pixels=64 * 64, read_seconds=4.0)
    cfg = ingest_config(data, tmp_path / "out", preprocess={"limits": limits})
    assert cfg.preprocess.limits == Limits(max_bytes=10_000, max_duration_s=5.0, max_pixels=4096, read_seconds=4.0)
    for bad in (dict(max_bytes=0), dict(max_duration_s=-1.0), dict(max_pixels=0), dict(read_seconds=0.0),
                dict(max_duration_s=float("nan"))):  # fmt: skip
        with pytest.raises(ValidationError, match=next(iter(bad))):  # refused by the config, naming the field
            ingest_config(data, tmp_path / "out", preprocess={"limits": bad})
        with pytest.raises(ValueError, match=next(iter(bad))):  # and by the per-video code's own config
            Limits(**bad)
    for bad in (dict(frames_per_clip=65), dict(max_clips=0), dict(face_size=4096)):
        with pytest.raises(ValidationError):
            ingest_config(data, tmp_path / "out", preprocess=bad)
