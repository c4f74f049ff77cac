"""The parameters of the experiment flows: ``cv-avff`` (:class:`CVConfig`) and ``ablate-avff`` (:class:`AblationConfig`).

Like :class:`~tasks.train.settings.TrainSettings`, each is one config with many faces: the flow's
parameter (the Prefect form), and the flags of ``avff cv`` / ``avff ablate``, which
flows/cli/experiments.py generates from these fields. The training run they repeat is a
``TrainSettings`` (the ``avff train`` flags). This module imports no flow, torch or Prefect,
so the CLI builds its flags from it in well under a second.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storage import fs
from tasks.train.settings import TrainSettings

# a variant may not move these: they are the experiment's, not the variant's
RESERVED = {"output_dir", "seed", "experiment", "tracking_uri", "registered_model", "resume_from", "data", "fold",
            "log_checkpoints"}  # fmt: skip


class CVConfig(BaseModel):
    """Parameters of cv-avff."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: TrainSettings = Field(description="the training run each fold repeats (output_dir: root of fold-k/)")
    folds: list[int] | None = Field(None, description="folds to run; None: every fold of train+val")
    max_parallel: int = Field(1, ge=1, description="1: folds in sequence; n: n folds at once (thread pool)")
    log_checkpoints: bool = Field(False, description="log each fold's best/last checkpoints to MLflow")


class AblationConfig(BaseModel):
    """Parameters of ablate-avff."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: TrainSettings = Field(description="what every variant starts from (output_dir: root of variant/seed-s/)")
    variants: dict[str, dict[str, Any]] = Field(
        min_length=1,
        description='name -> TrainSettings overrides, e.g. focal={"loss": "focal"}; base={} is the base itself',
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="each variant runs once per seed")
    split: Literal["val", "test"] = Field("val", description="where the table compares (val: no test peeking)")
    level: Literal["video", "clip"] = Field("video", description="the table's metrics per video or per clip")
    max_parallel: int = Field(1, ge=1, description="1: runs in sequence; n: n runs at once (thread pool)")
    log_checkpoints: bool = Field(False, description="log each run's best/last checkpoints to MLflow")

    @field_validator("variants")
    @classmethod
    def _valid_variants(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from tasks.evaluate.experiments import check_name  # matplotlib: not for the CLI's flags

        for name, overrides in v.items():
            check_name(name)
            reserved = RESERVED & set(overrides)
            if reserved:
                raise ValueError(f"variant {name!r} may not override {sorted(reserved)}")
        return v

    def variant_config(self, name: str, seed: int) -> TrainSettings:
        """The base config with variant ``name``'s overrides (nested dicts merge), for ``seed``."""
        from tasks.evaluate.experiments import deep_merge

        overrides = dict(self.variants[name])
        if "model_config" in overrides:  # the alias: the dump below uses the field's Python name
            overrides["model_preset"] = overrides.pop("model_config")
        merged = deep_merge(self.base.model_dump(), overrides)
        merged.update(seed=seed, output_dir=fs.join(self.base.output_dir, name, f"seed-{seed}"),
                      log_checkpoints=self.log_checkpoints)  # fmt: skip
        return TrainSettings.model_validate(merged)
