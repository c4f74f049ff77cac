"""Work units -> WebDataset shards, written atomically, each marked complete by a record.

A unit is the videos of one (split, part) chunk, sorted by id, so its shard name is
stable across runs and new parts add new units without touching old ones. A shard is
complete when its ``.tar.json`` record exists (written after the tar is in place); a
rerun skips a unit whose record matches the unit's videos, fingerprints and config hash and
whose tar still has the size and sha256 the record names (else the shard is rewritten).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, field

from storage import fs
from storage.shard_schema import FAKE, ClipMeta, encode_sample
from storage.shard_io import ShardWriter
from tasks.ingest.face_labels import face_differences, face_labels
from tasks.ingest.faces import FaceDetector
from tasks.ingest.preprocess import Preprocessed, PreprocessConfig, preprocess_video
from tasks.ingest.stages import measuring, stage
from tasks.ingest.video import HWAccelUnavailable, VideoError


@dataclass(frozen=True)
class UnitVideo:
    video_id: str
    path: str  # absolute path (already confined to the data root by the scan)
    rel_path: str
    part: str
    label: str
    split: str
    group: str
    original: str | None
    fingerprint: str
    manipulation: str | None = None
    original_path: str | None = None  # the original's absolute path, when it is part of the dataset
    bytes: int = 0  # the file's size at the scan: what orders the fan-out (:func:`largest_first`)


@dataclass(frozen=True)
class WorkUnit:
    split: str
    part: str
    chunk: int
    shard: str  # URI of the shard this unit writes
    videos: tuple[UnitVideo, ...]

    def signature(self, config_hash: str) -> dict:
        return {"config": config_hash, "videos": {v.video_id: v.fingerprint for v in self.videos}}


@dataclass
class UnitRecord:
    """Small, JSON-able result of a unit; what travels back through Ray and Prefect."""

    shard: str
    split: str
    part: str
    signature: dict
    samples: int = 0
    videos: list[dict] = field(default_factory=list)  # per video: id, clips, probe facts, timings
    quarantined: list[dict] = field(default_factory=list)  # per video: id, path, reason, error
    bytes: int = 0
    sha256: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the whole unit in its process; its videos' stages are videos[i]["cpu_seconds"]
    skipped: bool = False  # already complete from an earlier run


def fingerprint(path: str, block: int = 1 << 16) -> str:
    """Cheap content fingerprint: size + sha256 of the first and last 64 KiB."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(block))
        if size > block:
            f.seek(max(size - block, block))
            h.update(f.read(block))
    return h.hexdigest()[:20]


def plan_units(videos: list[UnitVideo], shard_for, videos_per_shard: int) -> list[WorkUnit]:
    """Group videos by (split, part), sort by id, chunk; shard_for(split, part, chunk) -> URI."""
    by_key: dict[tuple[str, str], list[UnitVideo]] = {}
    for v in videos:
        by_key.setdefault((v.split, v.part), []).append(v)
    units = []
    for (split, part), vs in sorted(by_key.items()):
        vs.sort(key=lambda v: v.video_id)
        for chunk, i in enumerate(range(0, len(vs), videos_per_shard)):
            units.append(
                WorkUnit(split, part, chunk, shard_for(split, part, chunk), tuple(vs[i : i + videos_per_shard]))
            )
    return units


def largest_first(units: list[WorkUnit]) -> list[WorkUnit]:
    """The units in the order a pool of workers should take them: the most bytes of video first (ties keep the
    plan's order). A pool hands units out first come, first served, so a large unit taken last runs alone while
    the other workers idle: 5 units of 12, 4, 12, 8 and 12 videos on 2 workers kept them 0.82 busy in plan
    order (docs/performance.md "Ray fan-out"); largest first is the classic longest-processing-time rule."""
    return sorted(units, key=lambda u: (-sum(v.bytes for v in u.videos), -len(u.videos)))


def read_record(shard: str) -> dict | None:
    uri = fs.IngestLayout.record_of(shard)
    try:
        if not fs.exists(uri) or not fs.exists(shard):
            return None
        return json.loads(fs.read_bytes(uri))
    except (OSError, ValueError):
        return None  # unreadable record: the unit is simply redone


def shard_intact(shard: str, record: dict) -> bool:
    """The shard's bytes are the ones its record (and shards.parquet) names: size, then sha256.

    A record proves a write finished, not that the bytes survived: a shard damaged since
    (bit rot, a partial overwrite) must be rewritten, not indexed.
    """
    try:
        fsys, path = fs.split_uri(shard)
        if fsys.size(path) != record.get("bytes"):
            return False
        return fs.sha256_of(shard) == record.get("sha256")
    except OSError:
        return False


def is_complete(unit: WorkUnit, config_hash: str) -> dict | None:
    """The unit's record when its shard is complete, matches the unit and verifies; else None."""
    record = read_record(unit.shard)
    if record and record.get("signature") == unit.signature(config_hash) and shard_intact(unit.shard, record):
        # the record lies beside the planned shard: index that path, not the one it names
        # (after the output root was moved, or the record edited, that one is elsewhere)
        return {**record, "shard": unit.shard}
    return None


