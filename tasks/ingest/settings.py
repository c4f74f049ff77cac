"""THE ingest config: one frozen pydantic model, the ``ingest-dfdc`` flow's parameter and ``avff ingest``'s flags.

Like :mod:`tasks.train.settings`: the Prefect form, the CLI flags (generated from the fields by
flows/cli/ingest.py) and ``avff ingest --config ingest.yaml`` all come from :class:`IngestSettings`.
It imports no decoder, detector or torch (the CLI builds its flags from it).

The preprocessing is one nested field, ``preprocess``: the :class:`tasks.ingest.config.PreprocessConfig`
the workers run, declared once there (defaults, help, bounds); the form shows it as a group, the YAML
as a ``preprocess:`` mapping, the CLI as flat flags (``--face-size``). A preprocessing key at the top
(the flat form of before) is refused with its new place, never mapped.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage import fs
from tasks.config_fields import leaf_fields
from tasks.ingest.config import PreprocessConfig

# the values of ``identities`` that are not a file: a file literally named "auto" needs a path ("./auto")
IDENTITY_MODES = ("original", "auto")


def preprocessing_places() -> dict[str, str]:
    """Every field of the preprocessing config, nested ones included -> its dotted place in :class:`IngestSettings`
    (``max_bytes`` -> ``preprocess.limits.max_bytes``)."""
    return {place.rsplit(".", 1)[1]: place for place in leaf_fields(PreprocessConfig, "preprocess")}


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
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="how each video becomes "
                                         "clips: sampling, face crop, audio, decoder, resource bounds "
                                         "(tasks/ingest/config.py)")  # fmt: skip
    # -- execution
    executor: Literal["ray", "local"] = Field("ray", description="ray: shards on Ray actors ($RAY_ADDRESS or a "
                                              "local Ray); local: in this process")  # fmt: skip
    ray_address: str | None = Field(None, description="Ray cluster address; None: $RAY_ADDRESS, else a local Ray")
    num_workers: int | None = Field(None, ge=1, description="CPUs of a local Ray; None: all")
    retries: int = Field(2, ge=0, le=10, description="Ray: retries of a shard whose worker raised or died")
    progress: bool = Field(True, description="a progress bar on the terminal while shards finish")

    @model_validator(mode="before")
    @classmethod
    def _no_flat_preprocessing(cls, data: object) -> object:
        """A preprocessing field at the top (``face_size``, the flat form before it was nested) names its place."""
        if isinstance(data, dict):
            places = preprocessing_places()
            for key in data:
                if key in places:
                    raise ValueError(f"{key} is a preprocessing setting: give it as {places[key]} "
                                     f"(YAML: under preprocess:)")  # fmt: skip
        return data

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

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or sum(v) <= 0:
            raise ValueError("ratios must be non-negative and not all zero")
        return v
