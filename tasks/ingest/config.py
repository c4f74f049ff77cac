"""THE preprocessing config: how one video becomes clips, each field declared once (default, help, bounds).

:class:`PreprocessConfig` (with its resource bounds, :class:`Limits`) is what
:func:`tasks.ingest.preprocess.preprocess_video` reads, the ``preprocess`` group of the ingest
config (:class:`tasks.ingest.settings.IngestSettings`: the Prefect form's nested group, the YAML's
``preprocess:`` mapping, ``avff ingest``'s flat flags such as ``--face-size``), what ingest records
in ``ingest_config.json`` and what ``avff predict`` repeats. Both are frozen pydantic dataclasses:
plain dataclasses to the code that takes them (``asdict``, ``replace``, pickling to Ray workers),
validated at construction wherever they are built.

This module imports no decoder, detector or torch: the CLI builds its flags from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Literal, get_args

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

Hwaccel = Literal["cuda"]
HWACCELS: tuple[str, ...] = get_args(Hwaccel)  # hardware decoders read_frames may use: cuda = NVIDIA NVDEC
ClipMode = Literal["spread", "native"]
CLIP_MODES: tuple[str, ...] = get_args(ClipMode)
Crop = Literal["box", "landmarks"]
CROPS: tuple[str, ...] = get_args(Crop)
MeshRoi = Literal["box", "detect"]
MESH_ROIS: tuple[str, ...] = get_args(MeshRoi)  # the face mesh's region: landmarks.LandmarkFaceDetector
NATIVE_REF_FPS = 25.0  # a native clip's mel has this rate's column count (:attr:`PreprocessConfig.native_mel_frames`)
MAX_FACES = 10  # a sample key names its face with one digit (storage.shard_schema.sample_key)
# field -> the value that writes what configs without the field wrote (byte-identical output); all are
# the field's default except max_faces, whose default (every face) writes more samples for videos of several people,
# and mesh_roi, whose default (the box's region) writes other landmark points, so other aligned crops
_HASHED_WHEN_SET = {"clip_offset_s": 0.0, "clip_stride_s": None, "clip_mode": "spread",
                    "max_faces": 1, "min_track_frac": 0.5, "crop": "box", "min_landmark_frac": 0.5,
                    "hwaccel": None, "lip_track": False, "mesh_roi": "detect"}  # fmt: skip

_CONFIG = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_CONFIG)
class Limits:
    """Resource bounds: a video beyond them is refused, never read whole."""

    max_bytes: int = Field(2_000_000_000, gt=0, description="largest file accepted, bytes")
    max_duration_s: float = Field(600.0, gt=0, description="longest video accepted, seconds")
    max_pixels: int = Field(3840 * 2160, gt=0, description="largest frame accepted, pixels")
    # only the first read_seconds are decoded (bounds long videos)
    read_seconds: float = Field(60.0, gt=0, description="seconds of each video decoded at most")


@dataclass(frozen=True, config=_CONFIG)
class PreprocessConfig:
    """One video -> clips of T face crops and their log-mel: sampling, face crop, audio, resource bounds."""

    # -- sampling: which frames make a clip
    frames_per_clip: int = Field(16, ge=2, le=64, description="frames per clip")  # T
    # 16 frames at 5 fps = 3.2 s, the AVFF setting
    clip_fps: float = Field(5.0, gt=0, le=30, description="frames per second sampled within a clip")
    # native: fast enough for lip motion (syllables come 4-7 per second)
    clip_mode: ClipMode = Field("spread", description="spread: frames clip_fps apart; native: consecutive frames "
                                "at the video's own rate (16 at 25 fps = 0.64 s), the mel spanning them")  # fmt: skip
    max_clips: int = Field(3, ge=1, description="clips per video at most")
    clip_offset_s: float = Field(0.0, ge=0, description="seconds into the video where the first clip starts "
                                 "(0.5 skips an unsettled opening)")  # fmt: skip
    clip_stride_s: float | None = Field(None, gt=0, description="seconds between clip starts; None: a clip's "
                                        "length (back to back), less: overlapping clips")  # fmt: skip
    # -- the face crop
    face_size: int = Field(224, ge=32, le=512, description="face crop side in pixels")
    face_margin: float = Field(1.3, ge=1.0, le=3.0, description="face box scale before cropping")
    # landmarks: eyes level, fixed scale (avff_model/crop_geometry.py)
    crop: Crop = Field("box", description="box: the detector box; landmarks: aligned by face landmarks (eyes "
                       "level, fixed scale) with a stored mouth box, the box where landmarks fail")  # fmt: skip
    min_landmark_frac: float = Field(0.5, ge=0.0, le=1.0, description="with crop=landmarks: least fraction of a "
                                     "video's frames with landmarks, else the detector box")  # fmt: skip
    # "detect" was the only path before issue 26: 1.5x the CPU, points 1.2 px apart at the median (docs/performance.md)
    mesh_roi: MeshRoi = Field("box", description="with crop=landmarks, where the face mesh looks: box: its landmark "
                              "model on the tracked box's region (the whole mesh only where that finds no face); "
                              "detect: the whole mesh on every frame")  # fmt: skip
    # the lip-sync signal of a real face is faster than 5 fps: landmarks.lip_track
    lip_track: bool = Field(False, description="with crop=landmarks: each clip's lips at 25 fps over its whole span, "
                            "from every frame there (the lip-sync signal of a real face; decodes every frame of the "
                            "clips)")  # fmt: skip
    min_face_frac: float = Field(0.5, ge=0.0, le=1.0, description="least fraction of a clip's frames with a face")
    max_faces: int = Field(4, ge=1, le=MAX_FACES, description="faces tracked per video (the main one and others "
                           "present in most frames), each its own samples; 1: the main face only")  # fmt: skip
    min_track_frac: float = Field(0.5, ge=0.0, le=1.0, description="least fraction of the sampled frames in which "
                                  "a face other than the main one is detected, to be tracked")  # fmt: skip
    smooth_window: int = Field(5, ge=1, description="frames over which a track's boxes are smoothed")
    detect_side: int = Field(640, ge=32, description="longest frame side the face detector sees, pixels")
    min_det_score: float = Field(0.5, ge=0.0, le=1.0, description="least face detector score")
    # -- the audio (the model's audio normalisation holds for these defaults only: training refuses shards made
    #    with others, avff_model.inputs.mel_stats_for)
    sample_rate: int = Field(16000, gt=0, description="audio resampled to this rate, Hz")
    n_mels: int = Field(128, ge=1, description="log-mel bins (training refuses shards with another value: the model's audio "
                        "normalisation holds for 128)")  # fmt: skip
    win_ms: float = Field(25.0, gt=0, description="mel window, milliseconds")
    hop_ms: float = Field(10.0, gt=0, description="mel hop, milliseconds")
    require_audio: bool = Field(True, description="refuse videos without audio (off: keep them with a silent log-mel)")
    min_audio_rms: float = Field(1e-4, ge=0, description="audio quieter than this RMS is a silent track, refused")
    # -- the decoder
    skip_nonref: bool = Field(True, description="decode non-reference frames only where they are targets "
                              "(bit-exact, faster)")  # fmt: skip
    hwaccel: Hwaccel | None = Field(None, description="cuda: decode the video on an NVIDIA GPU (NVDEC, no fallback "
                                    "to the CPU); None: the CPU")  # fmt: skip
    max_frame_error_s: float = Field(0.25, gt=0, description="a requested time with no frame this close: the clip "
                                     "is off the stream, refused")  # fmt: skip
    limits: Limits = Field(default_factory=Limits, description="resource bounds per video")

    def __post_init__(self) -> None:
        if self.lip_track and self.crop != "landmarks":
            raise ValueError("lip_track needs crop=landmarks (the lips are found by the face mesh)")

    @property
    def clip_seconds(self) -> float:
        """A spread clip's length; a native clip's is ``frames_per_clip`` frames of its video."""
        return self.frames_per_clip / self.clip_fps

    @property
    def spread_fit_seconds(self) -> float:
        """The shortest span a spread clip fits in: its last frame, at (T - 1) / clip_fps, stands for the
        half frame interval either side, so a video lasting past (T - 1.5) / clip_fps has it (2.9 s for
        16 frames at 5 fps: a 3 s talking-head clip fits). The sound past the video's end is silence."""
        return (self.frames_per_clip - 1.5) / self.clip_fps

    @property
    def mel(self):
        """The log-mel settings, a :class:`tasks.ingest.audio.MelSpec`."""
        from tasks.ingest.audio import MelSpec  # the audio decoder: imported by a run, not by the CLI

        return MelSpec(self.sample_rate, self.n_mels, self.win_ms, self.hop_ms)

    @property
    def mel_frames(self) -> int:
        return int(round(self.clip_seconds / self.mel.hop_s))

    @property
    def native_mel_frames(self) -> int:
        """A native clip's mel columns whatever its frame rate: the hop's count at :data:`NATIVE_REF_FPS`
        (4 per frame, 64 for 16 frames), so clips of 25 and 30 fps videos share one shape and one
        column-per-frame ratio (the model pairs frame k with columns k·Tm/T onwards)."""
        return self.frames_per_clip * max(1, int(round(1.0 / (NATIVE_REF_FPS * self.mel.hop_s))))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        """The config a stored dict describes; keys of fields it no longer has are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("crop") == "landmarks":  # written before mesh_roi existed: the whole mesh made its points
            d.setdefault("mesh_roi", "detect")
        return cls(**d)

    def hash(self) -> str:
        """Identifies the output: a change here invalidates previously written shards.

        The fields of :data:`_HASHED_WHEN_SET` count only away from the values there, which write
        what configs without them wrote: shards ingested before those fields existed stay valid.
        """
        d = {k: v for k, v in asdict(self).items() if not (k in _HASHED_WHEN_SET and v == _HASHED_WHEN_SET[k])}
        if self.crop != "landmarks":  # no face mesh runs: box crops are the same whatever its region
            d.pop("mesh_roi", None)
        if self.clip_mode == "native":  # native mels are resampled to a fixed length since: older ones varied
            d["native_mel_frames"] = self.native_mel_frames
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
