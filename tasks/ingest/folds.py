"""Grouped k-fold cross-validation views of an ingest manifest.

Ingest assigns every group (a REAL video and all fakes made from it) one ``fold`` id
(:func:`tasks.ingest.splits.assign_splits`), stratified like the splits. Cross-validation pools the
``train`` and ``val`` splits: fold k is validation, the rest of the pool is training. The
``test`` split is never part of any fold, so nothing selected by CV has seen it.

Shards are written per split, so a fold's loaders read the train AND val shards and keep the
samples whose ``meta.video_id`` is in the fold's set (:mod:`tasks.train.data`). Cost per
epoch: both the training and the validation loader read every pooled shard; samples are
dropped after reading their JSON member and before any JPEG is decoded, so the extra cost is
I/O (~2x the pooled bytes per epoch), not decoding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from storage import fs
from storage.tables import ManifestRow, read_table

POOL = ("train", "val")


@dataclass(frozen=True)
class FoldSplit:
    fold: int
    train: frozenset[str]  # video ids
    val: frozenset[str]


def manifest_rows(layout: fs.IngestLayout) -> list[ManifestRow]:
    """The manifest's rows of ingested videos (all splits)."""
    return [r for r in read_table(layout.manifest, ManifestRow) if r.status == "ingested"]


def pool_rows(rows: Iterable[ManifestRow]) -> list[ManifestRow]:
    return [r for r in rows if r.split in POOL]


def check_grouped(rows: Iterable[ManifestRow]) -> None:
    """Raise ValueError if a group's videos carry different folds (the fold would leak identities)."""
    folds: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        folds[r.group or r.video_id].add(r.fold)
    bad = {g: sorted(f) for g, f in folds.items() if len(f) > 1}
    if bad:
        raise ValueError(f"{len(bad)} group(s) span several folds, e.g. {dict(list(bad.items())[:3])}")


def list_folds(rows: Iterable[ManifestRow]) -> list[int]:
    """The fold ids present in the train+val pool."""
    return sorted({r.fold for r in pool_rows(rows)})


def fold_split(rows: Iterable[ManifestRow], fold: int) -> FoldSplit:
    """Fold ``fold`` of the train+val pool as validation, the rest of the pool as training."""
    pool = pool_rows(rows)
    if not pool:
        raise ValueError("the manifest has no train/val rows")
    check_grouped(pool)
    val = frozenset(r.video_id for r in pool if r.fold == fold)
    train = frozenset(r.video_id for r in pool if r.fold != fold)
    if not val or not train:
        raise ValueError(f"fold {fold} leaves an empty side (folds present: {list_folds(pool)})")
    return FoldSplit(fold, train, val)
