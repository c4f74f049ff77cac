"""Shards on storage: the one writer and the reader stages (WebDataset tar layout, :mod:`storage.shard_schema`).

Writing: :class:`ShardWriter`, a context manager like webdataset's, that publishes a shard only
when its block finishes (temp + rename, or one upload on object storage) and fixes every tar
header field that would otherwise vary, so the same samples give byte-identical shards.

Reading: small pipeline stages, webdataset style, that the training loader
(:mod:`tasks.train.data`) composes with its own::

    [{"url"}] -> split_by_worker -> open_shards -> tar_samples -> raw samples -> decode_sample

:func:`read_samples` / :func:`read_clips` read one shard in full (tools, benchmarks, tests).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

import webdataset as wds
from webdataset import DataPipeline as Pipeline

from storage import fs
from storage.shard_schema import DecodedClip, ShardFormatError, decode_sample

# fixed header fields: a rerun over the same videos writes the same bytes
_TAR_HEADER = {"mtime": 0.0, "user": "avff", "group": "avff"}

__all__ = ["Pipeline", "ShardWriter", "batched", "open_shards", "read_clips", "read_samples", "split_by_worker",
           "tar_samples"]  # fmt: skip


class ShardWriter:
    """Write one shard at ``uri``: ``with ShardWriter(uri) as sink: sink.write(encode_sample(...))``.

    Samples go to a local temp file first; when the block ends without an exception the shard is
    published atomically under ``uri`` (an earlier shard there is replaced) and :attr:`bytes`,
    :attr:`sha256` and :attr:`samples` describe it. On an exception nothing is published.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.samples = 0
        self.bytes = 0
        self.sha256 = ""
        self._tmpdir: str | None = None
        self._file = None
        self._tar: wds.TarWriter | None = None

    def __enter__(self) -> ShardWriter:
        self._tmpdir = tempfile.mkdtemp(prefix="avff-shard-")
        self._file = open(os.path.join(self._tmpdir, "shard.tar"), "wb")
        self._tar = wds.TarWriter(self._file, encoder=False, **_TAR_HEADER)
        return self

    def write(self, sample: dict[str, bytes | str]) -> None:
        """Append one sample (``__key__`` plus member name -> bytes, see :func:`storage.shard_schema.encode_sample`)."""
        if self._tar is None:
            raise RuntimeError("ShardWriter.write outside its with-block")
        self._tar.write(sample)
        self.samples += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tar is not None and self._file is not None and self._tmpdir is not None
        try:
            self._tar.close()
            self._file.close()
            if exc_type is None:
                self._publish(self._file.name)
        finally:
            self._tar = self._file = None
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _publish(self, local: str) -> None:
        self.bytes = os.path.getsize(local)
        self.sha256 = _sha256_file(local)
        with fs.atomic_open(self.uri) as out, open(local, "rb") as src:
            shutil.copyfileobj(src, out, length=1 << 20)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def split_by_worker(src: Iterable[dict]) -> Iterator[dict]:
    """This DataLoader worker's share of the shard items: ``items[worker::workers]``."""
    return wds.split_by_worker(src)


def open_shards(src: Iterable[dict]) -> Iterator[dict]:
    """{url} -> {url, stream}: every shard is opened through fsspec (:mod:`storage.fs`), local or remote."""
    for item in src:
        fsys, path = fs.split_uri(item["url"])
        stream = fsys.open(path, "rb")
        try:
            yield {**item, "stream": stream}
        finally:
            stream.close()


_META = re.compile(r"__[^/]*__($|/)")  # webdataset's own metadata members: skipped, as webdataset does


def _member_kind(info: tarfile.TarInfo) -> str:
    for test, kind in ((info.issym, "a symlink"), (info.islnk, "a hard link"), (info.isdir, "a directory"),
                       (info.ischr, "a character device"), (info.isblk, "a block device"), (info.isfifo, "a FIFO")):  # fmt: skip
        if test():
            return kind
    return f"of tar type {info.type!r}"


def tar_members(src: Iterable[dict]) -> Iterator[dict]:
    """{url, stream} -> {fname, data, __url__} per member, then ``{}`` at each shard's end.

    webdataset's expander skips members that are not regular files; a shard only ever holds
    regular files, so any other member (symlink, hard link, device, FIFO, directory) raises
    ShardFormatError, like the other hostile members (``../`` names, pickles).
    """
    for source in src:
        url = source["url"]
        with tarfile.open(fileobj=source["stream"], mode="r|*") as tar:
            for info in tar:
                if not info.isreg():
                    raise ShardFormatError(f"{url}: member {info.name!r} is {_member_kind(info)}, not a regular file")
                if _META.match(info.name):
                    continue
                yield {"fname": info.name, "data": tar.extractfile(info).read(), "__url__": url}
                tar.members = []  # streaming: keep no headers of members already read
        yield {}  # end of shard: samples of two shards never merge


def tar_samples(src: Iterable[dict]) -> Iterator[dict]:
    """{url, stream} -> raw samples (``__key__``, ``__url__`` and member name -> bytes); errors raise."""
    return wds.tariterators.group_by_keys(tar_members(src), handler=wds.reraise_exception)


def read_samples(url: str) -> Iterator[dict]:
    """Every raw sample of one shard, in tar order."""
    return tar_samples(open_shards([{"url": url}]))


def read_clips(url: str) -> Iterator[DecodedClip]:
    """Every sample of one shard, decoded and checked by :func:`storage.shard_schema.decode_sample`."""
    return (decode_sample(s) for s in read_samples(url))


def batched(batch_size: int, collate: Callable[[list], object]) -> Callable[[Iterable], Iterator]:
    """A stage grouping samples into lists of ``batch_size`` (the last may be shorter) passed to ``collate``."""
    return wds.batched(batch_size, collation_fn=collate, partial=True)
