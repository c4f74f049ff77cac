"""Grouped, stratified, seeded train/val/test splits and k-fold ids.

A group is a REAL video plus every fake made from it (DFDC's ``original``), so one
identity never appears on both sides of a split. Groups are stratified by whether they
contain a REAL video (DFDC fakes whose original is absent form FAKE-only groups).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

from tasks.metadata import VideoEntry


@dataclass(frozen=True)
class Assignment:
    group: str
    split: str
    fold: int


def group_of(entry: VideoEntry) -> str:
    return entry.original if entry.label == "FAKE" and entry.original else entry.video_id


def _order(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def assign_splits(
    entries: list[VideoEntry],
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Assignment]:
    """video_id -> Assignment. Deterministic from (the set of entries, ratios, folds, seed).

    Within each stratum, groups are visited in a seeded hash order and each goes to the
    split (and fold) furthest below its target share of videos, so shares stay close to
    the ratios even with large groups.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers, got {ratios}")
    total = sum(ratios)
    targets = {s: r / total for s, r in zip(("train", "val", "test"), ratios)}
    groups: dict[str, list[VideoEntry]] = defaultdict(list)
    for e in entries:
        groups[group_of(e)].append(e)
    strata: dict[str, list[str]] = defaultdict(list)
    for g, members in groups.items():
        strata["has_real" if any(m.label == "REAL" for m in members) else "fake_only"].append(g)

    out: dict[str, Assignment] = {}
    for stratum in sorted(strata):
        counts = {s: 0 for s in targets}
        fold_counts = [0] * max(folds, 1)
        # big groups first so the greedy fill stays balanced; hash order breaks ties
        order = sorted(strata[stratum], key=lambda g: (-len(groups[g]), _order(g, seed)))
        for g in order:
            n = len(groups[g])
            placed = sum(counts.values()) + n
            split = min(
                (s for s in targets if targets[s] > 0),
                key=lambda s: ((counts[s] + n) / placed - targets[s], s != "train"),
            )
            counts[split] += n
            fold = min(range(len(fold_counts)), key=lambda k: (fold_counts[k], k))
            fold_counts[fold] += n
            for m in groups[g]:
                out[m.video_id] = Assignment(group=g, split=split, fold=fold)
    return out
