import hashlib
import json
import os
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest

from storage import fs
from storage.tables import ManifestRow
from tasks.ingest.units import plan, summary_markdown
from tasks.ingest.scan import VideoEntry, scan_dfdc, video_id_of
from tasks.ingest.splits import assign_splits, group_of, identity_groups, read_identities, split_balance, split_of


def _part(root, name, meta, files=None):
    d = root / name
    d.mkdir(parents=True)
    for f in files if files is not None else meta:
        (d / f).write_bytes(hashlib.sha256(f.encode()).digest()[:10])  # distinct: a byte-identical copy is a duplicate
    (d / "metadata.json").write_text(json.dumps(meta) if not isinstance(meta, str) else meta)
    return d


def test_scan_parts_entries_and_refusals(tmp_path):
    _part(
        tmp_path,
        "dfdc_train_part_0",
        {
            "aaaa.mp4": {"label": "REAL", "split": "train", "original": None},
            "bbbb.mp4": {"label": "FAKE", "split": "train", "original": "aaaa.mp4"},
            "cccc.mp4": {"label": "MAYBE", "split": "train", "original": None},
            "dddd.mp4": {"split": "train"},
            "../escape.mp4": {"label": "REAL", "original": None},
            "/etc/passwd": {"label": "REAL", "original": None},
            "gone.mp4": {"label": "REAL", "original": None},
            "eeee.mp4": {"label": "FAKE", "original": 5},
            "with space é.mp4": {"label": "REAL", "original": None},
        },
        files=["aaaa.mp4", "bbbb.mp4", "cccc.mp4", "dddd.mp4", "eeee.mp4", "unlisted.mp4", "with space é.mp4"],
    )
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


REAL_METADATA = "/work/shared/data/metadata_train_sample_videos_full.json"


def _dfdc_like(n_real=77, n_fake=323, seed=0):
    rng = random.Random(seed)
    reals = [VideoEntry(f"r{i:03d}", "p0", f"r{i:03d}.mp4", "REAL", None, 1) for i in range(n_real)]
    fakes = [
        VideoEntry(f"f{i:03d}", "p0", f"f{i:03d}.mp4", "FAKE", f"r{rng.randrange(n_real):03d}", 1)
        for i in range(n_fake)
    ]
    # DFDC subsets also hold fakes whose original is absent
    fakes += [VideoEntry(f"g{i:03d}", "p0", f"g{i:03d}.mp4", "FAKE", f"absent{i % 7}", 1) for i in range(20)]
    return reals + fakes


def _groups_stay_whole(entries, a):
    splits, folds = defaultdict(set), defaultdict(set)
    for e in entries:
        splits[a[e.video_id].group].add(a[e.video_id].split)
        folds[a[e.video_id].group].add(a[e.video_id].fold)
    return all(len(s) == 1 for s in splits.values()) and all(len(f) == 1 for f in folds.values())


def test_splits_never_leak_groups_and_follow_ratios_on_many_groups():
    entries = _dfdc_like(n_real=3000, n_fake=9000)
    a = assign_splits(entries, (0.7, 0.15, 0.15), folds=5, seed=1)
    assert _groups_stay_whole(entries, a)
    assert all(a[e.video_id].group == group_of(e) for e in entries)  # plain metadata: the REAL original
    balance = split_balance(SimpleNamespace(split=x.split, label=e.label, group=x.group)
                            for e in entries for x in [a[e.video_id]])  # fmt: skip
    n_groups = sum(b["groups"] for b in balance.values())
    for s, target in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
        assert abs(balance[s]["groups"] / n_groups - target) < 0.03
        assert abs(balance[s]["fake_fraction"] - 9020 / 12020) < 0.03  # label-stratified in expectation
    assert set(x.fold for x in a.values()) == set(range(5))


def test_splits_are_deterministic_and_seeded():
    entries = _dfdc_like()
    assert assign_splits(entries, seed=3) == assign_splits(list(reversed(entries)), seed=3)
    assert assign_splits(entries, seed=3) != assign_splits(entries, seed=4)


def test_bad_ratios():
    with pytest.raises(ValueError):
        assign_splits(_dfdc_like(), ratios=(0, 0, 0))


