"""Scan a DFDC download: parts, metadata.json entries, and every reason an entry is refused.

Two layouts are accepted: a root holding ``dfdc_train_part_*/`` folders (any sub-folder
with a ``metadata.json`` is a part), or a single folder with its own ``metadata.json``
(like DFDC's ``train_sample_videos/``). Nothing here decodes video.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from storage.fs import PathEscapeError, confine

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


def _load_metadata(part: str, part_dir: str) -> tuple[dict | None, str | None]:
    path = os.path.join(part_dir, "metadata.json")
    if not os.path.exists(path):
        return None, f"{path}: metadata.json missing"
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"{path}: not valid JSON ({e})"
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
    if label not in ("REAL", "FAKE"):
        return f"{name}: label must be REAL or FAKE, got {label!r}"
    original = entry.get("original")
    if original is not None and not isinstance(original, str):
        return f"{name}: original must be a file name or null, got {original!r}"
    if label == "REAL" and original not in (None, ""):
        return f"{name}: a REAL video cannot have an original ({original!r})"
    return None


def scan_dfdc(root: str) -> ScanResult:
    """List every video under root with its metadata; refuse what cannot be trusted."""
    result = ScanResult()
    seen: dict[str, str] = {}  # video_id -> part
    for part, part_dir in find_parts(root):
        meta, error = _load_metadata(part, part_dir)
        on_disk = sorted(f for f in os.listdir(part_dir) if f.lower().endswith(VIDEO_SUFFIXES))
        rel_dir = os.path.relpath(part_dir, root)
        rel = (lambda f: f if rel_dir == "." else os.path.join(rel_dir, f))
        if meta is None:
            reason = "missing_metadata" if "missing" in error else "bad_metadata"
            result.rejected += [Rejection(part, rel(f), reason, f"{rel(f)}: {error}") for f in on_disk]
            continue
        for name, entry in meta.items():
            problem = _check_entry(name, entry)
            if problem:
                result.rejected.append(Rejection(part, rel(str(name)), "bad_metadata", f"{part}/metadata.json: {problem}"))
                continue
            try:
                path = confine(part_dir, name)
            except PathEscapeError as e:
                result.rejected.append(Rejection(part, rel(name), "path_escape", f"{part}/metadata.json: {e}"))
                continue
            if not os.path.isfile(path):
                result.rejected.append(Rejection(part, rel(name), "missing_file", f"{rel(name)}: listed in metadata.json but not on disk"))
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
                    bytes=os.path.getsize(path),
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
