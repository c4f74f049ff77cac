"""Grouped CV folds from the manifest: no group on both sides, test never pooled (pure, ms)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from storage.tables import ManifestRow
from tasks.ingest.folds import check_grouped, fold_split, list_folds, manifest_rows
from tasks.ingest.scan import VideoEntry
from tasks.ingest.splits import assign_splits
from tasks.synthetic.shards import write_synthetic_shards


def _manifest(n_real: int = 30, fakes_per_real: int = 3) -> list[ManifestRow]:
    """Manifest rows as ingest writes them: groups of a REAL video and its fakes, assigned by assign_splits."""
    entries = []
    for i in range(n_real):
        entries.append(VideoEntry(f"r{i:02d}", "p0", f"r{i:02d}.mp4", "REAL", None, 1))
        entries += [VideoEntry(f"r{i:02d}f{k}", "p0", f"r{i:02d}f{k}.mp4", "FAKE", f"r{i:02d}", 1)
                    for k in range(fakes_per_real)]  # fmt: skip
    entries += [VideoEntry(f"orphan{k}", "p0", f"o{k}.mp4", "FAKE", "missing", 1) for k in range(4)]
    assignment = assign_splits(entries, folds=5, seed=0)
    return [ManifestRow(video_id=e.video_id, part=e.part, rel_path=e.rel_path, label=e.label,
                        split=assignment[e.video_id].split, group=assignment[e.video_id].group,
                        fold=assignment[e.video_id].fold, status="ingested") for e in entries]  # fmt: skip


def test_folds_never_split_a_group_and_never_touch_test():
    rows = _manifest()
    test_ids = {r.video_id for r in rows if r.split == "test"}
    group = {r.video_id: r.group for r in rows}
    assert list_folds(rows) == [0, 1, 2, 3, 4]
    val_union: set[str] = set()
    for k in list_folds(rows):
        split = fold_split(rows, k)
        assert not split.train & split.val
        assert not {group[v] for v in split.train} & {group[v] for v in split.val}  # no identity on both sides
        assert not (split.train | split.val) & test_ids
        assert {"REAL", "FAKE"} <= {r.label for r in rows if r.video_id in split.val}
        val_union |= split.val
    assert val_union == {r.video_id for r in rows if r.split != "test"}  # every pooled video validates once


def test_a_manifest_with_a_group_across_folds_is_refused():
    rows = _manifest()
    pooled = [r for r in rows if r.split != "test"]
    victim = next(r for r in pooled if r.label == "FAKE")
    broken = [replace(r, fold=(r.fold + 1) % 5) if r is victim else r for r in rows]
    with pytest.raises(ValueError, match="span several folds"):
        check_grouped(broken)
    with pytest.raises(ValueError, match="span several folds"):
        fold_split(broken, 0)
    with pytest.raises(ValueError, match="empty"):
        fold_split(rows, 7)


def test_the_synthetic_shards_manifest_has_usable_folds(tmp_path):
    rows = manifest_rows(write_synthetic_shards(str(tmp_path), videos={"train": 10, "val": 5, "test": 5}))
    split = fold_split(rows, 1)
    assert split.val == {"train001", "train006", "val001"} and len(split.train) == 12