def test_zero_ratio_split_gets_nothing():
    a = assign_splits(_dfdc_like(), ratios=(0.8, 0.0, 0.2), seed=0)
    assert {x.split for x in a.values()} == {"train", "test"}
    assert {split_of(f"k{i}", (1.0, 0.0, 0.0), 5) for i in range(200)} == {"train"}


def test_cycles_self_references_and_chains_form_one_group_each():
    e = lambda vid, label, original=None: VideoEntry(vid, "p0", vid + ".mp4", label, original, 1)  # noqa: E731
    entries = [
        e("a", "FAKE", "b"), e("b", "FAKE", "a"),  # A -> B, B -> A: the leak
        e("c", "FAKE", "d"), e("d", "FAKE", "c2"), e("c2", "FAKE", "c"),  # a 3-cycle
        e("s", "FAKE", "s"),  # names itself
        e("r", "REAL"), e("f1", "FAKE", "r"), e("f2", "FAKE", "f1"),  # a chain: fake of a fake
    ]  # fmt: skip
    g = identity_groups(entries)
    assert g.groups["a"] == g.groups["b"] == "a"
    assert g.groups["c"] == g.groups["d"] == g.groups["c2"]
    assert g.groups["s"] == "s"
    assert g.groups["f1"] == g.groups["f2"] == g.groups["r"] == "r"
    assert g.self_references == ["s"] and g.chains == ["f2"]
    assert sorted(map(sorted, g.cycles)) == [["a", "b"], ["c", "c2", "d"]]
    text = "\n".join(g.warnings())
    assert "a -> b -> a" in text and "s" in text and "f2" in text
    for seed in range(20):  # whatever the seed, a cycle never straddles splits
        assert _groups_stay_whole(entries, assign_splits(entries, seed=seed))


