"""Prefect flow ``train-avff``: one MLflow run around :func:`tasks.training.run_training`.

The flow resolves the tracking URI, opens a run, tags it (git commit, manifest sha256,
config hash), hands training an :class:`~tasks.mlflow_logger.MLflowLogger`, then logs the
best weights as a pyfunc model (models from code: weights + config JSON, no pickle) and
registers it. Training itself knows nothing of Prefect or MLflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from avff_model import list_heads
from storage import fs
from tasks.augment import AudioAugment, VideoAugment, audio_augment_preset, video_augment_preset
from tasks.batch_augment import MixAugment
from tasks.checkpoint import WEIGHTS, resolve_checkpoint
from tasks.mlflow_logger import MLflowLogger
from tasks.serving import log_pyfunc_model
from tasks.tracking import flatten_params
from tasks.training import TrainResult, TrainSettings, run_training

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"


class TrainConfig(BaseModel):
    """Parameters of train-avff (validated by Prefect, shown as a form in the UI)."""

    # `model_config` is pydantic's own attribute: the field is `model_preset`, spelled
    # "model_config" in parameters, JSON and the UI.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    data: str = Field(description="ingest output root: shards.parquet, manifest.parquet, shards/ (local or s3://)")
    model_preset: str = Field("tiny", alias="model_config", description="AVFF preset: tiny | laptop | paper")
    overrides: dict[str, Any] = Field(default_factory=dict, description="AVFFConfig fields to override")
    stages: Literal["both", "pretrain", "classify"] = "both"
    pretrain_epochs: int = Field(1, ge=0)
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-4, gt=0)
    optimizer: Literal["adamw", "adam", "lion"] = "adamw"
    scheduler: Literal["warmup_cosine", "cosine_warm_restarts", "constant"] = "warmup_cosine"
    warmup: int = Field(0, ge=0, description="optimizer steps of linear warmup, per stage")
    weight_decay: float = Field(0.05, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 disables")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    monitor: str = "val_video_log_loss"
    seed: int = 0
    num_workers: int = Field(2, ge=0)
    samples_per_epoch: int | None = Field(None, ge=1, description="None: one pass over train per epoch")
    shuffle_buffer: int = Field(256, ge=0)
    device: str = "auto"
    checkpoint_dir: str = Field(description="output root: checkpoints, plots, predictions, report.md")
    resume_from: str | None = Field(None, description="checkpoint dir, pointer .json or earlier checkpoint_dir")
    experiment: str = "avff"
    registered_model: str = "avff-dfdc"
    tracking_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else " + DEFAULT_TRACKING_URI)
    pretrained_encoders: str | None = Field(None, description="safetensors of encoder weights for stage 2")
    cycle_epochs: int = Field(1, ge=1, description="cosine_warm_restarts: epochs of the first cycle (T_0)")
    cycle_mult: float = Field(1.0, ge=1, description="cosine_warm_restarts: growth of each next cycle (T_mult)")
    # experiment switches (docs/experiments.md); every default is "off" / the preset's value
    fusion: str | None = Field(None, description="stage-2 head: avff_concat, avff_sync, attention, late, video_only, audio_only")
    dropout: float | None = Field(None, ge=0, lt=1, description="model dropout; None: the preset's")
    video_augment: VideoAugment = Field(default_factory=VideoAugment,
                                        description="per-clip video augmentation, or a preset: none | light | strong")
    audio_augment: AudioAugment = Field(default_factory=AudioAugment,
                                        description="per-clip log-mel augmentation, or a preset: none | sync_safe")
    mix: MixAugment = Field(default_factory=MixAugment, description="Mixup / CutMix of training batches")
    loss: Literal["bce", "focal"] = "bce"
    focal_gamma: float = Field(2.0, ge=0)
    class_weight: Literal["none", "prior"] = Field("none", description="prior: FAKE weight n_real / n_fake of train")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    aux_weight: float = Field(0.0, ge=0, description="weight of the video-only + audio-only auxiliary BCE terms")
    contrastive_weight: float = Field(0.0, ge=0, description="weight of the stage-2 InfoNCE on REAL clips")
    curriculum_epochs: int = Field(0, ge=0, description="self-paced curriculum ramp length; 0 disables")
    curriculum_start: float = Field(0.5, gt=0, le=1, description="easiest fraction of clips at the first epoch")
    progressive_epochs: int = Field(0, ge=0, description="progressive down-up resizing ramp length; 0 disables")
    progressive_start: float = Field(0.5, gt=0, le=1, description="frame scale at the first epoch")

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, v: str | None) -> str | None:
        if v is not None and v not in list_heads():
            raise ValueError(f"unknown fusion {v!r}; known: {', '.join(list_heads())}")
        return v

    @field_validator("video_augment", mode="before")
    @classmethod
    def _video_preset(cls, v):
        return video_augment_preset(v) if isinstance(v, str) else v

    @field_validator("audio_augment", mode="before")
    @classmethod
    def _audio_preset(cls, v):
        return audio_augment_preset(v) if isinstance(v, str) else v

    def settings(self) -> TrainSettings:
        """The plain training settings (tasks/ takes no pydantic or Prefect types)."""
        return TrainSettings(
            data=self.data, output_dir=self.checkpoint_dir, model_config=self.model_preset,
            overrides=dict(self.overrides), stages=self.stages, pretrain_epochs=self.pretrain_epochs,
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            scheduler=self.scheduler, warmup=self.warmup, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
            precision=self.precision, patience=self.patience, min_delta=self.min_delta, monitor=self.monitor,
            seed=self.seed, num_workers=self.num_workers, samples_per_epoch=self.samples_per_epoch,
            shuffle_buffer=self.shuffle_buffer, device=self.device, resume_from=self.resume_from,
            pretrained_encoders=self.pretrained_encoders, cycle_epochs=self.cycle_epochs, cycle_mult=self.cycle_mult,
            fusion=self.fusion,
            dropout=self.dropout, video_augment=self.video_augment, audio_augment=self.audio_augment, mix=self.mix,
            loss=self.loss, focal_gamma=self.focal_gamma, class_weight=self.class_weight,
            label_smoothing=self.label_smoothing, aux_weight=self.aux_weight,
            contrastive_weight=self.contrastive_weight, curriculum_epochs=self.curriculum_epochs,
            curriculum_start=self.curriculum_start, progressive_epochs=self.progressive_epochs,
            progressive_start=self.progressive_start,
        )  # fmt: skip

    def config_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json(by_alias=True).encode()).hexdigest()[:16]


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_commit() -> str | None:
    """HEAD of the checkout this code runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_tags(config: TrainConfig) -> dict[str, str]:
    layout = fs.IngestLayout(config.data)
    tags = {"config_hash": config.config_hash(), "manifest_sha256": fs.sha256_of(layout.manifest),
            "data": config.data, "stages": config.stages}  # fmt: skip
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    return tags


