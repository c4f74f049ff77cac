"""The tables as code: every parquet (and csv) table the project writes or reads, one typed row each.

- ``manifest.parquet``   :class:`ManifestRow`    one row per video the scan accepted
- ``shards.parquet``     :class:`ShardRow`       one row per non-empty shard (the shard index)
- ``quarantine.parquet`` :class:`RefusedRow`     one row per refused video (before or while decoding)
- ``predictions/<split>.parquet`` :class:`PredictionRow`  one row per scored clip
- an identity map (.csv or .parquet) :class:`IdentityRow`  ``video -> identity`` (an input)

This module is the only place that names their columns: writers hand :func:`write_table` rows,
readers get rows back from :func:`read_table`, and each row type's pyarrow schema
(:data:`SCHEMAS`) fixes the column order and types, so two writers cannot drift apart.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv

from storage import fs


class TableSchemaError(ValueError):
    """A table that lacks a column its row type needs, or holds values of the wrong type."""


@dataclass(frozen=True, kw_only=True)
class ManifestRow:
    """A video of the dataset: metadata facts, probe facts (after decoding), its split and its fate."""

    video_id: str
    part: str
    rel_path: str
    label: str  # REAL | FAKE
    original: str | None = None
    manipulation: str | None = None
    bytes: int | None = None
    duration: float | None = None  # probe facts: None until the video is decoded
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    rotation: int | None = None
    has_audio: bool | None = None
    audio_rate: int | None = None
    split: str
    fold: int
    group: str
    status: str = "planned"  # planned | ingested | quarantined
    clips: int | None = None
    shard: str | None = None  # URI of the shard holding its clips
    faces: int | None = None  # face tracks ingested (each its own samples); None until ingested
    fake_faces: int | None = None  # of those, labelled FAKE (by the pixel difference from the original)
    # ingested with crop="landmarks": "landmarks", or "box_fallback" where too few frames had landmarks
    crop: str | None = None
    landmark_frac: float | None = None  # of its sampled frames with landmarks


@dataclass(frozen=True, kw_only=True)
class ShardRow:
    """A complete shard: where it is, what it holds, and the bytes it must still have."""

    path: str
    split: str
    part: str
    samples: int
    videos: int
    bytes: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class RefusedRow:
    """A refused video. ``video_id`` and ``label`` are None when the scan refused it (no metadata entry)."""

    video_id: str | None
    part: str
    rel_path: str
    label: str | None
    reason: str  # a stable code: missing_metadata, too_short, worker_failed, ...
    error: str  # the human-readable explanation, naming the file


@dataclass(frozen=True, kw_only=True)
class PredictionRow:
    """One clip's probability of FAKE and its true label (FAKE = 1), for one of the video's faces."""

    video_id: str
    clip: int
    y: int
    p_fake: float
    face: int = 0


@dataclass(frozen=True, kw_only=True)
class IdentityRow:
    """``video`` (a file name or a video id) belongs to person ``identity``; either may be missing."""

    video: str | None
    identity: str | None


SCHEMAS: dict[type, pa.Schema] = {
    ManifestRow: pa.schema(
        [
            ("video_id", pa.string()),
            ("part", pa.string()),
            ("rel_path", pa.string()),
            ("label", pa.string()),
            ("original", pa.string()),
            ("manipulation", pa.string()),
            ("bytes", pa.int64()),
            ("duration", pa.float64()),
            ("fps", pa.float64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("rotation", pa.int32()),
            ("has_audio", pa.bool_()),
            ("audio_rate", pa.int32()),
            ("split", pa.string()),
            ("fold", pa.int32()),
            ("group", pa.string()),
            ("status", pa.string()),
            ("clips", pa.int32()),
            ("shard", pa.string()),
            ("faces", pa.int32()),
            ("fake_faces", pa.int32()),
            ("crop", pa.string()),
            ("landmark_frac", pa.float64()),
        ]
    ),  # fmt: skip
    ShardRow: pa.schema(
        [
            ("path", pa.string()),
            ("split", pa.string()),
            ("part", pa.string()),
            ("samples", pa.int64()),
            ("videos", pa.int64()),
            ("bytes", pa.int64()),
            ("sha256", pa.string()),
        ]
    ),  # fmt: skip
    RefusedRow: pa.schema(
        [
            ("video_id", pa.string()),
            ("part", pa.string()),
            ("rel_path", pa.string()),
            ("label", pa.string()),
            ("reason", pa.string()),
            ("error", pa.string()),
        ]
    ),  # fmt: skip
    PredictionRow: pa.schema(
        [
            ("video_id", pa.string()),
            ("clip", pa.int64()),
            ("y", pa.int64()),
            ("p_fake", pa.float64()),
            ("face", pa.int64()),
        ]
    ),  # fmt: skip
    IdentityRow: pa.schema([("video", pa.string()), ("identity", pa.string())]),
}

# columns added after tables were first written: an older table without them reads as their default
ADDED_COLUMNS: dict[type, tuple[str, ...]] = {
    ManifestRow: ("faces", "fake_faces", "crop", "landmark_frac"),
    PredictionRow: ("face",),
}

Row = TypeVar("Row", ManifestRow, ShardRow, RefusedRow, PredictionRow, IdentityRow)


def columns(row_type: type) -> list[str]:
    """The column names of ``row_type``'s table, in order."""
    return SCHEMAS[row_type].names


def to_arrow(row_type: type[Row], rows: Iterable[Row]) -> pa.Table:
    """Rows -> a pyarrow table with exactly ``row_type``'s schema (also when ``rows`` is empty)."""
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMAS[row_type])


def write_table(uri: str, row_type: type[Row], rows: Iterable[Row]) -> None:
    """Write ``rows`` as a parquet table at ``uri``, atomically (local or object storage)."""
    fs.write_parquet(to_arrow(row_type, rows), uri)


def read_table(uri: str, row_type: type[Row]) -> list[Row]:
    """The rows of a parquet (or, for :class:`IdentityRow`, a .csv) table; extra columns are ignored.

    Raises :class:`TableSchemaError` naming the missing columns, or the values that do not cast.
    """
    if uri.endswith(".csv"):
        options = pacsv.ConvertOptions(column_types={name: pa.string() for name in columns(row_type)})
        # without Arrow's CPU pool, as fs.read_parquet reads: its threads can abort the interpreter's exit
        table = pacsv.read_csv(io.BytesIO(fs.read_bytes(uri)), read_options=pacsv.ReadOptions(use_threads=False),
                               convert_options=options)  # fmt: skip
    else:
        table = fs.read_parquet(uri)
    return from_arrow(table, row_type, source=uri)


def from_arrow(table: pa.Table, row_type: type[Row], source: str = "table") -> list[Row]:
    """A pyarrow table -> rows of ``row_type`` (columns selected by name, cast to the schema)."""
    schema = SCHEMAS[row_type]
    for name in ADDED_COLUMNS.get(row_type, ()):
        if name not in table.column_names:  # a table written before the column existed: its default
            default = next(f.default for f in fields(row_type) if f.name == name)
            table = table.append_column(name, pa.array([default] * table.num_rows, schema.field(name).type))
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise TableSchemaError(f"{source} lacks column(s) {missing}; has {table.column_names}")
    try:
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise TableSchemaError(f"{source}: columns do not match the {row_type.__name__} schema ({e})") from e
    names = [f.name for f in fields(row_type)]
    return [row_type(**dict(zip(names, values))) for values in zip(*(table.column(n).to_pylist() for n in names))]
