"""What the ingest summary shows a person: totals that add up, every refused video, probe facts, progress.

Pure functions of the ingest's own tables (no Prefect): ``flows/ingest.py`` turns them into
Prefect artifacts (a markdown summary, a table of refused videos, a progress bar).

Every video file or metadata entry the scan saw ends up exactly once as either ingested
(a manifest row with status ``ingested``) or quarantined (a row of quarantine.parquet): refused
before decoding (no manifest row: a file without a metadata entry, an entry without its file,
bad metadata...) or while decoding (a manifest row with status ``quarantined``).
"""

from __future__ import annotations

import statistics
from collections import Counter

from storage.tables import ManifestRow, RefusedRow

MAX_REFUSED_ROWS = 1000  # a table artifact of 100,000 rows helps nobody: the rest is in quarantine.parquet
_FILE_WITHOUT_ENTRY = "missing_metadata"


def totals(manifest: list[ManifestRow], quarantine: list[RefusedRow]) -> dict[str, int]:
    """Counts that add up: ``considered == ingested + quarantined``.

    ``considered`` = metadata entries (with or without a file) + video files without an entry.
    """
    status = Counter(r.status for r in manifest)
    reasons = [q.reason for q in quarantine]
    before = sum(q.video_id is None for q in quarantine)  # no manifest row: refused by the scan
    considered = len(manifest) + before
    files_without_entry = reasons.count(_FILE_WITHOUT_ENTRY)
    return {
        "considered": considered,
        "metadata_entries": considered - files_without_entry,
        "files_without_entry": files_without_entry,
        "ingested": status.get("ingested", 0),
        "quarantined": len(quarantine),
        "refused_before_decoding": before,
        "refused_while_decoding": len(quarantine) - before,
        "unaccounted": considered - status.get("ingested", 0) - len(quarantine),  # 0 unless a bug
    }


def totals_lines(t: dict[str, int]) -> list[str]:
    """Markdown bullet lines of :func:`totals`."""
    lines = [
        f"- videos considered: {t['considered']} = {t['metadata_entries']} metadata entries + "
        f"{t['files_without_entry']} video files without an entry",
        f"- ingested: {t['ingested']}; quarantined: {t['quarantined']} ({t['refused_before_decoding']} refused "
        f"before decoding, {t['refused_while_decoding']} while decoding); {t['ingested']} + {t['quarantined']} = "
        f"{t['ingested'] + t['quarantined']}",
    ]
    if t["unaccounted"]:
        lines.append(f"- **{t['unaccounted']} videos unaccounted for** (neither ingested nor quarantined): a bug")
    return lines


def refused_rows(quarantine: list[RefusedRow], limit: int = MAX_REFUSED_ROWS) -> list[dict[str, str]]:
    """One row per refused video (name, reason, message), by reason then name; at most ``limit``."""
    rows = sorted(quarantine, key=lambda r: (r.reason or "", r.rel_path or ""))
    out = [{"video": r.rel_path or "", "reason": r.reason or "", "message": _message(r.error)}
           for r in rows[:limit]]  # fmt: skip
    if len(rows) > limit:
        out.append({"video": f"... {len(rows) - limit} more", "reason": "", "message": "see quarantine.parquet"})
    return out


def _message(error: str | None, width: int = 300) -> str:
    """The error's last non-empty line (a traceback's own message), shortened."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1][:width] if lines else ""


def probe_lines(manifest: list[ManifestRow]) -> list[str]:
    """Probe facts of the ingested videos: duration, frame rate, resolution, rotation, audio."""
    rows = [r for r in manifest if r.status == "ingested"]
    if not rows:
        return ["- probe facts: no video was ingested"]
    durations = [r.duration for r in rows if r.duration is not None]
    fps = Counter(round(r.fps, 2) for r in rows if r.fps)
    sizes = Counter(f"{r.width}x{r.height}" for r in rows if r.width)
    rotations = Counter(r.rotation or 0 for r in rows)
    audio = Counter(r.audio_rate for r in rows if r.has_audio)
    lines = []
    if durations:
        lines.append(f"- duration: {min(durations):.1f} / {statistics.median(durations):.1f} / {max(durations):.1f} s "
                     "(min / median / max)")  # fmt: skip
    lines += [
        f"- frame rate: {_common(fps)}; resolution: {_common(sizes)}; rotation: {_common(rotations)}",
        f"- audio: {sum(audio.values())} of {len(rows)} with an audio stream"
        + (f" ({_common(Counter({f'{k} Hz': v for k, v in audio.items()}))})" if audio else ""),
    ]
    return lines


def _common(counts: Counter, show: int = 3) -> str:
    parts = [f"{k} x {n}" for k, n in counts.most_common(show)]
    rest = sum(counts.values()) - sum(n for _, n in counts.most_common(show))
    return ", ".join(parts + ([f"{rest} other"] if rest else [])) or "n/a"


def progress(done: int, total: int, seconds: float) -> tuple[float, str]:
    """(percent, "12 / 40 videos, 0.80 videos/s, ETA 35 s") of an ingest ``seconds`` into its work."""
    percent = 100.0 * done / total if total else 100.0
    rate = done / seconds if seconds > 0 else 0.0
    eta = (
        f"ETA {(total - done) / rate:.0f} s" if rate > 0 and done < total else ("done" if done >= total else "ETA n/a")
    )
    return percent, f"{done} / {total} videos, {rate:.2f} videos/s, {eta}"
