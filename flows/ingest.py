"""Prefect flow ``ingest-dfdc``: scan -> manifest -> Ray fan-out over shards -> index -> summary.

Ray remote calls run inside one Prefect task rather than through prefect-ray's
RayTaskRunner: the runner has broken across Prefect minor releases, does not pass the
Prefect API URL to remote workers and pulls task results into the flow process. Here
Prefect sees coarse steps with small results (the planned manifest travels as its path), Ray
sees one call per shard on an ActorPool of workers that each build their face detector once,
and workers write shards to storage and return small JSON-able records.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.preflight import check_ingest_inputs, retrying_task
from storage import fs
from storage.tables import ManifestRow, RefusedRow, read_table, write_table
from tasks.ingest import units as steps
from tasks.ingest import summary as ingest_summary
from tasks.ingest.scan import refusal_counts
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.ingest.video import keep_frame_memory
from tasks.ingest.write_unit import WorkUnit, is_complete, largest_first, process_unit
from tasks.ingest.identity import Embedded, cluster_faces, embed_videos, root_videos
from tasks.ingest.splits import identity_groups, read_identities
from tasks.ingest.settings import IngestSettings


def init_ray(address: str | None, num_cpus: int | None):
    """Join $RAY_ADDRESS / the given cluster, or start a local Ray bound to 127.0.0.1."""
    # a driver under `uv run` would otherwise make Ray start workers with `uv run` in a copy of the
    # working dir, outside this venv (read when ray is first imported: also set by our scripts)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:
        # single-node mode is what makes Ray 2.60 bind every port to 127.0.0.1
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # address="local": always a new Ray of our own, never another user's running one
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)  # fmt: skip
    return ray


# every ingest task is safe to retry: the plan and the indexes are rewritten whole (atomically), and a
# unit whose shard is complete is skipped, never rewritten
@retrying_task("scan-and-plan")
def scan_and_plan(cfg: IngestSettings) -> tuple[list[WorkUnit], "steps.ScanResult"]:
    """The work units and the scan's refusals; the planned manifest goes to storage, not back to the flow."""
    log = get_run_logger()
    result = steps.scan(cfg.data)
    layout = fs.IngestLayout(cfg.out)
    identities = read_identities(cfg.identity_map) if cfg.identity_map else None
    if cfg.face_identities:
        embedded = _embed_faces(root_videos(cfg.data, result.entries), cfg)
        identities = cluster_faces(embedded.embeddings)
        log.info("identities=auto: %d videos embedded into %d identities; no face in %d, undecodable %d",
                 len(identities), len(set(identities.values())), len(embedded.no_face), len(embedded.failed))  # fmt: skip
    grouping = identity_groups(result.entries, identities)
    for line in grouping.warnings():
        log.warning("metadata links: %s", line)
    units, planned = steps.plan(
        result, cfg.data, layout, ratios=cfg.ratios, folds=cfg.folds, seed=cfg.seed,
        videos_per_shard=cfg.videos_per_shard, grouping=grouping,
    )  # fmt: skip
    write_table(layout.manifest, ManifestRow, planned)  # the planned manifest is visible before any decode
    stale = steps.remove_stale_shards(layout, units)
    log.info(
        "scanned %s: %d videos in %d units, %d refused before decoding, %d fakes with absent originals; removed %d stale shards",
        cfg.data,
        len(result.entries),
        len(units),
        len(result.rejected),
        len(result.missing_originals),
        len(stale),
    )
    # one line per reason, not per file: 100,000 refusals must not become 100,000 log records
    for reason, (n, first) in refusal_counts(result.rejected).items():
        log.warning(
            "refused before decoding: %s x %d (e.g. %s); every file is listed in %s",
            reason,
            n,
            first[:300],
            layout.quarantine,
        )
    return units, result


FACE_BATCH = 32  # videos per Ray task of identities=auto: ~20 CPU-s each, one detector and embedder per task


def _embed_faces(videos: list[tuple[str, str]], cfg: IngestSettings) -> Embedded:
    """identities=auto's embeddings of ``(video id, path)`` pairs: in this process, or in batches of
    :data:`FACE_BATCH` as Ray tasks (collected as they finish)."""
    if cfg.executor == "local" or not videos:
        return embed_videos(videos, read_seconds=cfg.preprocess.limits.read_seconds)
    ray = init_ray(cfg.ray_address, cfg.num_workers)
    embed = ray.remote(num_cpus=1, max_retries=cfg.retries)(embed_videos)
    pending = [embed.remote(videos[i : i + FACE_BATCH], read_seconds=cfg.preprocess.limits.read_seconds)
               for i in range(0, len(videos), FACE_BATCH)]  # fmt: skip
    out = Embedded()
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        out.add(ray.get(done[0]))
    return out


