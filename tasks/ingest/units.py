"""The pure steps of ingest around the per-unit work: plan, manifest, index, quarantine, summary.

Nothing here imports Prefect or Ray: ``flows/ingest.py`` wires these together and fans
``tasks.ingest.write_unit.process_unit`` out over Ray.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace

from storage import fs
from storage.tables import ManifestRow, RefusedRow, ShardRow, write_table
from tasks.ingest.summary import probe_lines, totals, totals_lines
from tasks.ingest.scan import ScanResult, VideoEntry, scan_dfdc
from tasks.ingest.write_unit import UnitVideo, WorkUnit, fingerprint, plan_units
from tasks.ingest.splits import Grouping, assign_splits, split_balance


class IngestLockedError(fs.LockedError):
    pass


def output_lock(out: str):
    """One ingest per output root at a time: a second run refuses instead of corrupting."""
    return fs.exclusive_lock(out, ".ingest.lock", "ingest", IngestLockedError)


def scan(data: str) -> ScanResult:
    return scan_dfdc(data)


def plan(
    result: ScanResult,
    data: str,
    layout: fs.IngestLayout,
    *,
    ratios: tuple[float, float, float],
    folds: int,
    seed: int,
    videos_per_shard: int,
    grouping: Grouping | None = None,
) -> tuple[list[WorkUnit], list[ManifestRow]]:
    """Splits + work units + the planned manifest (probe columns filled in after processing).

    ``grouping``: :func:`tasks.ingest.splits.identity_groups` of the entries (with an identity map);
    default: groups from the metadata's ``original`` links alone.
    """
    assignment = assign_splits(result.entries, ratios, folds, seed, grouping=grouping)
    videos = []
    paths = {e.video_id: os.path.join(data, e.rel_path) for e in result.entries}
    for e in result.entries:
        a = assignment[e.video_id]
        path = paths[e.video_id]
        videos.append(
            UnitVideo(
                e.video_id,
                path,
                e.rel_path,
                e.part,
                e.label,
                a.split,
                a.group,
                e.original,
                fingerprint(path),
                e.manipulation,
                paths.get(e.original) if e.original else None,
                e.bytes,
            )  # fmt: skip
        )
    units = plan_units(videos, layout.shard, videos_per_shard)
    return units, [_planned_row(e, assignment[e.video_id].split, assignment[e.video_id].fold,
                                assignment[e.video_id].group) for e in result.entries]  # fmt: skip


def _planned_row(e: VideoEntry, split: str, fold: int, group: str) -> ManifestRow:
    return ManifestRow(video_id=e.video_id, part=e.part, rel_path=e.rel_path, label=e.label, original=e.original,
                       manipulation=e.manipulation, bytes=e.bytes, split=split, fold=fold, group=group)  # fmt: skip


def finalize(
    planned: list[ManifestRow], records: list[dict], result: ScanResult, failed_units: list[tuple[WorkUnit, str]]
) -> tuple[list[ManifestRow], list[ShardRow], list[RefusedRow]]:
    """(manifest, shard index, quarantine) from the planned manifest and every unit's record."""
    info: dict[str, dict] = {}
    quarantine = [
        RefusedRow(video_id=None, part=r.part, rel_path=r.rel_path, label=None, reason=r.reason, error=r.error)
        for r in result.rejected
    ]
    shards = []
    for rec in records:
        for v in rec["videos"]:
            info[v["video_id"]] = {**{k: v[k] for k in _PROBED if k in v}, "shard": rec["shard"], "status": "ingested"}
        for q in rec["quarantined"]:
            quarantine.append(RefusedRow(**q))
            info[q["video_id"]] = {"status": "quarantined"}
        if rec["samples"] > 0:
            shards.append(ShardRow(path=rec["shard"], split=rec["split"], part=rec["part"], samples=rec["samples"],
                                   videos=len(rec["videos"]), bytes=rec["bytes"], sha256=rec["sha256"]))  # fmt: skip
    for unit, error in failed_units:
        for v in unit.videos:
            quarantine.append(RefusedRow(video_id=v.video_id, part=v.part, rel_path=v.rel_path, label=v.label,
                                         reason="worker_failed",
                                         error=f"{v.rel_path}: unit {unit.shard} failed after retries: {error}"))  # fmt: skip
            info[v.video_id] = {"status": "quarantined"}
    manifest = [replace(row, **info.get(row.video_id, {})) for row in planned]
    return manifest, sorted(shards, key=lambda s: s.path), quarantine


