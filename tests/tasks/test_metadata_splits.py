import json
import os
import random
from collections import Counter, defaultdict

import pytest

from tasks.metadata import scan_dfdc, video_id_of
from tasks.splits import assign_splits, group_of


def _part(root, name, meta, files=None):
    d = root / name
    d.mkdir(parents=True)
    for f in files if files is not None else meta:
        (d / f).write_bytes(b"\x00" * 10)
    (d / "metadata.json").write_text(json.dumps(meta) if not isinstance(meta, str) else meta)
    return d


def test_scan_parts_entries_and_refusals(tmp_path):
    _part(tmp_path, "dfdc_train_part_0", {
        "aaaa.mp4": {"label": "REAL", "split": "train", "original": None},
        "bbbb.mp4": {"label": "FAKE", "split": "train", "original": "aaaa.mp4"},
        "cccc.mp4": {"label": "MAYBE", "split": "train", "original": None},
        "dddd.mp4": {"split": "train"},
        "../escape.mp4": {"label": "REAL", "original": None},
        "/etc/passwd": {"label": "REAL", "original": None},
        "gone.mp4": {"label": "REAL", "original": None},
        "eeee.mp4": {"label": "FAKE", "original": 5},
        "with space é.mp4": {"label": "REAL", "original": None},
    }, files=["aaaa.mp4", "bbbb.mp4", "cccc.mp4", "dddd.mp4", "eeee.mp4", "unlisted.mp4", "with space é.mp4"])
    _part(tmp_path, "dfdc_train_part_1", {"aaaa.mp4": {"label": "REAL", "original": None}})
    _part(tmp_path, "dfdc_train_part_2", "{not json", files=["x1.mp4"])
    (tmp_path / "dfdc_train_part_3").mkdir()
    (tmp_path / "dfdc_train_part_3" / "y1.mp4").write_bytes(b"1")

    r = scan_dfdc(str(tmp_path))
    ids = {e.video_id for e in r.entries}
    assert ids == {"aaaa", "bbbb", video_id_of("with space é.mp4")}
    fake = next(e for e in r.entries if e.video_id == "bbbb")
    assert fake.original == "aaaa" and fake.part == "dfdc_train_part_0" and fake.bytes == 10
    reasons = {(os.path.basename(x.rel_path), x.reason) for x in r.rejected}
    assert ("cccc.mp4", "bad_metadata") in reasons
    assert ("dddd.mp4", "bad_metadata") in reasons
    assert ("eeee.mp4", "bad_metadata") in reasons
    assert ("escape.mp4", "path_escape") in reasons
    assert ("passwd", "path_escape") in reasons
    assert ("gone.mp4", "missing_file") in reasons
    assert ("unlisted.mp4", "missing_metadata") in reasons
    assert ("aaaa.mp4", "duplicate_id") in reasons  # part 1 repeats part 0's id
    assert ("x1.mp4", "bad_metadata") in reasons  # not JSON
    assert ("y1.mp4", "missing_metadata") in reasons  # no metadata.json
    by_file = {os.path.basename(x.rel_path): x.error for x in r.rejected}
    assert "cccc.mp4" in by_file["cccc.mp4"] and "MAYBE" in by_file["cccc.mp4"]


def test_symlink_out_of_root_is_refused(tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    d = _part(tmp_path / "root", "part", {"link.mp4": {"label": "REAL", "original": None}}, files=[])
    os.symlink(outside, d / "link.mp4")
    r = scan_dfdc(str(tmp_path / "root"))
    assert not r.entries and r.rejected[0].reason == "path_escape"


def test_single_folder_layout(tmp_path):
    _part(tmp_path, "train_sample_videos", {"aaaa.mp4": {"label": "REAL", "original": None}})
    r = scan_dfdc(str(tmp_path / "train_sample_videos"))
    assert [e.part for e in r.entries] == ["train_sample_videos"]


def _dfdc_like(n_real=77, n_fake=323, seed=0):
    from tasks.metadata import VideoEntry

    rng = random.Random(seed)
    reals = [VideoEntry(f"r{i:03d}", "p0", f"r{i:03d}.mp4", "REAL", None, 1) for i in range(n_real)]
    fakes = [VideoEntry(f"f{i:03d}", "p0", f"f{i:03d}.mp4", "FAKE", f"r{rng.randrange(n_real):03d}", 1) for i in range(n_fake)]
    # DFDC subsets also hold fakes whose original is absent
    fakes += [VideoEntry(f"g{i:03d}", "p0", f"g{i:03d}.mp4", "FAKE", f"absent{i % 7}", 1) for i in range(20)]
    return reals + fakes


def test_splits_never_leak_groups_and_follow_ratios():
    entries = _dfdc_like()
    a = assign_splits(entries, (0.7, 0.15, 0.15), folds=5, seed=1)
    splits_of_group, folds_of_group = defaultdict(set), defaultdict(set)
    for e in entries:
        splits_of_group[group_of(e)].add(a[e.video_id].split)
        folds_of_group[group_of(e)].add(a[e.video_id].fold)
    assert all(len(s) == 1 for s in splits_of_group.values())
    assert all(len(f) == 1 for f in folds_of_group.values())
    share = Counter(x.split for x in a.values())
    n = len(entries)
    assert abs(share["train"] / n - 0.7) < 0.06 and abs(share["val"] / n - 0.15) < 0.06
    reals = Counter(a[e.video_id].split for e in entries if e.label == "REAL")
    assert all(reals[s] > 0 for s in ("train", "val", "test"))  # stratified: every split has REALs
    assert set(x.fold for x in a.values()) == set(range(5))


def test_splits_are_deterministic_and_seeded():
    entries = _dfdc_like()
    assert assign_splits(entries, seed=3) == assign_splits(list(reversed(entries)), seed=3)
    assert assign_splits(entries, seed=3) != assign_splits(entries, seed=4)


def test_bad_ratios():
    with pytest.raises(ValueError):
        assign_splits(_dfdc_like(), ratios=(0, 0, 0))
