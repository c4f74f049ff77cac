"""The stages of ingesting one video, declared once: the pipeline charges its CPU time to them and
``bench/ingest.py`` prints them, so the breakdown the benchmark shows is the code that runs.

Every ``with stage("name"):`` in ``tasks/ingest`` must name a row of :data:`STAGES` (an unknown
name raises, and tests/bench/test_ingest_stages.py checks the table against the calls in the
source). Time is exclusive: inside a nested stage the outer one's clock stops, so the stages of a
video add up to the CPU time of its :class:`StageClock`, and whatever no stage claims is ``other``.
A stage declared ``whole`` keeps the stages nested in it (every face beyond the main one is
detection too, but its own row says what every-face tracking costs).

CPU seconds are ``time.process_time`` (every thread of the process: mediapipe's graph threads run
the detector), so a clock measures one video at a time per process, which is how ingest runs.

Adding a stage: one row here, in pipeline order, and ``with stage("name"):`` around the call
that does the work. Nothing else: the unit record, the benchmark and its docs
table read this tuple.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    name: str
    what: str  # one line for the benchmark's table: the work, and the function doing it
    whole: bool = False  # stages nested in this one are charged to it
    only: str = ""  # when the stage runs, if not for every video (the real-clip test expects the others)


STAGES: tuple[Stage, ...] = (
    Stage("probe", "open the container, read stream facts (tasks.ingest.video.probe)"),
    Stage("demux", "read the video packets and their timestamps (tasks.ingest.video._timeline)"),
    Stage("decode", "H.264 decode of reference frames + targets (codec_context.decode)"),
    Stage("convert", "YUV -> RGB of the picked frames, rotation (tasks.ingest.video.RGBConverter)"),
    Stage("audio", "demux + decode + resample the audio (tasks.ingest.audio.decode_audio)"),
    Stage("mel", "log-mel spectrogram (tasks.ingest.audio.log_mel)"),
    Stage("detect", "first look: full-range BlazeFace on the downscaled frame, tiles, brightened retry"),
    Stage("refine", "second look: short-range BlazeFace around the last box (FaceDetector.refine)"),
    Stage(
        "faces",
        "every face beyond the main one: probe detections, others followed (tasks.ingest.faces.track_faces)",
        whole=True,
        only="max_faces > 1",
    ),  # fmt: skip
    Stage(
        "landmarks",
        "face mesh per frame + alignment (tasks.ingest.landmarks.find_landmarks, align)",
        only="crop=landmarks",
    ),  # fmt: skip
    Stage(
        "lip_track",
        "every frame of each clip's span decoded and meshed, lips at 25 fps (preprocess._add_lip_tracks)",
        whole=True,
        only="lip_track",
    ),  # fmt: skip
    Stage("crop", "face crops resized to face_size (faces.crop_track; landmarks.crop_landmarks)"),
    Stage(
        "labels",
        "a fake's faces told apart: the original decoded and compared (tasks.ingest.face_labels)",
        whole=True,
        only="a fake with several faces and its original",
    ),  # fmt: skip
    Stage("jpeg", "JPEG encoding of every stored frame (storage.shard_schema.encode_jpeg)"),
    Stage("write", "mel .npy, meta .json, tar members to the shard (ShardWriter.write)"),
)
NAMES = tuple(s.name for s in STAGES)
_WHOLE = frozenset(s.name for s in STAGES if s.whole)
OTHER = "other"  # CPU inside a clock that no stage claimed


@dataclass
class StageClock:
    """Exclusive CPU seconds per stage while it is the active clock (:func:`measuring`)."""

    cpu: dict[str, float] = field(default_factory=dict)
    _open: list[str] = field(default_factory=list)
    _mark: float = 0.0

    def _charge(self, now: float) -> None:
        name = self._open[-1] if self._open else OTHER
        self.cpu[name] = self.cpu.get(name, 0.0) + now - self._mark
        self._mark = now

    def enter(self, name: str) -> None:
        self._charge(time.process_time())
        self._open.append(self._open[-1] if self._open and self._open[-1] in _WHOLE else name)

    def leave(self) -> None:
        self._charge(time.process_time())
        self._open.pop()

    def total(self) -> float:
        return sum(self.cpu.values())


_ACTIVE: ContextVar[StageClock | None] = ContextVar("avff_ingest_stage_clock", default=None)


@contextmanager
def measuring() -> Iterator[StageClock]:
    """Make a fresh clock the active one for the block; time outside any stage goes to ``other``."""
    clock = StageClock(_mark=time.process_time())
    token = _ACTIVE.set(clock)
    try:
        yield clock
    finally:
        clock._charge(time.process_time())
        _ACTIVE.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge the block's CPU time to ``name`` on the active clock (free when none is active)."""
    if name not in NAMES:
        raise KeyError(f"ingest stage {name!r} is not declared in tasks/ingest/stages.py STAGES ({', '.join(NAMES)})")
    clock = _ACTIVE.get()
    if clock is None:
        yield
        return
    clock.enter(name)
    try:
        yield
    finally:
        clock.leave()
