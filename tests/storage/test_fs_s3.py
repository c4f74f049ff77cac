"""storage.fs against a real S3 API: a moto server on 127.0.0.1, reached through s3fs.

The endpoint comes from ``AWS_ENDPOINT_URL``, which botocore (>= 1.31, here through
aiobotocore) reads for every client: no endpoint option in code, the same as a user
pointing avff at MinIO or another S3-compatible store.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from deployments.stack import free_port, wait_for_port
from tests.processes import stop
from storage import fs


@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> str:
    """A fresh bucket on a moto server bound to 127.0.0.1, for this module; 's3://NAME'."""
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}  # fmt: skip
    s3fs_class = fsspec.get_filesystem_class("s3")
    try:
        wait_for_port(port, proc, timeout=60, name="moto_server")
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            s3fs_class.clear_instance_cache()  # a cached S3FileSystem would keep an older endpoint
            name = f"avff-test-{uuid.uuid4().hex[:8]}"
            boto3.client("s3").create_bucket(Bucket=name)
            yield f"s3://{name}"
            s3fs_class.clear_instance_cache()
    finally:
        stop(proc)


def _open_uploads(bucket: str) -> list:
    import boto3

    return boto3.client("s3").list_multipart_uploads(Bucket=bucket.removeprefix("s3://")).get("Uploads", [])


def test_atomic_write_reads_back_with_its_hash(bucket):
    uri = f"{bucket}/round/trip.bin"
    data = os.urandom(1000)
    assert not fs.exists(uri)
    fs.atomic_write_bytes(uri, data)
    assert fs.exists(uri) and fs.read_bytes(uri) == data
    assert fs.sha256_of(uri) == hashlib.sha256(data).hexdigest()
    fs.atomic_write_bytes(uri, b"")  # overwriting, with an empty object
    assert fs.read_bytes(uri) == b""


@pytest.mark.parametrize("size", [7, 6 << 20], ids=["one-shot", "multipart"])
def test_failed_write_publishes_nothing(bucket, size):
    """An error mid-write leaves no object, partial or empty, and no open multipart upload."""
    uri = f"{bucket}/failed/{size}.bin"
    with pytest.raises(RuntimeError, match="disk full"):
        with fs.atomic_open(uri) as f:
            f.write(os.urandom(size))  # 6 MiB > s3fs's 5 MiB block: one part is already uploaded
            raise RuntimeError("disk full")
    assert not fs.exists(uri)
    assert fs.list_files(f"{bucket}/failed", ".bin") == []
    assert _open_uploads(bucket) == []


def test_failed_overwrite_keeps_the_old_object(bucket):
    uri = f"{bucket}/keep/old.bin"
    fs.atomic_write_bytes(uri, b"old")
    with pytest.raises(RuntimeError):
        with fs.atomic_open(uri) as f:
            f.write(b"new but partial")
            raise RuntimeError("killed")
    assert fs.read_bytes(uri) == b"old"


def test_list_files_recurses_and_hides_dotfiles(bucket):
    root = f"{bucket}/listing"
    for rel in ("shards/train/a-00000.tar", "shards/val/b-00000.tar", "shards/train/a-00000.tar.json",
                "shards/train/.a-00001.tar", "manifest.parquet"):  # fmt: skip
        fs.atomic_write_bytes(f"{root}/{rel}", b"x")
    assert fs.list_files(root, ".tar") == [f"{root}/shards/train/a-00000.tar", f"{root}/shards/val/b-00000.tar"]
    assert fs.list_files(f"{root}/nothing-here", ".tar") == []


def test_parquet_round_trip_and_layout(bucket):
    layout = fs.IngestLayout(f"{bucket}/ingest")
    table = pa.table({"path": [layout.shard("train", "dfdc_train_part_0", 0)], "samples": [3], "sha256": ["ab" * 32]})
    fs.write_parquet(table, layout.shard_index)
    assert layout.shard_index == f"{bucket}/ingest/shards.parquet"
    assert fs.read_parquet(layout.shard_index).equals(table)
    assert table["path"][0].as_py() == f"{bucket}/ingest/shards/train/dfdc_train_part_0-00000.tar"
