"""Scan a DFDC download: parts, metadata.json entries, and every reason an entry is refused.

Two layouts are accepted: a root holding ``dfdc_train_part_*/`` folders (any sub-folder
with a ``metadata.json`` is a part), or a single folder with its own ``metadata.json``
(like DFDC's ``train_sample_videos/``). Nothing here decodes video.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field

from storage.fs import PathEscapeError, confine
from storage.shard_schema import FAKE, REAL

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v")  # .mpg: MPEG-1/2 (GRID)
# DFDC's largest metadata.json is under 1 MB; past this a file is refused before it is read (a
# 50 MB string cost twice its size in memory)
MAX_METADATA_BYTES = 32 << 20
UTF8_BOM = b"\xef\xbb\xbf"
_SAFE_ID = re.compile(r"[^A-Za-z0-9_\-]")


@dataclass(frozen=True)
class VideoEntry:
    video_id: str  # sanitised stem, unique across the dataset; safe in shard keys
    part: str
    rel_path: str  # relative to the data root
    label: str  # REAL | FAKE
    original: str | None  # the REAL source's video id (fakes), None for reals
    bytes: int
    manipulation: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A file or metadata entry refused before decoding; it lands in quarantine.parquet."""

    part: str
    rel_path: str
    reason: str  # a stable code: missing_metadata, bad_metadata, path_escape, ...
    error: str  # the human-readable explanation, naming the file


def refusal_counts(rejected: list[Rejection]) -> dict[str, tuple[int, str]]:
    """reason -> (count, first error), commonest first: what a log line shows instead of every file."""
    counts: dict[str, list] = {}
    for r in rejected:
        counts.setdefault(r.reason, [0, r.error])[0] += 1
    return {k: (n, first) for k, (n, first) in sorted(counts.items(), key=lambda kv: -kv[1][0])}


@dataclass
class ScanResult:
    entries: list[VideoEntry] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    missing_originals: list[str] = field(default_factory=list)  # fakes whose REAL is not present


def video_id_of(name: str) -> str:
    """'abc def.mp4' -> 'abc_def'; ids must be shard-key safe ([A-Za-z0-9_-]).

    Non-ASCII or punctuation is replaced and a short hash keeps distinct names distinct.
    """
    stem = os.path.splitext(os.path.basename(name))[0]
    safe = _SAFE_ID.sub("_", stem)
    if safe != stem or not safe:
        import hashlib

        safe = f"{safe}_{hashlib.sha1(stem.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return safe


def find_parts(root: str) -> list[tuple[str, str]]:
    """[(part_name, part_dir)] sorted by name; the root itself if it holds metadata.json."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root!r} is not a directory")
    if os.path.exists(os.path.join(root, "metadata.json")):
        return [(os.path.basename(os.path.normpath(root)) or "root", root)]
    parts = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            has_videos = any(f.lower().endswith(VIDEO_SUFFIXES) for f in os.listdir(path))
            if has_videos or os.path.exists(os.path.join(path, "metadata.json")):
                parts.append((name, path))
    if not parts:
        raise FileNotFoundError(f"no metadata.json and no dfdc_train_part_* folders under {root!r}")
    return parts


class _Object(dict):
    """A JSON object that remembers keys it saw more than once with different values."""

    conflicts: frozenset = frozenset()


def _object_pairs(pairs: list[tuple[str, object]]) -> _Object:
    obj = _Object()
    conflicts = set()
    for k, v in pairs:
        if k in obj and obj[k] != v:
            conflicts.add(k)  # json.load would keep the last silently: refuse instead of guessing
        obj[k] = v
    obj.conflicts = frozenset(conflicts)
    return obj


class _NotStrictJson(ValueError):
    pass


def _refuse_constant(name: str) -> None:
    """json's parse_constant: Python accepts NaN / Infinity / -Infinity, JSON (RFC 8259) does not."""
    raise _NotStrictJson(f"{name} is not a JSON value")


