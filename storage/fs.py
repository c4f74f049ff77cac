"""Every path the project reads or writes goes through here: local paths, file://, s3://, gs://.

fsspec does the work; this module adds atomic writes, root confinement and the
output layout of an ingest run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import fsspec

if TYPE_CHECKING:  # pyarrow loads where a table is read or written: the CLI's flags import this module
    import pyarrow as pa


class PathEscapeError(ValueError):
    """A path (from metadata, parameters or a shard) that leaves its configured root."""


def split_uri(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """'s3://bucket/x' -> (S3FileSystem, 'bucket/x'); '/tmp/x' -> (LocalFileSystem, '/tmp/x')."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def is_local(uri: str) -> bool:
    return "://" not in str(uri) or str(uri).startswith("file://")


def join(root: str, *parts: str) -> str:
    root = str(root)
    if is_local(root):
        return os.path.join(root.removeprefix("file://"), *parts)
    return posixpath.join(root, *parts)


def confine(root: str, relative: str) -> str:
    """Join a relative path under a LOCAL root, refusing '..', absolute paths and symlinks out."""
    if not relative or os.path.isabs(relative) or "\x00" in relative:
        raise PathEscapeError(f"{relative!r}: absolute or empty path refused (must be relative to {root})")
    parts = relative.replace("\\", "/").split("/")
    if any(p == ".." for p in parts):
        raise PathEscapeError(f"{relative!r}: '..' refused (must stay under {root})")
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real_root, target]) != real_root:
        raise PathEscapeError(f"{relative!r}: resolves outside {root} (symlink out of the data root)")
    return os.path.join(root, relative)


def not_a_folder(uri: str) -> str | None:
    """Why a local output root cannot be a folder (it, or a folder above it, is a file); None when it can."""
    if not is_local(uri):
        return None
    path = os.path.abspath(str(uri).removeprefix("file://"))
    above = path
    while not os.path.exists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if os.path.isdir(above):
        return None
    if above == path:
        return f"output folder {uri} is an existing file, not a folder: choose another path"
    return f"output folder {uri} cannot be made: {above} is a file, not a folder"


def exists(uri: str) -> bool:
    fs, path = split_uri(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = split_uri(uri)
    fs.makedirs(path, exist_ok=True)


def read_bytes(uri: str) -> bytes:
    fs, path = split_uri(uri)
    with fs.open(path, "rb") as f:
        return f.read()


@contextmanager
def atomic_open(uri: str) -> Iterator:
    """Write to a hidden temp file beside the target, then rename into place.

    A crash at any point leaves either the old file or the new file, never a partial
    one under the final name (object stores: the upload is only visible once complete).
    """
    fs, path = split_uri(uri)
    parent, name = posixpath.split(path) if not is_local(uri) else os.path.split(path)
    fs.makedirs(parent, exist_ok=True)
    if not is_local(uri):
        # autocommit=False: closing uploads the data but publishes nothing; commit() makes the
        # object appear. A plain `with fs.open(...)` would PUT the partial buffer on an exception.
        f = fs.open(path, "wb", autocommit=False)
        try:
            yield f
        except BaseException:
            f.discard()  # aborts a multipart upload already started (S3, GCS)
            f.closed = True  # and never flush what is buffered
            raise
        f.close()
        f.commit()
        return
    tmp = os.path.join(parent, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(uri: str, data: bytes) -> None:
    with atomic_open(uri) as f:
        f.write(data)


def write_parquet(table: pa.Table, uri: str) -> None:
    import pyarrow.parquet as pq

    with atomic_open(uri) as f:
        pq.write_table(table, f)


def read_parquet(uri: str) -> pa.Table:
    """One parquet file as a table, read on the calling thread.

    Not through Arrow's thread pools: once a read has started their threads, pyarrow sometimes
    aborts at interpreter exit ("terminate called without an active exception",
    apache/arrow#34314), which turned ``avff train``'s exit status 2 into 134. Our tables are small.
    """
    import pyarrow.parquet as pq

    fs, path = split_uri(uri)
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f, pre_buffer=False).read(use_threads=False)


def sha256_of(uri: str, chunk: int = 1 << 20) -> str:
    fs, path = split_uri(uri)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_files(uri: str, suffix: str) -> list[str]:
    """Files under uri (recursive) ending in suffix, as URIs in the same scheme, sorted."""
    fs, path = split_uri(uri)
    if not fs.exists(path):
        return []
    found = sorted(p for p in fs.find(path) if p.endswith(suffix) and not posixpath.basename(p).startswith("."))
    if is_local(uri):
        return found
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return [f"{protocol}://{p}" for p in found]


class LockedError(RuntimeError):
    """Another process holds the lock of an output folder."""


class HeldLock:
    """The open lock file while held; :meth:`describe` adds what the holder is (e.g. its run id)."""

    def __init__(self, f):
        self._f = f
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:300]
        self.owner = f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        self._tail = f"command: {command}"
        self.describe("")

    def describe(self, text: str) -> None:
        self._f.seek(0)
        self._f.truncate()
        self._f.write(", ".join(t for t in (self.owner, text, self._tail) if t))
        self._f.flush()


@contextmanager
def exclusive_lock(
    root: str, name: str, what: str, error: type[LockedError] = LockedError
) -> Iterator[HeldLock | None]:
    """One writer per output folder: ``root/name`` is flock'ed while the block runs.

    The file says who holds it (pid, host, start time), so a second writer's refusal names the
    first. A lock left by a process that died is stale by construction: the kernel releases
    ``flock`` with the process, so the next writer takes it over (its old text is replaced).
    Object storage has no such lock: yields None (writes there are atomic per object).
    """
    if not is_local(root):
        yield None
        return
    local = str(root).removeprefix("file://")
    os.makedirs(local, exist_ok=True)
    path = os.path.join(local, name)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.seek(0)
            holder = f.read().strip() or "pid ?"
            raise error(f"another {what} is writing to {root} (lock {path}, held by {holder})") from e
        held = HeldLock(f)
        try:
            yield held
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class IngestLayout:
    """Where one ingest run's outputs live under its output root (local or object storage)."""

    root: str

    @property
    def manifest(self) -> str:
        return join(self.root, "manifest.parquet")

    @property
    def shard_index(self) -> str:
        return join(self.root, "shards.parquet")

    @property
    def quarantine(self) -> str:
        return join(self.root, "quarantine.parquet")

    @property
    def config(self) -> str:
        return join(self.root, "ingest_config.json")

    @property
    def shards_dir(self) -> str:
        return join(self.root, "shards")

    def shard(self, split: str, part: str, chunk: int) -> str:
        return join(self.root, "shards", split, f"{part}-{chunk:05d}.tar")

    @staticmethod
    def record_of(shard_uri: str) -> str:
        """The sidecar JSON that marks a shard complete (written after the tar)."""
        return shard_uri + ".json"
