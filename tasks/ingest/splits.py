"""Identity groups and stable, seeded train/val/test splits and k-fold ids.

**Groups.** Union-find over every link the metadata holds: a fake joins its ``original``
(chains of fakes of fakes, A->B/B->A cycles and self-references included: they all end in one
group, and :class:`Grouping` lists the irregular links so ingest can warn about them). An
optional identity map (``video -> identity``: a dataset's actor list, or the face clusters of
``identities=auto``, :mod:`tasks.ingest.identity`) merges groups further. DFDC's metadata names no actor: without a map a group is one
REAL video plus its fakes, and the same person filmed in several REAL videos can still sit
in several splits.

**Splits.** A group's split and fold are a pure function of its key and the seed (a SHA-256
hash mapped to [0, 1) and cut at the cumulative ratios), so adding videos or parts never moves
an existing video, and the assignment is independent of the label: each label's expected
shares are the ratios (stratified in expectation). The price: on a few dozen groups the
achieved shares scatter around the ratios (ingest's summary reports them); a split can even
be empty on a handful of groups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from storage.shard_schema import FAKE
from storage.tables import IdentityRow, read_table
from tasks.ingest.scan import VideoEntry, video_id_of

SPLITS = ("train", "val", "test")
IDENTITY_PREFIX = "identity:"


@dataclass(frozen=True)
class Assignment:
    group: str
    split: str
    fold: int


@dataclass
class Grouping:
    """video id -> group key, and the links that made groups in unusual ways (for warnings)."""

    groups: dict[str, str] = field(default_factory=dict)
    self_references: list[str] = field(default_factory=list)  # fakes whose original is themselves
    cycles: list[list[str]] = field(default_factory=list)  # A -> B -> ... -> A through ``original``
    chains: list[str] = field(default_factory=list)  # fakes whose original is itself a fake

    def warnings(self, show: int = 10) -> list[str]:
        """One line per kind of irregular link, naming up to ``show`` of them."""
        out = []
        if self.self_references:
            out.append(f"{len(self.self_references)} fake(s) name themselves as original (kept as one group each): "
                       + ", ".join(self.self_references[:show]))  # fmt: skip
        if self.cycles:
            out.append(f"{len(self.cycles)} cycle(s) of original links (each merged into one group): "
                       + "; ".join(" -> ".join([*c, c[0]]) for c in self.cycles[:show]))  # fmt: skip
        if self.chains:
            out.append(f"{len(self.chains)} fake(s) whose original is itself a fake (merged with its group): "
                       + ", ".join(self.chains[:show]))  # fmt: skip
        return out


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _cycles(links: Mapping[str, str]) -> list[list[str]]:
    """Cycles of length >= 2 in a graph where each node has at most one outgoing link."""
    state: dict[str, int] = {}  # 1: on the current walk, 2: done
    found = []
    for start in sorted(links):
        walk, node = [], start
        while node in links and state.get(node) is None:
            state[node] = 1
            walk.append(node)
            node = links[node]
        if state.get(node) == 1:  # closed a loop on this walk
            loop = walk[walk.index(node) :]
            if len(loop) > 1:
                found.append(loop)
        for n in walk:
            state[n] = 2
    return found


def identity_groups(entries: Iterable[VideoEntry], identities: Mapping[str, str] | None = None) -> Grouping:
    """Group videos over every ``original`` link and, when given, a ``video id -> identity`` map.

    A group's key is stable as data is added: ``identity:<name>`` (the smallest name) when a
    member has an identity, else the smallest root (a REAL video or an absent original), else,
    for a pure cycle, its smallest video id. Identity entries for videos neither listed nor
    named as an original are ignored.
    """
    entries = list(entries)
    uf = _UnionFind()
    links = {e.video_id: e.original for e in entries if e.label == FAKE and e.original}
    labels = {e.video_id: e.label for e in entries}
    for e in entries:
        uf.find(e.video_id)
    for vid, original in links.items():
        uf.union(vid, original)
    for vid in [v for v in uf.parent if identities and v in identities]:  # absent originals included
        uf.union(vid, IDENTITY_PREFIX + str(identities[vid]))
    members: dict[str, list[str]] = {}
    for node in list(uf.parent):
        members.setdefault(uf.find(node), []).append(node)
    key_of_root = {}
    for root, nodes in members.items():
        ids = sorted(n[len(IDENTITY_PREFIX) :] for n in nodes if n.startswith(IDENTITY_PREFIX))
        roots = sorted(n for n in nodes if not n.startswith(IDENTITY_PREFIX) and n not in links)
        key_of_root[root] = IDENTITY_PREFIX + ids[0] if ids else roots[0] if roots else min(nodes)
    cycles = _cycles({v: o for v, o in links.items() if v != o})
    in_cycle = {v for c in cycles for v in c}
    return Grouping(
        groups={vid: key_of_root[uf.find(vid)] for vid in labels},
        self_references=sorted(v for v, o in links.items() if v == o),
        cycles=cycles,
        chains=sorted(v for v, o in links.items() if v != o and v not in in_cycle and labels.get(o) == FAKE),
    )


def read_identities(uri: str) -> dict[str, str]:
    """A ``video -> identity`` map from a .csv or .parquet table with columns ``video`` and ``identity``.

    ``video`` may be a file name (``abcd.mp4``) or a video id (``abcd``): both map to the id.
    A video given two different identities raises ValueError.
    """
    if not uri.endswith((".parquet", ".csv")):
        raise ValueError(f"identity map {uri!r}: expected a .csv or .parquet file")
    out: dict[str, str] = {}
    for row in read_table(uri, IdentityRow):  # TableSchemaError (a ValueError) names missing columns
        video, name = row.video, row.identity
        if video is None or name is None or str(name) == "":
            continue
        vid = video_id_of(str(video))
        if out.setdefault(vid, str(name)) != str(name):
            raise ValueError(f"identity map {uri!r}: video {video!r} has two identities, {out[vid]!r} and {name!r}")
    return out


def group_of(entry: VideoEntry) -> str:
    """The group key of one entry from its own metadata alone (no identity map, no cycles)."""
    return entry.original if entry.label == FAKE and entry.original else entry.video_id


def _unit(key: str, seed: int, purpose: str) -> float:
    """A uniform number in [0, 1) from (seed, purpose, key) alone."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, ratios: tuple[float, float, float], seed: int) -> str:
    """The split of group ``key``: a pure function of (key, ratios, seed)."""
    total = sum(ratios)
    u, edge = _unit(key, seed, "split"), 0.0
    for name, r in zip(SPLITS, ratios):
        edge += r / total
        if r > 0 and u < edge:
            return name
    return max((s for s, r in zip(SPLITS, ratios) if r > 0), key=SPLITS.index)  # rounding at the top end