# the manifest columns a unit's record fills in for each ingested video
_PROBED = (
    "duration",
    "fps",
    "width",
    "height",
    "rotation",
    "has_audio",
    "audio_rate",
    "clips",
    "faces",
    "fake_faces",
    "crop",
    "landmark_frac",
)


def remove_stale_shards(layout: fs.IngestLayout, units: list[WorkUnit]) -> list[str]:
    """Delete shards (and records) the current plan no longer writes, and temp files of killed runs.

    Call only while holding :func:`output_lock`: no other writer can own a temp file then.
    """
    if fs.is_local(layout.root):
        for dirpath, _, files in os.walk(layout.shards_dir.removeprefix("file://")):
            for f in files:
                if f.startswith(".") and f.endswith(".tmp"):
                    os.remove(os.path.join(dirpath, f))
    keep = {u.shard for u in units}
    stale = [p for p in fs.list_files(layout.shards_dir, ".tar") if p not in keep]
    for p in stale:
        fsys, path = fs.split_uri(p)
        for q in (path + ".json", path):
            if fsys.exists(q):
                fsys.rm(q)
    return stale


def summary_markdown(
    manifest: list[ManifestRow], shards: list[ShardRow], quarantine: list[RefusedRow], seconds: float, skipped: int,
    ratios: tuple[float, float, float] | None = None,
) -> str:  # fmt: skip
    ingested = [r for r in manifest if r.status == "ingested"]
    clips = sum(r.clips or 0 for r in ingested)
    total_bytes = sum(s.bytes for s in shards)
    reasons = Counter(q.reason for q in quarantine)
    balance = split_balance(ingested)
    target = dict(zip(balance, (r / sum(ratios) for r in ratios))) if ratios else {}
    lines = [
        "# ingest-dfdc summary",
        "",
        *totals_lines(totals(manifest, quarantine)),
        f"- clips written: {clips} in {len(shards)} shards, {total_bytes / 1e6:.1f} MB "
        f"({total_bytes / max(len(ingested), 1) / 1e3:.0f} kB per video)",
        f"- units skipped as already complete: {skipped}",
        f"- wall time: {seconds:.1f} s; throughput {len(manifest) / max(seconds, 1e-9):.2f} videos/s",
        "",
        *(
            [
                "| split | groups | REAL | FAKE | share of videos (target) | FAKE fraction |",
                "|---|---:|---:|---:|---:|---:|",
                *[
                    f"| {s} | {b['groups']} | {b['real']} | {b['fake']} | {b['share']:.3f}"
                    + (f" ({target[s]:.3f})" if target else "")
                    + f" | {b['fake_fraction']:.3f} |"
                    for s, b in balance.items()
                ],
                "",
                "Splits hash each group's key with the seed (stable as data grows, stratified by label only in "
                "expectation): on few groups the shares scatter around the targets.",
            ]
            if ingested
            else ["No video was ingested: no split holds any."]
        ),
        "",
        *_refused_lines(reasons),
        "",
        "Probe facts of the ingested videos:",
        "",
        *probe_lines(manifest),
    ]
    return "\n".join(lines) + "\n"


def _refused_lines(reasons: Counter) -> list[str]:
    """Refusals per reason, or one sentence when there are none (an empty table renders as a bare header)."""
    if not reasons:
        return ["No video was refused."]
    return ["| quarantine reason | videos |", "|---|---:|", *[f"| {k} | {v} |" for k, v in sorted(reasons.items())], "",
            "Every refused video, by name: the `ingest-refused` table artifact and quarantine.parquet."]  # fmt: skip


def write_outputs(
    layout: fs.IngestLayout, manifest: list[ManifestRow], shards: list[ShardRow], quarantine: list[RefusedRow],
    config: dict,
) -> None:  # fmt: skip
    write_table(layout.manifest, ManifestRow, manifest)
    write_table(layout.shard_index, ShardRow, shards)
    write_table(layout.quarantine, RefusedRow, quarantine)
    fs.atomic_write_bytes(layout.config, json.dumps(config, indent=2, sort_keys=True, default=str).encode())
