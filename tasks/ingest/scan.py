"""Scan a DFDC download: parts, metadata.json entries, and every reason an entry is refused.

Two layouts are accepted: a root holding ``dfdc_train_part_*/`` folders (any sub-folder
with a ``metadata.json`` is a part), or a single folder with its own ``metadata.json``
(like DFDC's ``train_sample_videos/``). Nothing here decodes video.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field

from storage.fs import PathEscapeError, confine
from storage.shard_schema import FAKE, REAL

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
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


def _load_metadata(part: str, part_dir: str) -> tuple[dict | None, str | None]:
    """(entries, None) or (None, why): never hangs (FIFO), never raises on what the file holds."""
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
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"{path}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})"
    try:
        meta = json.loads(text, object_pairs_hook=_object_pairs)
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


def _file_size(part_dir: str, name: str, listing: dict) -> tuple[int, None] | tuple[None, tuple[str, str]]:
    """(bytes, None) for an entry naming a regular file under the part, else (None, (reason, why)).

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
    return st.st_size, None


def scan_dfdc(root: str) -> ScanResult:
    """List every video under root with its metadata; refuse what cannot be trusted."""
    result = ScanResult()
    seen: dict[str, str] = {}  # video_id -> part
    for part, part_dir in find_parts(root):
        meta, error = _load_metadata(part, part_dir)
        listing = {e.name: e for e in os.scandir(part_dir)}  # one listdir per part, not a stat per entry
        on_disk = sorted(f for f in listing if f.lower().endswith(VIDEO_SUFFIXES))
        rel_dir = os.path.relpath(part_dir, root)
        rel = (lambda f: f if rel_dir == "." else os.path.join(rel_dir, f))
        if meta is None:
            reason = "missing_metadata" if "missing" in error else "bad_metadata"
            result.rejected += [Rejection(part, rel(f), reason, f"{rel(f)}: {error}") for f in on_disk]
            continue
        conflicts = getattr(meta, "conflicts", frozenset())
        for name, entry in meta.items():
            problem = _check_entry(name, entry) or _conflict(name, entry, conflicts)
            if problem:
                result.rejected.append(Rejection(part, rel(str(name)), "bad_metadata", f"{part}/metadata.json: {problem}"))
                continue
            size, refused = _file_size(part_dir, name, listing)
            if refused:
                reason, why = refused
                where = f"{part}/metadata.json" if reason == "path_escape" else rel(name)
                result.rejected.append(Rejection(part, rel(name), reason, f"{where}: {why}"))
                continue
            vid = video_id_of(name)
            if vid in seen:
                result.rejected.append(
                    Rejection(part, rel(name), "duplicate_id", f"{rel(name)}: video id {vid!r} already in part {seen[vid]}")
                )
                continue
            seen[vid] = part
            original = entry.get("original") or None
            manipulation = entry.get("manipulation")
            result.entries.append(
                VideoEntry(
                    video_id=vid,
                    part=part,
                    rel_path=rel(name),
                    label=entry["label"],
                    original=video_id_of(original) if original else None,
                    bytes=size,
                    manipulation=manipulation if isinstance(manipulation, str) else None,
                )
            )
        listed = {n for n in meta if isinstance(n, str)}
        for f in on_disk:
            if f not in listed:
                result.rejected.append(Rejection(part, rel(f), "missing_metadata", f"{rel(f)}: no entry in {part}/metadata.json"))
    present = {e.video_id for e in result.entries}
    result.missing_originals = sorted({e.original for e in result.entries if e.original and e.original not in present})
    return result