@retrying_task("process-units")
def process_units(units: list[WorkUnit], cfg: IngestSettings) -> tuple[list[dict], list[tuple[WorkUnit, str]], int]:
    """Fan the units out (Ray or in-process); returns (records, failed units, skipped count)."""
    log = get_run_logger()
    pre = cfg.preprocess
    config_hash = pre.hash()
    records, failed, todo = [], [], []
    for u in units:
        done = is_complete(u, config_hash)
        (records.append(done) if done else todo.append(u))
    skipped = len(records)
    log.info("%d units already complete, %d to process", skipped, len(todo))
    bar = _progress(len(todo), cfg.progress)
    ui = _ProgressArtifact(sum(len(u.videos) for u in todo))
    for unit, rec, error in _run(todo, pre, cfg):
        if error is None:
            records.append(rec)
            log.info(
                "shard %s: %d clips, %d videos, %d quarantined, %.1fs%s",
                unit.shard,
                rec["samples"],
                len(rec["videos"]),
                len(rec["quarantined"]),
                rec["seconds"],
                f" on Ray node {rec['node']}" if rec.get("node") else "",
            )
        else:
            failed.append((unit, error))
            log.error("unit %s failed after %d retries: %s", unit.shard, cfg.retries, error)
        bar.update(1)
        ui.add(len(unit.videos))
    bar.close()
    return records, failed, skipped


def _run(
    todo: list[WorkUnit], pre: PreprocessConfig, cfg: IngestSettings
) -> Iterator[tuple[WorkUnit, dict | None, str | None]]:
    """Yield (unit, record dict, error) as units finish."""
    if not todo:
        return
    if cfg.executor == "local":
        yield from _run_local(todo, pre, cfg.jpeg_quality)
    else:
        yield from _run_ray(todo, pre, cfg)


class UnitFailed(Exception):
    """A unit's work raised; names the unit, because a Ray error alone does not say which one it was."""

    def __init__(self, shard: str, error: str):
        super().__init__(shard, error)
        self.shard, self.error = shard, error


class UnitWorker:
    """Writes units with one face detector, built here once (its graphs take ~100 ms to load) and
    reused for every unit this worker is given: in-process for ``executor="local"``, as the state
    of a Ray actor (:class:`RayUnitWorker`) for ``executor="ray"``."""

    def __init__(self, pre: PreprocessConfig, jpeg_quality: int):
        self.pre, self.jpeg_quality = pre, jpeg_quality
        self.detector = face_detector(pre)
        keep_frame_memory()  # this process decodes video after video: reuse the frames' pages (issue 26)

    def write(self, unit: WorkUnit) -> dict:
        """:func:`process_unit`'s record as a dict; any failure raises :class:`UnitFailed`."""
        try:
            return asdict(process_unit(unit, self.pre, jpeg_quality=self.jpeg_quality, detector=self.detector))
        except Exception as e:  # storage errors (disk full...) fail the unit, not the run
            raise UnitFailed(unit.shard, f"{type(e).__name__}: {e}") from e

    def close(self) -> None:
        self.detector.close()


class RayUnitWorker(UnitWorker):
    """A :class:`UnitWorker` in a Ray actor; its records also name the node that ran them.

    ``node`` travels back to the flow (logs, ``units_per_node`` in the result) only: the
    shard's ``.tar.json`` completion record is written inside process_unit, without it.
    """

    def __init__(self, pre: PreprocessConfig, jpeg_quality: int):
        import ray

        super().__init__(pre, jpeg_quality)
        self.node = ray.get_runtime_context().get_node_id()

    def write(self, unit: WorkUnit) -> dict:
        return {**super().write(unit), "node": self.node}


def _run_local(todo: list[WorkUnit], pre: PreprocessConfig, jpeg_quality: int):
    """Every unit in this process, in order, through one worker (one detector for the whole run)."""
    worker = UnitWorker(pre, jpeg_quality)
    try:
        for unit in todo:
            try:
                yield unit, worker.write(unit), None
            except UnitFailed as e:
                yield unit, None, e.error
    finally:
        worker.close()


def _run_ray(todo: list[WorkUnit], pre: PreprocessConfig, cfg: IngestSettings):
    """The units over an ActorPool of one :class:`RayUnitWorker` per CPU of the Ray cluster.

    A unit that raises is retried ``cfg.retries`` times on its actor; an actor whose process dies
    (kill, out of memory, a crash in native code) restarts, rebuilding its detector, and its unit
    is retried as often. An actor that has used up its restarts is replaced by a new one.
    """
    ray = init_ray(cfg.ray_address, cfg.num_workers)
    from ray.exceptions import ActorDiedError
    from ray.util import ActorPool

    actor = ray.remote(num_cpus=1, max_restarts=cfg.retries, max_task_retries=cfg.retries)(RayUnitWorker)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))  # the CPUs given to ingest: one actor each
    actors = [actor.remote(pre, cfg.jpeg_quality) for _ in range(min(len(todo), cpus))]
    pool = ActorPool(actors)
    left = {u.shard: u for u in todo}
    deaths: list[str] = []
    try:
        for unit in largest_first(todo):  # the pool serves in submission order: no large unit left for last
            pool.submit(lambda a, u: a.write.options(retry_exceptions=True).remote(u), unit)
        while pool.has_next():
            try:
                record = pool.get_next_unordered()
            except Exception as e:  # RayTaskError (wrapping UnitFailed) / ActorDiedError
                cause = getattr(e, "cause", None)
                if isinstance(cause, UnitFailed):
                    yield left.pop(cause.shard), None, cause.error
                    continue
                deaths.append(f"{type(e).__name__}: {e}")
                if isinstance(e, ActorDiedError) and not e.actor_init_failed:  # the pool dropped it: keep its size
                    actors.append(actor.remote(pre, cfg.jpeg_quality))
                    pool.push(actors[-1])
                continue
            yield left.pop(record["shard"]), record, None
    finally:
        for a in actors:
            ray.kill(a)
    # a Ray error does not name the task it ends: the units without a result are those whose worker died
    for unit in left.values():
        yield unit, None, deaths[0] if deaths else "no result: every Ray worker of the pool died"