def _load_metadata(part: str, part_dir: str) -> tuple[dict | None, str | None]:
    """(entries, None) or (None, why): never hangs (FIFO), never raises on what the file holds.

    One rule, strict JSON (RFC 8259): UTF-8 without a byte order mark, no NaN or Infinity, at
    most :data:`MAX_METADATA_BYTES`.
    """
    path = os.path.join(part_dir, "metadata.json")
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait forever for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, f"{path}: metadata.json missing"
    except OSError as e:  # a symlink loop, no permission, ...
        return None, f"{path}: cannot open ({e.strerror or e})"
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        return None, f"{path}: is {kind}, not a JSON file"
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_METADATA_BYTES + 1)  # never more than the cap, whatever fstat said
    if len(raw) > MAX_METADATA_BYTES:
        return None, f"{path}: larger than the {MAX_METADATA_BYTES >> 20} MiB a metadata.json may be"
    if raw.startswith(UTF8_BOM):
        return None, f"{path}: starts with a UTF-8 byte order mark, which JSON (RFC 8259) does not allow"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"{path}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})"
    try:
        meta = json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_refuse_constant)
    except _NotStrictJson as e:
        return None, f"{path}: not valid JSON ({e})"
    except json.JSONDecodeError as e:
        return None, f"{path}: not valid JSON ({e})"
    except RecursionError:
        return None, f"{path}: not valid JSON (nested too deep)"
    if not isinstance(meta, dict):
        return None, f"{path}: top level must be an object mapping file -> entry, got {type(meta).__name__}"
    return meta, None


def _check_entry(name: object, entry: object) -> str | None:
    if not isinstance(name, str):
        return f"file name must be a string, got {name!r}"
    if not isinstance(entry, dict):
        return f"{name}: entry must be an object, got {type(entry).__name__}"
    label = entry.get("label")
    if label is None:
        return f"{name}: missing label"
    if label not in (REAL, FAKE):
        return f"{name}: label must be REAL or FAKE, got {label!r}"
    original = entry.get("original")
    if original is not None and not isinstance(original, str):
        return f"{name}: original must be a file name or null, got {original!r}"
    if label == REAL and original not in (None, ""):
        return f"{name}: a REAL video cannot have an original ({original!r})"
    return None


def _conflict(name: str, entry: object, conflicts: frozenset) -> str | None:
    """Keys given twice with different values: json would keep the last one; we refuse."""
    if name in conflicts:
        return f"{name}: listed more than once with different entries (refused rather than guessing which)"
    inner = getattr(entry, "conflicts", frozenset())
    if inner:
        return f"{name}: field(s) {', '.join(sorted(inner))} given more than once with different values"
    return None


def _file_stat(part_dir: str, name: str, listing: dict) -> tuple[os.stat_result, None] | tuple[None, tuple[str, str]]:
    """(stat, None) for an entry naming a regular file under the part, else (None, (reason, why)).

    A plain file name absent from the part's listing is missing without touching the disk
    (100,000 missing entries cost one listdir, not 100,000 stats); anything else (sub-paths,
    '..', symlinks) goes through ``confine``.
    """
    plain = name and "/" not in name and "\x00" not in name and name not in (".", "..")
    if plain and name not in listing:
        return None, ("missing_file", "listed in metadata.json but not on disk")
    try:
        path = confine(part_dir, name)
    except PathEscapeError as e:
        return None, ("path_escape", str(e))
    try:
        st = os.stat(path)
    except OSError as e:  # gone, or a symlink loop
        return None, ("missing_file", f"listed in metadata.json but not readable ({e.strerror})")
    if not stat.S_ISREG(st.st_mode):
        return None, ("missing_file", "listed in metadata.json but not a regular file")
    return st, None


_HEAD_BYTES = 64 << 10  # enough to tell two different encodes apart, cheap to read