def process_unit(
    unit: WorkUnit, cfg: PreprocessConfig, *, detector: FaceDetector, jpeg_quality: int = 90
) -> UnitRecord:
    """Preprocess every video of the unit into one shard; bad videos go to the record's quarantine.

    ``detector``: :func:`tasks.ingest.preprocess.face_detector` of ``cfg``, built once per worker
    and passed to every unit it runs. The shard is published (:class:`storage.shard_io.ShardWriter`)
    only when complete; the record (which marks completion) is written after it. Safe to kill at
    any point.
    """
    config_hash = cfg.hash()
    done = is_complete(unit, config_hash)
    if done:
        return UnitRecord(**{**done, "skipped": True})
    t0, cpu0 = time.perf_counter(), time.process_time()
    record = UnitRecord(shard=unit.shard, split=unit.split, part=unit.part, signature=unit.signature(config_hash))
    with ShardWriter(unit.shard) as sink:
        for v in unit.videos:
            _add_video(sink, v, cfg, detector, record, jpeg_quality)
    record.bytes, record.sha256 = sink.bytes, sink.sha256
    record.seconds = time.perf_counter() - t0
    record.cpu_seconds = time.process_time() - cpu0  # the record's own write below is the unit's small remainder
    fs.atomic_write_bytes(fs.IngestLayout.record_of(unit.shard), json.dumps(asdict(record), sort_keys=True).encode())
    return record


def _add_video(
    sink: ShardWriter, v: UnitVideo, cfg: PreprocessConfig, detector, record: UnitRecord, jpeg_quality: int
) -> None:
    t0 = time.perf_counter()
    with measuring() as clock:
        written = _write_video(sink, v, cfg, detector, record, jpeg_quality)
    if written is not None:
        result, fake_faces = written
        record.videos.append(
            {
                "video_id": v.video_id,
                "clips": len(result.clips),
                "faces": result.faces,
                "fake_faces": fake_faces,
                "face_frac": result.face_frac,
                **{
                    k: getattr(result.info, k)
                    for k in ("duration", "fps", "width", "height", "rotation", "codec", "has_audio", "audio_rate")
                },
                "seconds": time.perf_counter() - t0,
                "cpu_seconds": clock.cpu,  # per stage of tasks/ingest/stages.py, + "other"
                **({"crop": result.crop, "landmark_frac": result.landmark_frac} if result.crop is not None else {}),
            }
        )


def _write_video(
    sink: ShardWriter, v: UnitVideo, cfg: PreprocessConfig, detector, record: UnitRecord, jpeg_quality: int
) -> tuple[Preprocessed, int] | None:
    """Preprocess one video into the shard -> (its Preprocessed, its fake faces), or None when it was quarantined."""
    try:
        result = preprocess_video(v.path, cfg, detector)
    except VideoError as e:
        record.quarantined.append(_quarantine(v, e.reason, str(e)))
        return None
    except HWAccelUnavailable:
        raise  # the machine, not the video: the unit fails rather than quarantine every video
    except Exception as e:  # a bug or an unexpected library error: quarantine this video, keep going
        record.quarantined.append(
            _quarantine(v, "error", f"{v.rel_path}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
        )
        return None
    with stage("labels"):
        labels = _labels(v, result, cfg)
    for clip in result.clips:
        meta = ClipMeta(
            video_id=v.video_id,
            clip=clip.index,
            label=labels[clip.face],
            split=v.split,
            group=v.group,
            original=v.original,
            start_s=clip.start_s,
            fps=clip.fps,
            num_frames=cfg.frames_per_clip,
            face_box=clip.face_box,
            det_score=clip.det_score,
            detected_frac=clip.detected_frac,
            mel_hop_s=cfg.mel.hop_s,
            part=v.part,
            manipulation=v.manipulation,
            frame_times=clip.frame_times,
            mel_start_s=clip.mel_start_s,
            face=clip.face,
            crop=clip.crop,
            mouth_box=clip.mouth_box,
            landmark_frac=clip.landmark_frac,
            lip_shape=clip.lip_shape,
            lip_track=clip.lip_track,
        )
        with stage("jpeg"):
            sample = encode_sample(clip.frames, clip.mel, meta, jpeg_quality)
        with stage("write"):
            sink.write(sample)
        record.samples += 1
    return result, sum(label == FAKE for label in labels.values())


def _labels(v: UnitVideo, result: Preprocessed, cfg: PreprocessConfig) -> dict[int, str]:
    """face -> label: the video's, or, for a FAKE with several faces and its original present, by
    each face's pixel difference from the original (:mod:`tasks.ingest.face_labels`)."""
    diffs = None
    if v.label == FAKE and result.faces > 1 and v.original_path:
        diffs = face_differences(result.clips, v.original_path, cfg, (result.info.width, result.info.height))
    return face_labels(v.label, diffs if diffs is not None else dict.fromkeys(result.by_face(), 0.0))


def _quarantine(v: UnitVideo, reason: str, error: str) -> dict:
    return {
        "video_id": v.video_id,
        "part": v.part,
        "rel_path": v.rel_path,
        "label": v.label,
        "reason": reason,
        "error": error,
    }