def _quarantine_reasons(uri: str, show: int = 3) -> str:
    """'error x 56 (first: <file>: <message>)' for the commonest reasons in quarantine.parquet."""
    rows = read_table(uri, RefusedRow)
    counts = Counter(r.reason for r in rows)
    first = {}
    for r in rows:
        first.setdefault(r.reason, (r.error or "").strip().splitlines()[-1:] or [""])
    return "; ".join(f"{reason} x {n} (e.g. {first[reason][0][:200]})" for reason, n in counts.most_common(show))


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="ingest shards", unit="shard", disable=not (enabled and sys.stderr.isatty()))


class _ProgressArtifact:
    """The Prefect UI's progress bar of the units to process: videos done / total, rate, ETA."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        percent, text = ingest_summary.progress(0, total, 0.0)
        self.id = create_progress_artifact(percent, key="ingest-progress", description=text)

    def add(self, videos: int) -> None:
        self.done += videos
        percent, text = ingest_summary.progress(self.done, self.total, time.perf_counter() - self.t0)
        update_progress_artifact(self.id, percent, description=text)


@retrying_task("write-index")
def write_index(
    cfg: IngestSettings,
    records: list[dict],
    result: "steps.ScanResult",
    failed: list[tuple[WorkUnit, str]],
    skipped: int,
    seconds: float,
) -> dict:
    """The final manifest, shard index and quarantine from the planned manifest (read back) and the records."""
    layout = fs.IngestLayout(cfg.out)
    # as scan-and-plan wrote it; on a retry after write_outputs began, the final manifest, which
    # finalize maps to itself (every video's fate comes from the records and failures again)
    planned = read_table(layout.manifest, ManifestRow)
    manifest, shards, quarantine = steps.finalize(planned, records, result, failed)
    steps.write_outputs(
        layout,
        manifest,
        shards,
        quarantine,
        {**cfg.model_dump(), "preprocess_hash": cfg.preprocess.hash()},
    )
    summary = steps.summary_markdown(manifest, shards, quarantine, seconds, skipped, ratios=cfg.ratios)
    create_markdown_artifact(markdown=summary, key="ingest-summary", description=f"ingest of {cfg.data}")
    if quarantine:  # every refused video by name, not only counts per reason
        create_table_artifact(ingest_summary.refused_rows(quarantine), key="ingest-refused",
                              description=f"videos of {cfg.data} not ingested: name, reason, message "
                              f"(all of them in {layout.quarantine})")  # fmt: skip
    statuses = [r.status for r in manifest]
    return {
        "out": cfg.out,
        "manifest": layout.manifest,
        "shard_index": layout.shard_index,
        "quarantine": layout.quarantine,
        "videos": len(statuses),
        "ingested": statuses.count("ingested"),
        "quarantined": len(quarantine),
        "shards": len(shards),
        "clips": sum(s.samples for s in shards),
        "skipped_units": skipped,
        # Ray node id -> units it processed in this run (empty for executor="local" or all skipped)
        "units_per_node": dict(Counter(r["node"] for r in records if r.get("node"))),
        "seconds": round(seconds, 2),
    }


@flow(name="ingest-dfdc", log_prints=True)
def ingest_dfdc(config: IngestSettings) -> dict:
    """DFDC videos -> WebDataset shards + manifest.parquet + shards.parquet + quarantine.parquet."""
    t0 = time.perf_counter()
    check_ingest_inputs(config.data, config.out, config.identity_map)  # again: a run from the UI skipped the CLI's
    with steps.output_lock(config.out):
        units, result = scan_and_plan(config)
        records, failed, skipped = process_units(units, config)
        summary = write_index(config, records, result, failed, skipped, time.perf_counter() - t0)
    if not summary["ingested"] and not failed:  # nothing usable, whichever stage refused it: say why, do not look done
        total = summary["videos"] + len(result.rejected)
        raise RuntimeError(
            f"none of the {total} videos under {config.data} was ingested; reasons per video in "
            f"{summary['quarantine']}: " + (_quarantine_reasons(summary["quarantine"]) or "no videos found")
        )
    if failed:  # indexes are written (the rest is usable), but the run must not look complete
        raise RuntimeError(
            f"{len(failed)} of {len(units)} shards failed after retries (their videos are in quarantine.parquet "
            f"as worker_failed; rerun to retry them): " + "; ".join(f"{u.shard}: {e}" for u, e in failed[:3])
        )
    return summary
