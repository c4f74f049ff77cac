"""bench/real.py: the real-footage benchmark's fakes, its person split, its doc section, and the command end to end."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import real
from storage.shard_schema import REAL
from tasks.ingest.scan import VideoEntry
from tasks.ingest.splits import assign_splits

REALAV = Path(__file__).resolve().parents[3] / "shared" / "data" / "realav"


def test_shifted_sound_moves_by_the_shift_and_keeps_its_length():
    wave = np.arange(1, 2 * real.RATE + 1, dtype=np.float32)  # 2 s, no zero sample
    later, earlier = real.shifted(wave, 0.5), real.shifted(wave, -0.5)
    k = real.RATE // 2
    assert later.shape == earlier.shape == wave.shape
    assert (later[:k] == 0).all() and np.array_equal(later[k:], wave[:-k])
    assert np.array_equal(earlier[:-k], wave[k:]) and (earlier[-k:] == 0).all()
    assert (real.shifted(wave, 5.0) == 0).all()  # longer than the sound: silence, not an error


def test_pixelate_changes_the_lower_half_of_the_face_box_only():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    out = real.pixelate(rgb, np.array([16.0, 8.0, 48.0, 56.0]), block=8)
    changed = (out != rgb).any(-1)  # (H, W)
    assert changed[32:56, 16:48].mean() > 0.9 and not changed[:32].any() and not changed[56:].any()
    assert not changed[:, :16].any() and not changed[:, 48:].any()
    assert np.array_equal(out[32:40, 16:24], np.broadcast_to(rgb[32, 16], (8, 8, 3)))  # one block, one colour


def test_person_splits_are_the_ingest_split_of_every_video_of_each_person():
    people = [f"repo{i}__x" for i in range(15)]
    seconds = {p: 10.0 * (i + 1) for i, p in enumerate(people)}
    seed = real.split_seed(seconds, people)
    by_person = real.person_splits(people, seed)
    videos = [
        VideoEntry(f"{p}__clip{j}", "footage", f"{p}__clip{j}.mkv", REAL, None, 0) for p in people for j in range(3)
    ]
    ingest = assign_splits(videos, real.RATIOS, seed=seed, identities={v.video_id: v.video_id.split("__clip")[0]
                                                                          for v in videos})  # fmt: skip
    assert {v: a.split for v, a in ingest.items()} == {
        v.video_id: by_person[v.video_id.split("__clip")[0]] for v in videos
    }
    assert set(by_person.values()) == {"train", "val", "test"}
    share = {s: sum(seconds[p] for p in people if by_person[p] == s) / sum(seconds.values()) for s in ("train", "test")}
    assert share["train"] > share["test"] > 0.1  # the seed was picked for the ratios, not left to the hash


def test_write_doc_replaces_its_own_section_and_keeps_the_rest(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nkept above\n")
    real.write_doc(doc, "## Real footage\n\nfirst\n")
    real.write_doc(doc, "## Real footage\n\nsecond\n")
    text = doc.read_text()
    assert text.startswith("# Results\n\nkept above\n") and "second" in text and "first" not in text
    assert text.count(real.BEGIN) == 1 and text.count(real.END) == 1


@pytest.mark.slow
def test_the_command_at_its_smallest_sizes_leaves_a_model_avff_predict_loads(tmp_path):
    if not REALAV.is_dir():
        pytest.skip(f"{REALAV} is absent (real footage lives in ../shared/data/realav)")
    out = tmp_path / "out"
    summary = real.main(["--out", str(out), "--data", str(REALAV), "--clips-per-person", "1", "--max-clips", "1",
                         "--steps", "2", "--epochs", "1", "--batch", "4", "--doc", str(tmp_path / "results.md")])  # fmt: skip
    people = summary["people"]
    assert all(people[s]["people"] >= 1 and people[s]["videos"] >= 1 for s in ("train", "val", "test"))
    splits_of: dict[str, set[str]] = {}
    for person, split in _ingested(out):
        splits_of.setdefault(person, set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values())  # a person's videos never straddle two splits
    assert {p for p, s in splits_of.items() if s == {"test"}} <= set(summary["test_people"])
    assert not {p for p, s in splits_of.items() if s != {"test"}} & set(summary["test_people"])
    shift = summary["auc"]["model"]["shift"]
    assert shift["real"] == shift["fake"] >= 1 and 0.0 <= shift["auc"] <= 1.0
    assert "## Real footage" in (tmp_path / "results.md").read_text()
    with open(out / "scores.csv") as f:  # a test person's control the command scored
        control = out / "data" / "footage" / next(r["video"] for r in csv.DictReader(f)
                                                  if r["kind"] == "control" and r["refused"] == "")  # fmt: skip
    # --select's grouped CV: one fold per fold of the train and val people, each scored on its held-out people
    args = argparse.Namespace(steps=2, epochs=1, batch=4, pseudo_fakes=0.5, seed=0, readout=None)
    cands = {"sync peak alone": real.CANDIDATES["sync peak alone"]}
    made, splits, _ = real.build_footage(str(REALAV), out / "data" / "footage", 0, None, 3.2)  # read back
    picked = real.select_model(out / "shards", out, args, cands, made, splits)
    cv_people = {p for p, s in splits_of.items() if s != {"test"}}
    assert picked["chosen"] == "sync peak alone" and len(picked["val_auc"]["sync peak alone"]) == len(picked["folds"])
    assert set(picked["folds"]) == _folds_of(out, cv_people) and len(picked["folds"]) >= 2
    shift = picked["auc"]["sync peak alone"]["shift"]  # scored on the train and val people's files only
    n_cv = sum(m.kind == "control" and splits[m.person] != "test" for m in made)
    assert 1 <= shift["real"] <= n_cv and shift["real"] == shift["fake"]
    assert real.select_model(out / "shards", out, args, cands, made, splits) == picked  # a rerun reads folds back
    run = subprocess.run([str(Path(sys.executable).parent / "avff"), "predict", str(control), "--model", str(out / "model"),
                          "--device", "cpu", "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    scored = json.loads(run.stdout.strip().splitlines()[-1])
    assert scored["video"] == str(control) and 0.0 <= scored["p_fake"] <= 1.0 and scored["clips"] >= 1


def _folds_of(out: Path, people: set[str]) -> set[int]:
    """The manifest folds of ``people``'s ingested videos."""
    from storage import fs
    from storage.tables import ManifestRow, read_table
    from tasks.ingest.scan import video_id_of

    with open(out / "data" / "footage" / "identities.csv") as f:
        person = {video_id_of(r["video"]): r["identity"] for r in csv.DictReader(f)}
    rows = read_table(fs.IngestLayout(str(out / "shards")).manifest, ManifestRow)
    return {r.fold for r in rows if r.status == "ingested" and person[r.video_id] in people}


def _ingested(out: Path) -> list[tuple[str, str]]:
    """(person, split) of every video in the manifest, persons from the identity map the command wrote."""
    from storage import fs
    from storage.tables import ManifestRow, read_table
    from tasks.ingest.scan import video_id_of

    with open(out / "data" / "footage" / "identities.csv") as f:
        person = {video_id_of(r["video"]): r["identity"] for r in csv.DictReader(f)}
    return [
        (person[r.video_id], r.split) for r in read_table(fs.IngestLayout(str(out / "shards")).manifest, ManifestRow)
    ]