def ingest_preprocess(data: str) -> dict | None:
    """The PreprocessConfig ingest used for these shards, so `avff predict` can repeat it exactly."""
    path = fs.IngestLayout(data).config
    if not fs.exists(path):
        return None
    return json.loads(fs.read_bytes(path)).get("preprocess")


@task(name="train", cache_policy=NO_CACHE)
def train(settings: TrainSettings, logger: MLflowLogger) -> TrainResult:
    return run_training(settings, log=logger)


@task(name="register-model", cache_policy=NO_CACHE)
def register_model(result: TrainResult, registered_model: str, run_id: str, data: str) -> str | None:
    """Log the best checkpoint as a pyfunc in run ``run_id`` and register it; returns the version.

    Nothing is registered without a stage-2 best checkpoint (a pretrain-only run has no classifier).
    """
    best = result.best_checkpoint
    if best is None:
        return None
    active = mlflow.active_run()
    # the fluent log_model needs the run active in this thread (a task may run in another)
    attach = contextlib.nullcontext() if active and active.info.run_id == run_id else mlflow.start_run(run_id=run_id)
    with attach, tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / WEIGHTS
        weights.write_bytes(fs.read_bytes(fs.join(resolve_checkpoint(best), WEIGHTS)))
        info = log_pyfunc_model(str(weights), result.model_config, registered_model_name=registered_model,
                                preprocess=ingest_preprocess(data))  # fmt: skip
    version = info.registered_model_version
    return None if version is None else str(version)


@flow(name="train-avff", log_prints=True)
def train_avff(config: TrainConfig) -> dict:
    """Train AVFF on ingested shards, track the run in MLflow and register the best model."""
    log = get_run_logger()
    mlflow.set_tracking_uri(resolve_tracking_uri(config.tracking_uri))
    mlflow.set_experiment(config.experiment)
    with mlflow.start_run() as run:
        logger = MLflowLogger(MlflowClient(), run.info.run_id)
        logger.set_tags(run_tags(config))
        # the tracking URI may carry credentials: it is the run's location, not a parameter
        logger.log_params(flatten_params(config.model_dump(by_alias=True, exclude={"tracking_uri"}), "train"))
        result = train(config.settings(), logger)
        version = register_model(result, config.registered_model, run.info.run_id, config.data)
    if result.report_path:  # the same report in the Prefect UI
        create_markdown_artifact(markdown=fs.read_bytes(result.report_path).decode(), key="training-report",
                                 description=f"MLflow run {run.info.run_id}")  # fmt: skip
    log.info("run %s: best epoch %s, model version %s", run.info.run_id, result.best_epoch, version)
    return {
        "run_id": run.info.run_id,
        "model_version": version,
        "report": result.report_path,
        "test_metrics": {k: v for k, v in result.test_metrics.items() if k.startswith(("test_clip_", "test_video_"))},
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "output_dir": result.output_dir,
    }

