"""storage.tables: every table's rows round-trip through real parquet files with the declared schema."""

import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import fs
from storage.tables import (
    ADDED_COLUMNS, SCHEMAS, IdentityRow, ManifestRow, PredictionRow, RefusedRow, ShardRow, TableSchemaError, columns, read_table,
    to_arrow, write_table,
)  # fmt: skip


@pytest.mark.parametrize("row_type", sorted(SCHEMAS, key=lambda t: t.__name__))
def test_each_row_type_names_exactly_its_schema_columns_in_order(row_type):
    assert [f.name for f in fields(row_type)] == columns(row_type)


def _manifest() -> list[ManifestRow]:
    planned = ManifestRow(video_id="a", part="p0", rel_path="p0/a.mp4", label="REAL", bytes=10, split="train", fold=3,
                          group="a")  # fmt: skip
    ingested = ManifestRow(video_id="b", part="p0", rel_path="p0/b.mp4", label="FAKE", original="a", bytes=12,
                           duration=10.0, fps=29.97, width=1920, height=1080, rotation=90, has_audio=True,
                           audio_rate=44100, split="val", fold=1, group="a", status="ingested", clips=3,
                           shard="/x/shards/val/p0-00000.tar")  # fmt: skip
    return [planned, ingested]


def test_manifest_rows_round_trip_with_the_declared_types(tmp_path):
    uri = str(tmp_path / "manifest.parquet")
    write_table(uri, ManifestRow, _manifest())
    assert pq.read_schema(uri).remove_metadata() == SCHEMAS[ManifestRow]
    assert pq.read_schema(uri).field("fold").type == pa.int32()
    back = read_table(uri, ManifestRow)
    assert back == _manifest()
    assert back[0].duration is None and back[0].status == "planned"  # probe facts unknown until decoded


def test_other_tables_round_trip_and_empty_tables_keep_their_schema(tmp_path):
    rows = {
        ShardRow: [ShardRow(path="s.tar", split="train", part="p0", samples=4, videos=2, bytes=1024, sha256="ab" * 32)],
        RefusedRow: [
            RefusedRow(
                video_id=None,
                part="p0",
                rel_path="p0/x.mp4",
                label=None,
                reason="missing_metadata",
                error="p0/x.mp4: no entry",
            )
        ],  # fmt: skip
        PredictionRow: [PredictionRow(video_id="a", clip=0, y=1, p_fake=0.25)],
        IdentityRow: [IdentityRow(video="a.mp4", identity="alice")],
    }
    for row_type, written in rows.items():
        uri = str(tmp_path / f"{row_type.__name__}.parquet")
        write_table(uri, row_type, written)
        assert read_table(uri, row_type) == written
        write_table(uri, row_type, [])
        assert read_table(uri, row_type) == []
        assert pq.read_schema(uri).names == columns(row_type)


def test_a_table_missing_a_column_is_refused_by_name(tmp_path):
    uri = str(tmp_path / "shards.parquet")
    fs.write_parquet(pa.table({"path": ["s.tar"], "split": ["train"]}), uri)
    with pytest.raises(TableSchemaError, match=r"lacks column\(s\) \['part', 'samples'"):
        read_table(uri, ShardRow)


def test_extra_columns_are_ignored_and_compatible_types_cast(tmp_path):
    uri = str(tmp_path / "preds.parquet")
    table = pa.table({"video_id": ["a"], "clip": pa.array([2], pa.int32()), "y": [0], "p_fake": pa.array([0.5], pa.float32()),
                      "note": ["x"]})  # fmt: skip
    fs.write_parquet(table, uri)
    assert read_table(uri, PredictionRow) == [PredictionRow(video_id="a", clip=2, y=0, p_fake=0.5)]


def test_values_that_do_not_cast_raise_a_schema_error(tmp_path):
    uri = str(tmp_path / "preds.parquet")
    fs.write_parquet(pa.table({"video_id": ["a"], "clip": ["two"], "y": [0], "p_fake": [0.5]}), uri)
    with pytest.raises(TableSchemaError, match="PredictionRow schema"):
        read_table(uri, PredictionRow)


def test_an_identity_csv_reads_every_cell_as_text(tmp_path):
    (tmp_path / "ids.csv").write_text("video,identity,extra\nr000.mp4,007,1\nr001,,2\n")
    assert read_table(str(tmp_path / "ids.csv"), IdentityRow) == [
        IdentityRow(video="r000.mp4", identity="007"), IdentityRow(video="r001", identity="")]  # fmt: skip


_THREADS_AFTER_READ = """
import os, sys
from storage.tables import ManifestRow, read_table
tasks = lambda: len(os.listdir("/proc/self/task"))  # native threads too (Arrow's pools are C++ threads)
before = tasks()
read_table(sys.argv[1], ManifestRow)
print(before, tasks())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_a_parquet_table_is_read_without_starting_arrow_thread_pools(tmp_path):
    # pool threads alive at exit sometimes abort the interpreter (exit 134, apache/arrow#34314): a CLI's status lies
    manifest = str(tmp_path / "manifest.parquet")
    write_table(manifest, ManifestRow, _manifest())
    out = subprocess.run([sys.executable, "-c", _THREADS_AFTER_READ, manifest], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    before, after = map(int, out.stdout.split())
    assert after == before, out.stdout


def test_tables_written_before_the_face_columns_read_with_their_defaults(tmp_path):
    """predictions/<split>.parquet and manifest.parquet of older runs lack face / faces."""
    old = pa.table({"video_id": ["a", "a"], "clip": [0, 1], "y": [1, 1], "p_fake": [0.2, 0.9]})
    pq.write_table(old, tmp_path / "p.parquet")
    rows = read_table(str(tmp_path / "p.parquet"), PredictionRow)
    assert [(r.clip, r.face) for r in rows] == [(0, 0), (1, 0)]
    uri = _write_manifest(tmp_path)
    assert [(r.faces, r.fake_faces) for r in read_table(uri, ManifestRow)] == [(None, None), (2, 1)]
    pq.write_table(fs.read_parquet(uri).drop_columns(["faces", "fake_faces"]), tmp_path / "old.parquet")
    assert [(r.faces, r.fake_faces) for r in read_table(str(tmp_path / "old.parquet"), ManifestRow)] == [
        (None, None)
    ] * 2


def _write_manifest(tmp_path) -> str:
    uri = str(tmp_path / "manifest.parquet")
    rows = _manifest()
    write_table(uri, ManifestRow, [rows[0], ManifestRow(**{**rows[1].__dict__, "faces": 2, "fake_faces": 1})])
    return uri


def test_a_manifest_written_before_the_landmark_columns_reads_them_as_none(tmp_path):
    """Old manifests lack crop / landmark_frac: they read back with None; new ones keep the values."""
    uri = str(tmp_path / "manifest.parquet")
    old = to_arrow(ManifestRow, _manifest()).drop_columns(list(ADDED_COLUMNS[ManifestRow]))
    fs.write_parquet(old, uri)
    assert read_table(uri, ManifestRow) == _manifest()
    landmarked = [replace(r, crop="box_fallback", landmark_frac=0.25) for r in _manifest()]
    write_table(uri, ManifestRow, landmarked)
    assert [(r.crop, r.landmark_frac) for r in read_table(uri, ManifestRow)] == [("box_fallback", 0.25)] * 2
