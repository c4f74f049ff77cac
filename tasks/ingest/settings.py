"""THE ingest config: one frozen pydantic model, the ``ingest-dfdc`` flow's parameter and ``avff ingest``'s flags.

Like :mod:`tasks.train.settings`: the Prefect form, the CLI flags (generated from the fields by
flows/cli/ingest.py) and ``avff ingest --config ingest.yaml`` all come from :class:`IngestSettings`.
It imports no decoder, detector or torch (the CLI builds its flags from it); the preprocessing
config it describes is built on demand by :meth:`IngestSettings.preprocess`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage import fs

# the values of ``identities`` that are not a file: a file literally named "auto" needs a path ("./auto")
IDENTITY_MODES = ("original", "auto")


class IngestSettings(BaseModel):
    """Everything one ingest run needs: where from and to, splits, preprocessing, resource bounds, execution."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- where from, where to
    data: str = Field(description="DFDC root: dfdc_train_part_*/ folders or one folder with metadata.json")
    out: str = Field(description="output root (local path or s3://...) for shards and parquet files")
    identities: str | None = Field(None, description="who is who, so that one person's videos share a split: "
                                   "original (default, None): the metadata's original links only; auto: also cluster "
                                   "face embeddings of the REAL videos (docs/ingest.md); or a csv/parquet with columns "
                                   "video, identity")  # fmt: skip
    # -- splits
    ratios: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="train, val and test shares")
    folds: int = Field(5, ge=1, le=20, description="k of the manifest's grouped k-fold column, for avff cv")
    seed: int = Field(0, description="seed of the split assignment")
    # -- shards and preprocessing
    videos_per_shard: int = Field(128, ge=1, description="videos per shard")
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality of the stored frames")
    face_size: int = Field(224, ge=32, le=512, description="face crop side in pixels")
    frames_per_clip: int = Field(16, ge=2, le=64, description="frames per clip")
    clip_fps: float = Field(5.0, gt=0, le=30, description="frames per second sampled within a clip")
    clip_mode: Literal["spread", "native"] = Field("spread", description="spread: frames clip_fps apart; native: "
                                                   "consecutive frames at the video's own rate (16 at 25 fps = 0.64 s), "
                                                   "the mel spanning them")  # fmt: skip
    max_clips: int = Field(3, ge=1, description="clips per video at most")
    clip_offset_s: float = Field(0.0, ge=0, description="seconds into the video where the first clip starts "
                                 "(0.5 skips an unsettled opening)")  # fmt: skip
    clip_stride_s: float | None = Field(None, gt=0, description="seconds between clip starts; None: a clip's "
                                        "length (back to back), less: overlapping clips")  # fmt: skip
    face_margin: float = Field(1.3, ge=1.0, le=3.0, description="face box scale before cropping")
    crop: Literal["box", "landmarks"] = Field("box", description="box: the detector box; landmarks: aligned by "
                                              "face landmarks (eyes level, fixed scale) with a stored mouth box, "
                                              "the box where landmarks fail")  # fmt: skip
    lip_track: bool = Field(False, description="with crop=landmarks: each clip's lips at 25 fps over its whole span, "
                            "from every frame there (the lip-sync signal of a real face; decodes every frame of the "
                            "clips)")  # fmt: skip
    min_face_frac: float = Field(0.5, ge=0.0, le=1.0, description="least fraction of a clip's frames with a face")
    max_faces: int = Field(4, ge=1, le=10, description="faces tracked per video (the main one and others present "
                           "in most frames), each its own samples; 1: the main face only")  # fmt: skip
    require_audio: bool = Field(True, description="refuse videos without audio (off: keep them with a silent log-mel)")
    # -- resource bounds per video
    max_duration_s: float = Field(600.0, gt=0, description="longest video accepted, seconds")
    max_bytes: int = Field(2_000_000_000, gt=0, description="largest file accepted, bytes")
    max_pixels: int = Field(3840 * 2160, gt=0, description="largest frame accepted, pixels")
    read_seconds: float = Field(60.0, gt=0, description="seconds of each video decoded at most")
    hwaccel: Literal["cuda"] | None = Field(None, description="cuda: decode the video on an NVIDIA GPU (NVDEC, "
                                            "no fallback to the CPU); None: the CPU")  # fmt: skip
    # -- execution
    executor: Literal["ray", "local"] = Field("ray", description="ray: shards on Ray actors ($RAY_ADDRESS or a "
                                              "local Ray); local: in this process")  # fmt: skip
    ray_address: str | None = Field(None, description="Ray cluster address; None: $RAY_ADDRESS, else a local Ray")
    num_workers: int | None = Field(None, ge=1, description="CPUs of a local Ray; None: all")
    retries: int = Field(2, ge=0, le=10, description="Ray: retries of a shard whose worker raised or died")
    progress: bool = Field(True, description="a progress bar on the terminal while shards finish")

    @field_validator("data", "out", "identities")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        """Local paths become absolute here, in the flow's working directory: Ray workers run elsewhere."""
        if v in IDENTITY_MODES:
            return v
        return os.path.abspath(v) if v and fs.is_local(v) and not v.startswith("file://") else v

    @property
    def identity_map(self) -> str | None:
        """The identity map file, when ``identities`` names one (not ``original`` or ``auto``)."""
        return None if self.identities in (None, *IDENTITY_MODES) else self.identities

    @property
    def face_identities(self) -> bool:
        """``identities=auto``: cluster face embeddings into identities before the split."""
        return self.identities == "auto"

    @field_validator("out")
    @classmethod
    def _out_can_be_a_folder(cls, v: str) -> str:
        problem = fs.not_a_folder(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _out_not_in_data(self) -> IngestSettings:
        """Shards written into the data root would be scanned as input by the next run."""
        if fs.is_local(self.data) and fs.is_local(self.out):
            data, out = (os.path.realpath(p.removeprefix("file://")) for p in (self.data, self.out))
            if os.path.commonpath([data, out]) == data:
                raise ValueError(
                    f"output folder {self.out} is inside the input folder {self.data}: choose an output outside it"
                )
        return self

    @model_validator(mode="after")
    def _lip_track_needs_landmarks(self) -> IngestSettings:
        if self.lip_track and self.crop != "landmarks":
            raise ValueError("lip_track needs crop=landmarks (the lips are found by the face mesh)")
        return self

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or sum(v) <= 0:
            raise ValueError("ratios must be non-negative and not all zero")
        return v

    def preprocess(self):
        """The :class:`tasks.ingest.preprocess.PreprocessConfig` these settings describe: every field of it (and
        of its :class:`tasks.ingest.video.Limits`) that is a field here, passed on by name, never mapped by hand;
        the others keep PreprocessConfig's defaults (tests/tasks/ingest/test_settings.py checks the defaults agree)."""
        # the decoders and the detector: imported by a run, not by the CLI building its flags
        from tasks.ingest.preprocess import PreprocessConfig
        from tasks.ingest.video import Limits

        limits = Limits(**self._fields_of(Limits))
        return PreprocessConfig(**self._fields_of(PreprocessConfig), limits=limits)

    def _fields_of(self, config_class) -> dict:
        """This config's values of the fields ``config_class`` (a dataclass) shares with it by name."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(config_class) if f.name in type(self).model_fields
        }