def _digest(path: str, limit: int | None = None) -> str | None:
    """sha256 of the file's first ``limit`` bytes (all of it when None); None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            if limit is not None:
                h.update(f.read(limit))
            while limit is None and (block := f.read(1 << 20)):
                h.update(block)
    except OSError:  # unreadable: decoding will say so; it is nobody's duplicate
        return None
    return h.hexdigest()


def _same_bytes(paths: list[str]) -> list[list[int]]:
    """Indices of ``paths`` (all one size) grouped by content: the first 64 KiB's digest, then the whole file's."""
    heads: dict[str, list[int]] = {}
    groups: list[list[int]] = []
    for i, p in enumerate(paths):
        head = _digest(p, _HEAD_BYTES)
        if head is None:
            groups.append([i])
        else:
            heads.setdefault(head, []).append(i)
    for members in heads.values():
        whole: dict[str | int, list[int]] = {}
        for i in members:  # whole files only where the first 64 KiB already agree
            key = (_digest(paths[i]) or i) if len(members) > 1 else i
            whole.setdefault(key, []).append(i)
        groups += whole.values()
    return groups


def _duplicates(root: str, found: list[tuple[VideoEntry, os.stat_result, bool]]) -> dict[int, tuple[int, str]]:
    """index -> (index of the video it repeats, how): one file is one video.

    Two paths to one file (a symlink, a hard link) share device and inode; a copy under another
    name has the same bytes. Only files of equal size are read, and a whole file only when its
    first 64 KiB match another's, so a dataset without copies costs a stat per file, no reads.
    The video kept is the first in scan order, preferring a plain file over a symlink to it.
    """
    order = sorted(range(len(found)), key=lambda i: (found[i][2], i))  # plain files first, then scan order
    out: dict[int, tuple[int, str]] = {}
    by_inode: dict[tuple[int, int], int] = {}
    by_size: dict[int, list[int]] = {}
    for i in order:
        _, st, is_link = found[i]
        first = by_inode.setdefault((st.st_dev, st.st_ino), i)
        if first != i:
            out[i] = (first, "a symlink to it" if is_link else "a hard link to it")
        else:
            by_size.setdefault(st.st_size, []).append(i)
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        for group in _same_bytes([os.path.join(root, found[i][0].rel_path) for i in same_size]):
            for k in group[1:]:
                out[same_size[k]] = (same_size[group[0]], "a copy with the same bytes")
    return out


def _drop_duplicates(root: str, result: "ScanResult", found: list[tuple[VideoEntry, os.stat_result, bool]]) -> None:
    """Keep one entry per file (:func:`_duplicates`); the others are refused ``duplicate_of``, and a
    fake naming a dropped one as its original is pointed at the kept one (so it shares its group and split)."""
    dups = _duplicates(root, found)
    kept_id = {found[i][0].video_id: found[j][0].video_id for i, (j, _) in dups.items()}
    for i, (entry, _, _) in enumerate(found):
        if i in dups:
            j, how = dups[i]
            first = found[j][0]
            result.rejected.append(Rejection(entry.part, entry.rel_path, "duplicate_of",
                                             f"{entry.rel_path}: the same video as {first.rel_path} ({how})"))  # fmt: skip
            continue
        if entry.original in kept_id:
            entry = dataclasses.replace(entry, original=kept_id[entry.original])
        result.entries.append(entry)


def scan_dfdc(root: str) -> ScanResult:
    """List every video under root with its metadata; refuse what cannot be trusted."""
    result = ScanResult()
    found: list[tuple[VideoEntry, os.stat_result, bool]] = []  # entry, its file's stat, is it a symlink
    seen: dict[str, str] = {}  # video_id -> part
    for part, part_dir in find_parts(root):
        meta, error = _load_metadata(part, part_dir)
        listing = {e.name: e for e in os.scandir(part_dir)}  # one listdir per part, not a stat per entry
        on_disk = sorted(f for f in listing if f.lower().endswith(VIDEO_SUFFIXES))
        rel_dir = os.path.relpath(part_dir, root)
        rel = lambda f: f if rel_dir == "." else os.path.join(rel_dir, f)
        if meta is None:
            reason = "missing_metadata" if "missing" in error else "bad_metadata"
            result.rejected += [Rejection(part, rel(f), reason, f"{rel(f)}: {error}") for f in on_disk]
            continue
        conflicts = getattr(meta, "conflicts", frozenset())
        for name, entry in meta.items():
            problem = _check_entry(name, entry) or _conflict(name, entry, conflicts)
            if problem:
                result.rejected.append(
                    Rejection(part, rel(str(name)), "bad_metadata", f"{part}/metadata.json: {problem}")
                )
                continue
            st, refused = _file_stat(part_dir, name, listing)
            if refused:
                reason, why = refused
                where = f"{part}/metadata.json" if reason == "path_escape" else rel(name)
                result.rejected.append(Rejection(part, rel(name), reason, f"{where}: {why}"))
                continue
            vid = video_id_of(name)
            if vid in seen:
                result.rejected.append(
                    Rejection(
                        part, rel(name), "duplicate_id", f"{rel(name)}: video id {vid!r} already in part {seen[vid]}"
                    )
                )
                continue
            seen[vid] = part
            original = entry.get("original") or None
            manipulation = entry.get("manipulation")
            video = VideoEntry(
                video_id=vid,
                part=part,
                rel_path=rel(name),
                label=entry["label"],
                original=video_id_of(original) if original else None,
                bytes=st.st_size,
                manipulation=manipulation if isinstance(manipulation, str) else None,
            )
            is_link = listing[name].is_symlink() if name in listing else os.path.islink(os.path.join(part_dir, name))
            found.append((video, st, is_link))
        listed = {n for n in meta if isinstance(n, str)}
        for f in on_disk:
            if f not in listed:
                result.rejected.append(
                    Rejection(part, rel(f), "missing_metadata", f"{rel(f)}: no entry in {part}/metadata.json")
                )
    _drop_duplicates(root, result, found)
    present = {e.video_id for e in result.entries}
    result.missing_originals = sorted({e.original for e in result.entries if e.original and e.original not in present})
    return result
