"""THE training config: one frozen pydantic model, every face of it generated from its fields.

:class:`TrainSettings` is what :func:`tasks.train.run.run_training` reads, the parameter of
the ``train-avff`` flow (Prefect validates it and renders it as a form, the field
descriptions as help), the flags of ``avff train`` (flows/cli/train.py builds them from the
fields: names, types, bounds, defaults, help) and the YAML file of ``avff train --config``.
Nothing maps it by hand onto a second copy.

Validation happens at construction, before anything starts: bounds, the known names of
presets, heads, losses and metrics (``monitor`` against
:data:`tasks.evaluate.metric_names.MONITORS`), and model switches that contradict
``overrides``. The nested augmentation settings are plain frozen dataclasses (validated in
``__post_init__``) that the augmentation code takes as they are.

This module imports neither torch nor the model (the CLI builds its flags from it in well
under a second); the two checks that need the model's registries import it when they run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from storage import fs
from tasks.evaluate.metric_names import METRICS, check_monitor

# ---------------------------------------------------------------- augmentation (stage 2, train loader only)


def _check_range(name: str, lo: float, hi: float, lo_ok: float, hi_ok: float) -> None:
    if not (lo_ok <= lo <= hi <= hi_ok):
        raise ValueError(f"{name} must satisfy {lo_ok} <= low <= high <= {hi_ok}, got ({lo}, {hi})")


def _check_prob(owner: object) -> None:
    for f in fields(owner):
        if f.name.endswith("_p") or f.name == "hflip":
            v = getattr(owner, f.name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{f.name} is a probability, got {v}")


@dataclass(frozen=True)
class VideoAugment:
    """Per-clip video augmentation (:mod:`tasks.train.augment`); every field at its default means "off"."""

    hflip: float = 0.0  # probability of a horizontal flip
    rotate: float = 0.0  # degrees: angle ~ U(-rotate, rotate)
    brightness: float = 0.0  # factor ~ U(1 - b, 1 + b)
    contrast: float = 0.0  # factor ~ U(1 - c, 1 + c), blend towards the clip's mean grey
    saturation: float = 0.0  # factor ~ U(1 - s, 1 + s), blend towards each pixel's grey
    hue: float = 0.0  # turns ~ U(-h, h), h <= 0.5: rotation of the YIQ chroma plane
    jpeg_p: float = 0.0  # probability of re-encoding every frame as JPEG ...
    jpeg_quality: tuple[int, int] = (30, 90)  # ... at one quality ~ U{low..high}
    blur_p: float = 0.0  # probability of a Gaussian blur ...
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # ... with sigma (pixels) ~ U(low, high)
    noise_p: float = 0.0  # probability of additive Gaussian noise ...
    noise_std: tuple[float, float] = (0.005, 0.04)  # ... with std (of [0, 1] pixels) ~ U(low, high)

    def __post_init__(self) -> None:
        _check_prob(self)
        for name in ("rotate", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0 or (name != "rotate" and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be >= 0 (and < 1 for a factor), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] turns, got {self.hue}")
        _check_range("jpeg_quality", *self.jpeg_quality, 1, 100)
        _check_range("blur_sigma", *self.blur_sigma, 1e-3, 20.0)
        _check_range("noise_std", *self.noise_std, 0.0, 1.0)

    @property
    def enabled(self) -> bool:
        return self != VideoAugment()


@dataclass(frozen=True)
class AudioAugment:
    """Per-clip log-mel augmentation (:mod:`tasks.train.augment`); every field at its default means "off"."""

    pitch_shift: float = 0.0  # max |shift| in mel bins, shift ~ U(-s, s); keeps A/V sync
    noise_p: float = 0.0  # probability of additive power-domain noise ...
    noise_snr_db: tuple[float, float] = (10.0, 30.0)  # ... at an SNR (dB) ~ U(low, high); keeps sync
    time_stretch: float = 0.0  # rate ~ U(1 - r, 1 + r); BREAKS A/V sync
    time_shift: int = 0  # max |shift| in mel frames (10 ms each); BREAKS A/V sync

    def __post_init__(self) -> None:
        _check_prob(self)
        if self.pitch_shift < 0 or self.time_shift < 0 or not 0.0 <= self.time_stretch < 1.0:
            raise ValueError("pitch_shift and time_shift must be >= 0 and time_stretch in [0, 1)")
        _check_range("noise_snr_db", *self.noise_snr_db, -20.0, 100.0)

    @property
    def enabled(self) -> bool:
        return self != AudioAugment()

    @property
    def breaks_sync(self) -> bool:
        """True when a transform moves audio against the video (time stretch or shift)."""
        return self.time_stretch > 0 or self.time_shift > 0


@dataclass(frozen=True)
class MixAugment:
    """Batch mixing (stage 2, :mod:`tasks.train.batch_augment`): Mixup and/or CutMix with matching soft labels."""

    mixup_alpha: float = 0.0  # Beta(a, a) for the Mixup weight; 0 disables Mixup
    cutmix_alpha: float = 0.0  # Beta(a, a) for the CutMix area; 0 disables CutMix
    prob: float = 1.0  # probability that a batch is mixed at all
    switch_p: float = 0.5  # with both enabled: probability of CutMix rather than Mixup
    mix_audio: bool = True  # Mixup also mixes the log-mels with the same weight

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        if not (0.0 <= self.prob <= 1.0 and 0.0 <= self.switch_p <= 1.0):
            raise ValueError("prob and switch_p are probabilities")

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


PseudoFakeKind = Literal["self_blend", "face_resample", "mouth_freeze", "mouth_shuffle", "audio_shift", "audio_swap",
                         "audio_pitch"]  # fmt: skip
PSEUDO_FAKE_KINDS: tuple[str, ...] = get_args(PseudoFakeKind)


@dataclass(frozen=True)
class PseudoFakeAugment:
    """Pseudo-fakes (stage 2, :mod:`tasks.train.pseudo_fakes`): REAL clips of a batch made into labelled FAKEs."""

    p: float = 0.0  # fraction of each batch's REAL clips turned into pseudo-fakes; 0 disables
    kinds: tuple[PseudoFakeKind, ...] = PSEUDO_FAKE_KINDS  # drawn uniformly per clip

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"pseudo-fake p is a probability, got {self.p}")
        if not self.kinds or set(self.kinds) - set(PSEUDO_FAKE_KINDS):
            raise ValueError(f"pseudo-fake kinds must be a non-empty subset of {PSEUDO_FAKE_KINDS}, got {self.kinds}")

    @property
    def enabled(self) -> bool:
        return self.p > 0


VIDEO_PRESETS = {
    "none": VideoAugment(),
    "light": VideoAugment(hflip=0.5, rotate=5.0, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
    "strong": VideoAugment(
        hflip=0.5,
        rotate=10.0,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        hue=0.05,
        jpeg_p=0.3,
        blur_p=0.2,
        noise_p=0.2,
    ),  # fmt: skip
}
AUDIO_PRESETS = {
    "none": AudioAugment(),
    "sync_safe": AudioAugment(pitch_shift=2.0, noise_p=0.3),
}


# TrainSettings fields that also take a preset name
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {"video_augment": VIDEO_PRESETS, "audio_augment": AUDIO_PRESETS}


def video_augment_preset(name: str) -> VideoAugment:
    """A named VideoAugment (none | light | strong); unknown names raise KeyError."""
    if name not in VIDEO_PRESETS:
        raise KeyError(f"unknown video augment preset {name!r}; known: {', '.join(sorted(VIDEO_PRESETS))}")
    return VIDEO_PRESETS[name]


def audio_augment_preset(name: str) -> AudioAugment:
    """A named AudioAugment (none | sync_safe); unknown names raise KeyError."""
    if name not in AUDIO_PRESETS:
        raise KeyError(f"unknown audio augment preset {name!r}; known: {', '.join(sorted(AUDIO_PRESETS))}")
    return AUDIO_PRESETS[name]


# ---------------------------------------------------------------- the run

Stage = Literal["both", "pretrain", "classify"]
STAGES: tuple[str, ...] = get_args(Stage)
ClassWeight = Literal["none", "prior"]
RegisterIf = Literal["beats_prior", "always", "never"]


class TrainSettings(BaseModel):
    """Everything one training run needs: data, model, optimisation, stage-2 switches, tracking and registry."""

    # `model_config` is pydantic's own attribute: the preset field is `model_preset` in Python,
    # spelled "model_config" everywhere else (parameters, YAML, JSON, the Prefect form).
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, protected_namespaces=())

    # -- where from, where to
    data: str = Field(description="ingest output root: shards.parquet, manifest.parquet, shards/ (local or s3://)")
    output_dir: str = Field(description="output root: checkpoints, plots, predictions, report.md (local or s3://)")
    resume_from: str | None = Field(None, description="a checkpoint dir, a pointer .json or an earlier output_dir")
    pretrained_encoders: str | None = Field(
        None, description="encoders.safetensors of a stage-1 run, loaded before stage 2"
    )
    extra_train_data: tuple[str, ...] = Field(
        (),
        description="other ingest outputs whose every clip (any split) "
        "joins the training batches, e.g. REAL-only footage that pseudo-fakes "
        "turn into labelled FAKEs; set samples_per_epoch, which they do not change",
    )
    exclude_manipulations: tuple[str, ...] = Field(
        (),
        description="manipulation types held out: their FAKE videos "
        "reach neither training nor validation (test keeps them) and their "
        "pseudo-fake stand-ins (tasks.train.pseudo_fakes.STAND_INS) are "
        "not drawn: to measure how a model does on a type it never saw",
    )
    # -- model
    model_preset: str = Field("tiny", alias="model_config", description="AVFF preset: tiny | laptop | paper")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="AVFFConfig fields to override, e.g. num_slices=2"
    )
    fusion: str | None = Field(None, description="stage-2 head (avff_model.heads), e.g. avff_concat, avff_sync, "
                               "attention, late, video_only, audio_only; None: the preset's")  # fmt: skip
    dropout: float | None = Field(None, ge=0, lt=1, description="model dropout; None: the preset's")
    # -- stages and optimisation
    stages: Stage = Field("both", description="pretrain: self-supervised stage 1 only; classify: stage 2 only")
    pretrain_epochs: int = Field(1, ge=0, description="stage-1 epochs")
    epochs: int = Field(10, ge=0, description="stage-2 epochs at most (early stopping may end sooner)")
    batch_size: int = Field(8, ge=1, description="clips per optimizer step (per rank when world_size > 1)")
    eval_batch_size: int | None = Field(None, ge=1, description="clips per evaluation batch; None: batch_size")
    lr: float = Field(1e-4, gt=0, description="learning rate")
    pretrain_lr: float | None = Field(None, gt=0, description="stage-1 learning rate; None: lr")
    optimizer: Literal["adamw", "adam", "lion"] = Field("adamw", description="optimizer of both stages")
    scheduler: Literal["warmup_cosine", "cosine_warm_restarts", "constant"] = Field(
        "warmup_cosine", description="learning-rate schedule of each stage"
    )
    warmup: int = Field(0, ge=0, description="optimizer steps of linear warmup, per stage")
    cycle_epochs: int = Field(1, ge=1, description="cosine_warm_restarts: epochs of the first cycle (T_0)")
    cycle_mult: float = Field(1.0, ge=1, description="cosine_warm_restarts: growth of each next cycle (T_mult)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW/Lion weight decay")
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0 disables")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16/fp16 on GPU, fp32 on CPU"
    )
    # -- model selection
    monitor: str = Field("val_video_log_loss", description="val metric for early stopping, the best checkpoint and "
                         f"the registry gate: val_loss, or val_video_<m> / val_clip_<m> with <m> one of "
                         f"{', '.join(METRICS)}")  # fmt: skip
    monitor_mode: Literal["auto", "min", "max"] = Field("auto", description="auto: max for scores, min for losses")
    patience: int = Field(3, ge=1, description="stop after this many stage-2 epochs without improvement")
    min_delta: float = Field(0.0, ge=0, description="the least change of monitor that counts as improvement")
    threshold_criterion: Literal["f1", "youden", "eer"] = Field(
        "f1", description="how the decision threshold is chosen on val videos"
    )
    calibrate: bool = Field(True, description="Platt scaling: fit slope a and intercept b on val clip logits at the "
                            "best checkpoint, P(FAKE) = sigmoid(a logit + b) for the threshold, val/test metrics "
                            "and serving")  # fmt: skip
    readout: Literal["end_to_end", "fitted"] = Field(
        "fitted", description="how the model's logits (fusion head, signal head) are joined for scoring: "
        "'end_to_end' as trained (their sum); 'fitted': after training, a logistic probe on the texture features "
        "(train split) and a logistic join of the logits and the probe (val), kept in decision.json "
        "(avff_model/readout.py; docs/learning.md: visual_artifact 0.61 -> 0.83); a model without signal "
        "branches keeps its own logit")  # fmt: skip
    # -- data loading and hardware
    seed: int = Field(0, description="seeds weights, shuffling, augmentation (batches depend on seed and epoch only)")
    num_workers: int = Field(2, ge=0, description="data loader processes per rank")
    samples_per_epoch: int | None = Field(None, ge=1, description="training clips per epoch; None: one pass over train")
    shuffle_buffer: int = Field(256, ge=0, description="clips in the shuffle buffer of the train loader")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    world_size: int = Field(1, ge=1, description="data-parallel ranks (GPUs, or CPU processes); batch_size is per rank")
    ray_address: str | None = Field(
        None,
        description="run the ranks as Ray Train workers on this cluster "
        "(auto | host:6379 | ray://host:10001 | local); None: processes on this machine",
    )
    fold: int | None = Field(None, ge=0, description="grouped CV: train+val pooled, this manifest fold validates, "
                             "test never read, no report; None: the manifest's splits")  # fmt: skip
    # -- stage-2 augmentation (train loader and batches; never val/test)
    video_augment: VideoAugment = Field(
        default_factory=VideoAugment, description="per-clip video augmentation, or a preset: none | light | strong"
    )
    audio_augment: AudioAugment = Field(
        default_factory=AudioAugment, description="per-clip log-mel augmentation, or a preset: none | sync_safe"
    )
    mix: MixAugment = Field(default_factory=MixAugment, description="Mixup / CutMix of training batches")
    pseudo_fakes: PseudoFakeAugment = Field(
        default_factory=PseudoFakeAugment,
        description="pseudo-fakes made from "
        'REAL training clips, e.g. {"p": 0.5} or {"p": 0.5, "kinds": ["audio_shift"]}',
    )
    encoder_lr_scale: float = Field(1.0, gt=0, le=1, description="stage-2 learning rate of the encoders and A2V/V2A "
                                    "as a fraction of lr (keeps stage 1's features)")  # fmt: skip
    # -- stage-2 objective (tasks.train.objective)
    loss: Literal["bce", "focal"] = Field("bce", description="stage-2 loss")
    focal_gamma: float = Field(2.0, ge=0, description="focal loss gamma")
    class_weight: ClassWeight = Field("none", description="prior: FAKE weight n_real / n_fake of the training clips")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="BCE target smoothing")
    aux_weight: float = Field(0.0, ge=0, description="weight of the video-only + audio-only auxiliary BCE terms")
    contrastive_weight: float = Field(0.0, ge=0, description="weight of the stage-2 InfoNCE on REAL clips")
    branch_weight: float = Field(0.0, ge=0, description="weight of each joined logit's own loss (the fusion head's, "
                                 "the signal heads'): every branch must classify on its own")  # fmt: skip
    branch_supervision: Literal["every", "seen"] = Field(
        "every", description="seen: a signal branch learns only from REAL clips and the pseudo-fakes it can see "
        "(needs branch_weight > 0; without pseudo-fakes that is REAL clips only); every: from every clip")  # fmt: skip
    # -- stage-2 schedules over epochs (tasks.train.curriculum); 0 epochs disables
    curriculum_epochs: int = Field(0, ge=0, description="self-paced curriculum ramp length; 0 disables")
    curriculum_start: float = Field(0.5, gt=0, le=1, description="easiest fraction of clips at the first epoch")
    progressive_epochs: int = Field(0, ge=0, description="progressive down-up resizing ramp length; 0 disables")
    progressive_start: float = Field(0.5, gt=0, le=1, description="frame scale at the first epoch")
    # -- logging, tracking, registry
    log_every: int = Field(1, ge=1, description="per-step metrics every this many optimizer steps")
    log_checkpoints: bool = Field(True, description="log the best and last checkpoints as artifacts")
    report_bootstrap: int = Field(200, ge=1, description="bootstrap resamples of the report's AUC intervals")
    experiment: str = Field("avff", description="MLflow experiment")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else the "
                                     "local stack's server")  # fmt: skip
    registered_model: str = Field("avff-dfdc", description="MLflow registered model")
    register_if: RegisterIf = Field("beats_prior", description="beats_prior: register only a model whose monitored "
                                    "val metric beats the prior's, both cross-fitted on val | always | never")  # fmt: skip
    min_improvement: float = Field(0.0, ge=0, description="margin by which the model must beat the prior to register")

    @field_validator("model_preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        from avff_model import list_configs  # torch: only when a config is built, never for the CLI's flags

        if v not in list_configs():
            raise ValueError(f"unknown model preset {v!r}; known: {', '.join(list_configs())}")
        return v

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, v: str | None) -> str | None:
        from avff_model import list_heads

        if v is not None and v not in list_heads():
            raise ValueError(f"unknown fusion {v!r}; known: {', '.join(list_heads())}")
        return v

    @field_validator("monitor")
    @classmethod
    def _known_monitor(cls, v: str) -> str:
        return check_monitor(v)

    @field_validator("video_augment", "audio_augment", mode="before")
    @classmethod
    def _augment_preset(cls, v: Any, info: ValidationInfo) -> Any:
        presets = AUGMENT_PRESETS[info.field_name]
        if isinstance(v, str) and v not in presets:
            raise ValueError(f"unknown {info.field_name.replace('_', ' ')} preset {v!r}; known: {', '.join(presets)}")
        return presets[v] if isinstance(v, str) else v

    @field_validator("output_dir")
    @classmethod
    def _output_can_be_a_folder(cls, v: str) -> str:
        problem = fs.not_a_folder(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _switches_agree_with_overrides(self) -> TrainSettings:
        self.model_overrides()  # raises on a contradiction
        if self.branch_supervision == "seen" and self.branch_weight <= 0:
            raise ValueError("branch_supervision='seen' needs branch_weight > 0 (the signal branches' own loss)")
        return self

    def model_overrides(self) -> dict[str, Any]:
        """``overrides`` plus the named model switches; a switch contradicting an override raises."""
        named = {"fusion": self.fusion, "dropout": self.dropout, "aux_heads": True if self.aux_weight > 0 else None}
        out = dict(self.overrides)
        for key, value in named.items():
            if value is None:
                continue
            if key in out and out[key] != value:
                raise ValueError(f"{key}={value!r} contradicts overrides[{key!r}]={out[key]!r}")
            out[key] = value
        return out

    def objective(self, pos_weight: float | None):
        """The stage-2 loss (:class:`tasks.train.objective.Objective`), the FAKE weight resolved from the data."""
        from tasks.train.objective import Objective  # torch: imported by the run, not by the CLI
        from tasks.train.pseudo_fakes import kinds_drawn

        return Objective(loss=self.loss, focal_gamma=self.focal_gamma, pos_weight=pos_weight,
                         label_smoothing=self.label_smoothing, aux_weight=self.aux_weight,
                         contrastive_weight=self.contrastive_weight, branch_weight=self.branch_weight,
                         branch_supervision=self.branch_supervision,
                         pseudo_kinds=kinds_drawn(self.pseudo_fakes, self.exclude_manipulations))  # fmt: skip

    def replace(self, **changes: Any) -> TrainSettings:
        """A validated copy with ``changes`` (field names) applied."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def config_hash(self) -> str:
        """16 hex digits identifying these settings (tagged on the run)."""
        return hashlib.sha256(self.model_dump_json(by_alias=True).encode()).hexdigest()[:16]
