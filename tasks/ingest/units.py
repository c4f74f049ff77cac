"""The pure steps of ingest around the per-unit work: plan, manifest, index, quarantine, summary.

Nothing here imports Prefect or Ray: ``flows/ingest.py`` wires these together and fans
``tasks.ingest.write_unit.process_unit`` out over Ray.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict

import pyarrow as pa

from storage import fs
from tasks.ingest.summary import probe_lines, totals, totals_lines
from tasks.ingest.scan import ScanResult, scan_dfdc
from tasks.ingest.write_unit import UnitVideo, WorkUnit, fingerprint, plan_units
from tasks.ingest.splits import Grouping, assign_splits, split_balance

MANIFEST_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("part", pa.string()),
        ("rel_path", pa.string()),
        ("label", pa.string()),
        ("original", pa.string()),
        ("manipulation", pa.string()),
        ("bytes", pa.int64()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("rotation", pa.int32()),
        ("has_audio", pa.bool_()),
        ("audio_rate", pa.int32()),
        ("split", pa.string()),
        ("fold", pa.int32()),
        ("group", pa.string()),
        ("status", pa.string()),  # planned | ingested | quarantined
        ("clips", pa.int32()),
        ("shard", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [("video_id", pa.string()), ("part", pa.string()), ("rel_path", pa.string()), ("label", pa.string()),
     ("reason", pa.string()), ("error", pa.string())]
)
SHARDS_SCHEMA = pa.schema(
    [("path", pa.string()), ("split", pa.string()), ("part", pa.string()), ("samples", pa.int64()),
     ("videos", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string())]
)


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
) -> tuple[list[WorkUnit], pa.Table]:
    """Splits + work units + the planned manifest (probe columns filled in after processing).

    ``grouping``: :func:`tasks.ingest.splits.identity_groups` of the entries (with an identity map);
    default: groups from the metadata's ``original`` links alone.
    """
    assignment = assign_splits(result.entries, ratios, folds, seed, grouping=grouping)
    videos = []
    for e in result.entries:
        a = assignment[e.video_id]
        path = os.path.join(data, e.rel_path)
        videos.append(
            UnitVideo(e.video_id, path, e.rel_path, e.part, e.label, a.split, a.group, e.original, fingerprint(path), e.manipulation)
        )
    units = plan_units(videos, layout.shard, videos_per_shard)
    rows = [
        {**_entry_row(e), "split": assignment[e.video_id].split, "fold": assignment[e.video_id].fold,
         "group": assignment[e.video_id].group, "status": "planned"}
        for e in result.entries
    ]
    return units, pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _entry_row(e) -> dict:
    d = asdict(e)
    return {k: d.get(k) for k in ("video_id", "part", "rel_path", "label", "original", "manipulation", "bytes")}


def finalize(
    planned: pa.Table, records: list[dict], result: ScanResult, failed_units: list[tuple[WorkUnit, str]]
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(manifest, shard index, quarantine) from the planned manifest and every unit's record."""
    info: dict[str, dict] = {}
    quarantine = [
        {"video_id": None, "part": r.part, "rel_path": r.rel_path, "label": None, "reason": r.reason, "error": r.error}
        for r in result.rejected
    ]
    shards = []
    for rec in records:
        for v in rec["videos"]:
            info[v["video_id"]] = {**v, "shard": rec["shard"], "status": "ingested"}
        for q in rec["quarantined"]:
            quarantine.append(q)
            info[q["video_id"]] = {"status": "quarantined"}
        if rec["samples"] > 0:
            shards.append(
                {"path": rec["shard"], "split": rec["split"], "part": rec["part"], "samples": rec["samples"],
                 "videos": len(rec["videos"]), "bytes": rec["bytes"], "sha256": rec["sha256"]}
            )
    for unit, error in failed_units:
        for v in unit.videos:
            quarantine.append({"video_id": v.video_id, "part": v.part, "rel_path": v.rel_path, "label": v.label,
                               "reason": "worker_failed", "error": f"{v.rel_path}: unit {unit.shard} failed after retries: {error}"})
            info[v.video_id] = {"status": "quarantined"}
    rows = []
    for row in planned.to_pylist():
        extra = info.get(row["video_id"], {})
        for k in ("duration", "fps", "width", "height", "rotation", "has_audio", "audio_rate", "clips", "shard", "status"):
            if k in extra:
                row[k] = extra[k]
        rows.append(row)
    return (
        pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA),
        pa.Table.from_pylist(sorted(shards, key=lambda s: s["path"]), schema=SHARDS_SCHEMA),
        pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA),
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
    manifest: pa.Table, shards: pa.Table, quarantine: pa.Table, seconds: float, skipped: int,
    ratios: tuple[float, float, float] | None = None,
) -> str:  # fmt: skip
    m = manifest.to_pylist()
    ingested = [r for r in m if r["status"] == "ingested"]
    clips = sum(r["clips"] or 0 for r in ingested)
    total_bytes = sum(shards.column("bytes").to_pylist()) if shards.num_rows else 0
    reasons = Counter(quarantine.column("reason").to_pylist())
    balance = split_balance(ingested)
    target = dict(zip(balance, (r / sum(ratios) for r in ratios))) if ratios else {}
    lines = [
        "# ingest-dfdc summary",
        "",
        *totals_lines(totals(manifest, quarantine)),
        f"- clips written: {clips} in {shards.num_rows} shards, {total_bytes / 1e6:.1f} MB "
        f"({total_bytes / max(len(ingested), 1) / 1e3:.0f} kB per video)",
        f"- units skipped as already complete: {skipped}",
        f"- wall time: {seconds:.1f} s; throughput {len(m) / max(seconds, 1e-9):.2f} videos/s",
        "",
        "| split | groups | REAL | FAKE | share of videos (target) | FAKE fraction |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {s} | {b['groups']} | {b['real']} | {b['fake']} | {b['share']:.3f}"
          + (f" ({target[s]:.3f})" if target else "") + f" | {b['fake_fraction']:.3f} |" for s, b in balance.items()],
        "",
        "Splits hash each group's key with the seed (stable as data grows, stratified by label only in "
        "expectation): on few groups the shares scatter around the targets.",
        "",
        "| quarantine reason | videos |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(reasons.items())],
        "",
        "Every refused video, by name: the `ingest-refused` table artifact and quarantine.parquet.",
        "",
        "Probe facts of the ingested videos:",
        "",
        *probe_lines(manifest),
    ]
    return "\n".join(lines) + "\n"


def write_outputs(layout: fs.IngestLayout, manifest: pa.Table, shards: pa.Table, quarantine: pa.Table, config: dict) -> None:
    fs.write_parquet(manifest, layout.manifest)
    fs.write_parquet(shards, layout.shard_index)
    fs.write_parquet(quarantine, layout.quarantine)
    fs.atomic_write_bytes(layout.config, json.dumps(config, indent=2, sort_keys=True, default=str).encode())