def fold_of(key: str, folds: int, seed: int) -> int:
    """The fold of group ``key`` in [0, folds): a pure function of (key, folds, seed)."""
    return min(int(_unit(key, seed, "fold") * max(folds, 1)), max(folds, 1) - 1)


def assign_splits(
    entries: list[VideoEntry],
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    folds: int = 5,
    seed: int = 0,
    identities: Mapping[str, str] | None = None,
    grouping: Grouping | None = None,
) -> dict[str, Assignment]:
    """video_id -> Assignment; each video's split and fold depend only on its group key and the seed.

    ``grouping`` (from :func:`identity_groups`) is computed here when not given.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers, got {ratios}")
    grouping = grouping or identity_groups(entries, identities)
    keys = sorted({grouping.groups[e.video_id] for e in entries})
    split = _fill_empty_splits({k: split_of(k, ratios, seed) for k in keys}, ratios, seed)
    out = {}
    for e in entries:
        key = grouping.groups[e.video_id]
        out[e.video_id] = Assignment(group=key, split=split[key], fold=fold_of(key, folds, seed))
    return out


def _fill_empty_splits(split: dict[str, str], ratios: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Tiny datasets only: a split with a positive ratio that the hash left empty takes the group
    whose hash lies nearest its interval, from a split that keeps at least one group.

    With more than a few dozen groups no split is empty and nothing moves; on a handful (the
    demo's 8) the run still gets a validation and a test split. The price: on such tiny data,
    adding groups can move the group that was moved here.
    """
    total = sum(ratios)
    bounds, edge = {}, 0.0
    for name, r in zip(SPLITS, ratios):
        bounds[name] = (edge, edge + r / total)
        edge += r / total
    for name, r in zip(SPLITS, ratios):
        counts = {s: list(split.values()).count(s) for s in SPLITS}
        if r <= 0 or counts[name] > 0:
            continue
        donors = [k for k, s in split.items() if counts[s] > 1]
        if not donors:
            break  # fewer groups than splits: nothing to spare
        lo, hi = bounds[name]

        def distance(k: str) -> float:
            u = _unit(k, seed, "split")
            return max(lo - u, u - hi, 0.0)

        split[min(donors, key=lambda k: (distance(k), k))] = name
    return split


class Placed(Protocol):
    """A video placed in a split (e.g. a :class:`storage.tables.ManifestRow`)."""

    split: str
    label: str
    group: str


def split_balance(rows: Iterable[Placed]) -> dict[str, dict[str, float]]:
    """Per split: videos, groups, REAL and FAKE counts, share of all videos and FAKE fraction."""
    rows = list(rows)
    out = {}
    for s in SPLITS:
        mine = [r for r in rows if r.split == s]
        fake = sum(1 for r in mine if r.label == FAKE)
        out[s] = {
            "videos": len(mine),
            "groups": len({r.group for r in mine}),
            "real": len(mine) - fake,
            "fake": fake,
            "share": len(mine) / len(rows) if rows else 0.0,
            "fake_fraction": fake / len(mine) if mine else float("nan"),
        }
    return out