def test_identity_map_merges_groups_from_csv_and_parquet(tmp_path):
    import pyarrow as pa

    entries = _dfdc_like(n_real=40, n_fake=80)
    # r000 and r001 are the same actor; so are r002, r003 and the absent original of g000
    (tmp_path / "ids.csv").write_text(
        "video,identity\nr000.mp4,alice\nr001,alice\nr002.mp4,007\nr003.mp4,007\nabsent0,007\n"
    )
    fs.write_parquet(
        pa.table({"video": ["r000", "r001.mp4"], "identity": ["alice", "alice"]}), str(tmp_path / "ids.parquet")
    )
    ids = read_identities(str(tmp_path / "ids.csv"))
    assert ids == {"r000": "alice", "r001": "alice", "r002": "007", "r003": "007", "absent0": "007"}  # "007" stays text
    assert read_identities(str(tmp_path / "ids.parquet")) == {"r000": "alice", "r001": "alice"}
    g = identity_groups(entries, ids)
    fakes_of = lambda r: [x.video_id for x in entries if x.original == r]  # noqa: E731
    assert {g.groups[v] for v in ["r000", "r001", *fakes_of("r000"), *fakes_of("r001")]} == {"identity:alice"}
    assert {g.groups[v] for v in ["r002", "r003", *fakes_of("absent0")]} == {"identity:007"}
    assert g.groups["r004"] == "r004"
    for seed in range(10):
        assert _groups_stay_whole(entries, assign_splits(entries, seed=seed, identities=ids))
    (tmp_path / "bad.csv").write_text("video,identity\nr000,alice\nr000.mp4,bob\n")
    with pytest.raises(ValueError, match="two identities"):
        read_identities(str(tmp_path / "bad.csv"))
    (tmp_path / "cols.csv").write_text("file,actor\nr000,alice\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_identities(str(tmp_path / "cols.csv"))


def _real_metadata_parts(root, n_parts):
    """DFDC's real 400-video metadata cut into ``n_parts`` part folders (empty files stand in for videos)."""
    meta = json.load(open(REAL_METADATA))
    names = sorted(meta)
    parts = [{n: meta[n] for n in names[i::n_parts]} for i in range(n_parts)]
    return [_part(root, f"dfdc_train_part_{i}", p) for i, p in enumerate(parts)]


@pytest.mark.skipif(not os.path.exists(REAL_METADATA), reason="DFDC metadata sample not available")
def test_adding_a_part_never_moves_an_existing_video(tmp_path):
    """Scan + plan part 0 alone, then parts 0 and 1: part 0's splits, folds and groups are unchanged.

    The parts come from DFDC's real metadata (fakes of part 1 point at originals of part 0 and
    vice versa), so groups do grow across parts.
    """
    import shutil

    both = tmp_path / "both"
    _real_metadata_parts(both, 2)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copytree(both / "dfdc_train_part_0", alone / "dfdc_train_part_0")
    kw = dict(ratios=(0.7, 0.15, 0.15), folds=5, seed=0, videos_per_shard=16)
    manifests = {}
    for name, root in (("alone", alone), ("both", both)):
        _, rows = plan(scan_dfdc(str(root)), str(root), fs.IngestLayout(str(tmp_path / f"out_{name}")), **kw)
        manifests[name] = {r.video_id: (r.split, r.fold, r.group) for r in rows}
    assert len(manifests["alone"]) == 200 and len(manifests["both"]) == 400
    moved = {v: (x, manifests["both"][v]) for v, x in manifests["alone"].items() if manifests["both"][v] != x}
    assert not moved
    shared = {g for _, _, g in manifests["alone"].values()} & {g for v, (_, _, g) in manifests["both"].items()
                                                                if v not in manifests["alone"]}  # fmt: skip
    assert shared, "the test needs groups that span both parts"


def test_summary_reports_achieved_ratios_and_label_balance():
    rows = [ManifestRow(video_id=f"v{i}", part="p", rel_path=f"v{i}.mp4", label="FAKE" if i % 4 else "REAL",
                        split=s, fold=0, group=f"g{i // 4}", status="ingested", clips=1)
            for i, s in enumerate(["train"] * 8 + ["val"] * 4 + ["test"] * 4)]  # fmt: skip
    md = summary_markdown(rows, [], [], 1.0, 0, ratios=(0.7, 0.15, 0.15))
    assert "| train | 2 | 2 | 6 | 0.500 (0.700) | 0.750 |" in md
    assert "| val | 1 | 1 | 3 | 0.250 (0.150) | 0.750 |" in md


def test_a_tiny_dataset_still_gets_every_split_and_a_large_one_is_pure_hash():
    """8 groups: the hash alone leaves a split empty for some seeds; the fill gives each split a group."""
    from tasks.ingest.splits import split_of

    entries = [VideoEntry(f"r{i}", "p0", f"p0/r{i}.mp4", "REAL", None, 1) for i in range(8)]
    empty_by_hash = [s for s in range(20) if len({split_of(e.video_id, (0.7, 0.15, 0.15), s) for e in entries}) < 3]
    assert empty_by_hash, "the test needs a seed whose hash leaves a split empty"
    for seed in empty_by_hash:
        got = assign_splits(entries, seed=seed)
        assert {a.split for a in got.values()} == {"train", "val", "test"}
        assert sum(a.split == "train" for a in got.values()) >= 4
    many = [VideoEntry(f"r{i}", "p0", f"p0/r{i}.mp4", "REAL", None, 1) for i in range(400)]
    got = assign_splits(many, seed=0)
    assert all(a.split == split_of(k, (0.7, 0.15, 0.15), 0) for k, a in got.items())


def test_the_summary_renders_no_empty_table():
    """No refusal: a sentence, not a bare "quarantine reason" header; refusals: the table, one row each."""
    from storage.tables import RefusedRow

    rows = [ManifestRow(video_id="v0", part="p", rel_path="v0.mp4", label="REAL", split="train", fold=0, group="g0",
                        status="ingested", clips=1)]  # fmt: skip
    clean = summary_markdown(rows, [], [], 1.0, 0)
    assert "No video was refused." in clean and "| quarantine reason |" not in clean and "ingest-refused" not in clean
    nothing = summary_markdown([], [], [], 1.0, 0)
    assert "No video was ingested" in nothing and "| split |" not in nothing
    refused = [
        RefusedRow(
            video_id="gone",
            part="p",
            rel_path="gone.mp4",
            label="REAL",
            reason="missing_file",
            error="gone.mp4: listed",
        )
    ]
    md = summary_markdown(rows, [], refused, 1.0, 0)
    assert "| missing_file | 1 |" in md and "No video was refused." not in md
