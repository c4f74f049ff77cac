"""The whole training run as one plain function, shared by the Prefect flow and the CLI.

:func:`run_training` does, in order:

1. stage 1 ("pretrain", REAL clips only): AVFF's self-supervised losses, generator and
   discriminator optimizers;
2. stage 2 ("classify", both labels): BCE fine-tuning with per-epoch validation (clip and
   video metrics), early stopping on ``monitor``, ``best`` and ``last`` checkpoints;
3. test evaluation at the best checkpoint: the read-out fitted with every weight frozen (``readout="fitted"``,
   :mod:`tasks.train.readout`: a texture probe on the train split, the join of the logits on val) replaces the
   trained sum of the logits, a Platt map (slope and intercept) fitted on val clip logits calibrates val and
   test P(FAKE) (``calibrate``), then the decision threshold is chosen on val;
   the same pass measures each clip's hand-made statistics (:mod:`tasks.evaluate.handmade`), reported
   beside the prior as baselines (``test_baselines_video_lip_sync_auc``, ...);
4. plots, predictions, the markdown report; everything logged through ``log``.

Stage-2 options, all off by default (docs/experiments.md): per-clip video/audio augmentation
in the train loader, Mixup/CutMix and progressive down-up resizing per batch, focal loss,
class weights from the training prior, label smoothing, auxiliary uni-modal and contrastive
terms, a self-paced curriculum. With ``fold=k`` the run is one fold of grouped
cross-validation (:mod:`tasks.ingest.folds`): train+val pooled, fold k validates, test is never
read, and the run ends after scoring the fold at its best checkpoint (no report).

Every epoch ends in a checkpoint that holds weights, optimizer/scheduler/scaler and RNG
states, and the epoch counter; batches depend only on (seed, epoch). So a run interrupted
after epoch k and restarted with ``resume_from`` ends with the same weights and metrics as
one that never stopped.

Output layout under ``output_dir`` (local or object storage)::

    checkpoints/epoch-0003/{model.safetensors,state.pt}   checkpoints/{last,best,pretrained}.json
    checkpoints/epoch-000k/decision.json  (the best one's threshold, calibration and read-out)
    plots/*.png   predictions/{val,test}.parquet   report.md   model_config.json
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from safetensors.torch import save as save_safetensors

import torch

from avff_model import AVFF, AVFFConfig, get_config
from avff_model.model import ENCODER_PREFIXES
from avff_model.inputs import mel_stats_for
from avff_model.readout import Readout
from storage import fs
from storage.shard_schema import FAKE, REAL
from storage.tables import ManifestRow
from tasks.evaluate import metrics as M
from tasks.evaluate.calibration import Calibration
from tasks.evaluate.handmade import STATISTICS
from tasks.evaluate.metric_names import monitor_mode, parse_monitor
from tasks.evaluate.registry import Gate, gate_numbers, prior_gate
from tasks.train.augment import ClipAugment
from tasks.train.batch_augment import BatchTransform
from storage.checkpoint import CheckpointStore, capture_rng, load_checkpoint, resolve_checkpoint, restore_rng
from storage.decision import ingest_preprocess, write_preprocess
from tasks.train.curriculum import clip_difficulty, easiest_clips, linear_ramp
from tasks.ingest.folds import POOL, FoldSplit, fold_split, manifest_rows
from tasks.train.objective import Objective, pos_weight_from_labels
from tasks.evaluate.report import ReadoutSummary, ReportInputs, write_training_report
from tasks.tracking.logger import Logger, flatten_params
from tasks.train.data import InputShape, Statistics, infer_input_shape, make_loader, split_counts
from tasks.train.settings import TrainSettings
from tasks.train.device import make_scaler, resolve_device, resolve_precision, seed_everything
from tasks.train import finish
from tasks.train import readout as readout_fit
from tasks.train.engine import Predictions, StepContext, evaluate, pretrain_one_epoch, train_one_epoch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tasks.train.optim import EarlyStopping, build_optimizer, build_scheduler, named, named_param_groups, param_groups
from tasks.train.pseudo_fakes import PseudoFakes, expected_targets, kinds_drawn
from tasks.train.world import RunWorld, SingleProcess

# What MLflow's run page charts per epoch; the summary at the best checkpoint is finish.SUMMARY_METRICS.
# Every other number (both levels, both thresholds, the baselines) is one row of the run's
# metrics table artifact (finish.METRICS_TABLE) and of report.md: single points make no chart.
CURVE_METRICS = ("train_loss", "val_loss", "lr", "val_video_auc", "val_video_average_precision", "val_video_log_loss",
                 "val_video_balanced_accuracy", "val_video_f1", "val_clip_auc", "val_clip_log_loss")  # fmt: skip


@dataclass
class TrainResult:
    output_dir: str
    model_config: dict
    device: str
    precision: str
    history: list[dict]
    epochs_run: int  # epochs trained in this call (not counting resumed ones)
    best_epoch: int | None
    stopped_early: bool
    best_checkpoint: str | None
    last_checkpoint: str | None
    threshold: float | None = None
    slope: float = 1.0  # P(FAKE) = sigmoid(slope * logit + intercept), Platt fitted on val (1, 0: not calibrated)
    intercept: float = 0.0
    test_metrics: dict[str, float] = field(default_factory=dict)  # flattened, "test_..." keys
    report_path: str | None = None
    plots: list[str] = field(default_factory=list)
    predictions: dict[str, str] = field(default_factory=dict)
    encoders: str | None = None  # encoder weights after stage 1 (a later run's pretrained_encoders)
    val_metrics: dict[str, float] = field(default_factory=dict)  # "best_val_..." keys, at the best checkpoint
    dataset: dict[str, dict[str, int]] = field(default_factory=dict)  # role -> videos/clips per label, groups
    train_fake_fraction: float | None = None  # video level, as the loader reads them (extra data, pseudo-fakes)
    gate: Gate | None = None  # the registry's decision on this run's cross-fitted val numbers (None: a CV fold)


def resolve_model_config(name: str, overrides: Mapping[str, Any], shape: InputShape) -> AVFFConfig:
    """The preset with the data's clip shape applied, then ``overrides``; a conflict raises.

    Frames per clip and the mel shape are the shards'. The image size is the preset's (or the
    ``img_size`` override's) where the shards' face crops are larger: the loader shrinks each clip
    to it (``make_loader(img_size=...)``), so a 224 px ingest trains ``laptop`` at its 112 px and
    within its memory. Smaller crops are never enlarged: the preset then runs at the shards' size
    (cut to whole patches: 100 px crops train at 96). The masking's time slices are the preset's, or
    fewer where the clip has fewer time tokens (native-rate clips: 64 mel columns make 4 audio tokens).
    """
    data_shape = {k: v for k, v in dataclasses.asdict(shape).items() if k != "img_size"}
    clash = {k: (v, data_shape[k]) for k, v in overrides.items() if k in data_shape and v != data_shape[k]}
    if clash:
        raise ValueError(f"model overrides contradict the shards' clip shape (override, data): {clash}")
    preset = get_config(name)
    patch = overrides.get("patch", preset.patch)
    fits = shape.img_size // patch * patch  # the largest whole number of patches in the crops
    size = overrides.get("img_size", min(preset.img_size, fits))
    if size > shape.img_size:
        raise ValueError(
            f"img_size={size} contradicts the shards' {shape.img_size} px face crops: frames are only "
            f"shrunk, never enlarged; ingest with face_size >= {size} or set img_size <= {shape.img_size}"
        )
    fields = {**data_shape, **overrides, "img_size": size}
    if "num_slices" not in overrides:  # as many slices as both modalities have time tokens, even, at most the preset's
        tokens = min(shape.num_frames // fields.get("tubelet", preset.tubelet),
                     shape.mel_frames // fields.get("audio_patch", preset.audio_patch))  # fmt: skip
        fields["num_slices"] = max(2, min(preset.num_slices, tokens - tokens % 2))
    return get_config(name, **fields)


def frame_size_note(shard_size: int, model_size: int) -> str:
    """How the loader sizes frames, for the run's params and report: "224 px shards -> 112 px" or "112 px"."""
    return f"{model_size} px" if shard_size == model_size else f"{shard_size} px shards -> {model_size} px"


HELD_OUT_OF = ("train", "val")  # the roles a held-out manipulation type's videos leave; test keeps them


def _role(row: ManifestRow, view: FoldSplit | None) -> str | None:
    """The role ("train" | "val" | "test") a manifest row plays in this run, None if unused."""
    if view is None:
        return row.split
    return "val" if row.video_id in view.val else "train" if row.video_id in view.train else None


def _dataset_stats(
    rows: list[ManifestRow], view: FoldSplit | None = None, held_out: frozenset[str] = frozenset()
) -> tuple[dict[str, dict[str, int]], dict[str, np.ndarray]]:
    """Per-role counts for the report and clip-level labels (for baselines and class weights), from the
    manifest; ``held_out`` videos are in neither the training nor the validation role (never trained on,
    and never picking the checkpoint, the temperature or the threshold)."""
    stats: dict[str, dict[str, int]] = {}
    labels: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        mine = [r for r in rows if _role(r, view) == split and not (split in HELD_OUT_OF and r.video_id in held_out)]
        clips = [int(r.clips or 1) for r in mine]
        y = np.repeat([1 if r.label == FAKE else 0 for r in mine], clips).astype(np.int64)
        labels[split] = y
        stats[split] = {
            "videos_real": sum(1 for r in mine if r.label == REAL),
            "videos_fake": sum(1 for r in mine if r.label == FAKE),
            "clips_real": int((y == 0).sum()),
            "clips_fake": int((y == 1).sum()),
            "groups": len({r.group for r in mine}),
        }
    return stats, labels


def _steps_per_epoch(n_samples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_samples / batch_size))


def save_encoders(model: AVFF, uri: str) -> None:
    """The encoders' weights alone as safetensors: what a later classify-only run takes as pretrained_encoders."""
    encoders = {k: v.detach().cpu().contiguous() for k, v in model.encoder_state_dict().items()}
    fs.atomic_write_bytes(uri, save_safetensors(encoders))


def load_encoders(model: AVFF, uri: str) -> tuple[int, int]:
    """Load encoder weights from ``uri`` (local or object storage) into ``model``: (tensors loaded, missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = uri
        if not fs.is_local(uri):
            local = str(Path(tmp) / "encoders.safetensors")
            Path(local).write_bytes(fs.read_bytes(uri))
        report = model.load_pretrained_encoders(local.removeprefix("file://"))
    return len(report.loaded), len(report.missing)


def batch_transform(cfg: TrainSettings, stage_epoch: int, epoch: int) -> BatchTransform | None:
    """Pseudo-fakes, Mixup/CutMix and the progressive scale of one stage-2 epoch, seeded by (seed, global epoch)."""
    scale = linear_ramp(stage_epoch, start=cfg.progressive_start, epochs=cfg.progressive_epochs)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    kinds = kinds_drawn(cfg.pseudo_fakes, cfg.exclude_manipulations)  # a held-out type's stand-ins stay off
    pseudo = PseudoFakes(cfg.pseudo_fakes.p, kinds, generator=g) if kinds else None
    transform = BatchTransform(cfg.mix, scale=scale, generator=g, pseudo_fakes=pseudo)
    return transform if transform.active else None


def report_config(cfg: TrainSettings, model_config: dict, device: torch.device, precision: str,
                  frames: str | None = None) -> dict:  # fmt: skip
    """The configuration section of report.md: the settings, the model config and what auto resolved to
    (``frames``: :func:`frame_size_note`)."""
    resolved = {"device": str(device), "precision": precision, **({"frames": frames} if frames else {})}
    return {"train": cfg.model_dump(by_alias=True), "model": model_config, "resolved": resolved}


def curve_metrics(row: Mapping[str, Any], monitor: str) -> dict[str, float]:
    """The per-epoch values worth a chart: CURVE_METRICS, the monitor, objective terms, schedules."""
    keep = set(CURVE_METRICS) | {monitor, "curriculum_fraction", "progressive_scale"}
    return {k: v for k, v in row.items() if k in keep or k.startswith("train_")}


@dataclass(frozen=True)
class RunData:
    """The manifest as one run reads it: which videos play which role, their counts, labels and groups."""

    layout: fs.IngestLayout
    view: FoldSplit | None  # a CV fold's train/val video ids; None: the manifest's own splits
    stats: dict[str, dict[str, int]]  # role -> videos/clips per label, groups (the report's dataset)
    labels: dict[str, np.ndarray]  # role -> clip labels (N,), FAKE = 1
    group_of: dict[str, str]  # video id -> group: the report's intervals resample groups
    held_out: frozenset[str] = frozenset()  # videos of excluded manipulation types: out of train and val
    extra_clips: int = 0  # clips of extra_train_data, read after the training role's own
    extra_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N_extra,) their clip labels
    extra_videos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (V_extra,) one label per video

    def loader_labels(self) -> np.ndarray:
        """(N,) clip labels of one pass of the training loader: the training role's, then the extra data's."""
        return np.concatenate([self.labels["train"], self.extra_labels])

    def training_prior(self, pseudo_fake_p: float = 0.0) -> finish.TrainLabels:
        """The prior the stage-2 objective sees, as expected targets (:func:`expected_targets`): every clip
        the training loader reads (extra data included), a REAL one turned FAKE with ``pseudo_fake_p``;
        and one per training video likewise (the video-level baselines)."""
        train = self.stats["train"]
        videos = np.concatenate([np.repeat([0, 1], [train["videos_real"], train["videos_fake"]]), self.extra_videos])
        return finish.TrainLabels(expected_targets(self.loader_labels(), pseudo_fake_p),
                                  expected_targets(videos, pseudo_fake_p))  # fmt: skip

    def train_clips(self) -> int:
        """Clips one pass of the training loader reads (the schedule's length): the training role's
        (the shard index's count, or the manifest's when a fold or held-out types filter it) plus the extra data's."""
        own = (
            split_counts(self.layout, "train") if self.view is None and not self.held_out else len(self.labels["train"])
        )
        return own + self.extra_clips


def load_run_data(layout: fs.IngestLayout, fold: int | None, exclude: tuple[str, ...] = (),
                  extra: tuple[fs.IngestLayout, ...] = ()) -> RunData:  # fmt: skip
    """The ingested manifest rows, with ``fold`` (grouped CV) deciding train and val when given;
    the FAKE videos of ``exclude`` manipulation types are held out of training and validation, and
    every clip of the ``extra`` ingest outputs joins training."""
    rows = manifest_rows(layout)
    view = None if fold is None else fold_split(rows, fold)
    held_out = frozenset(r.video_id for r in rows if r.manipulation in exclude)
    stats, labels = _dataset_stats(rows, view, held_out)
    extra_clips = sum(split_counts(e, s) for e in extra for s in ("train", "val", "test"))
    extra_rows = [r for e in extra for r in manifest_rows(e)]  # every split of an extra output is read
    extra_videos = np.array([1 if r.label == FAKE else 0 for r in extra_rows], dtype=np.int64)
    extra_labels = np.repeat(extra_videos, [int(r.clips or 1) for r in extra_rows]).astype(np.int64)
    return RunData(layout, view, stats, labels, {r.video_id: r.group or r.video_id for r in rows}, held_out,
                   extra_clips, extra_labels, extra_videos)  # fmt: skip


@dataclass
class Progress:
    """Where a run stands across both stages; checkpointed after every epoch, restored on resume."""

    es: EarlyStopping
    history: list[dict] = field(default_factory=list)  # one row per epoch, both stages
    epoch: int = 0  # global epochs completed (both stages): the x axis of every curve
    global_step: int = 0  # optimizer steps completed: the x axis of the per-step curves
    epochs_run: int = 0  # epochs trained in this call (not counting resumed ones)
    stopped_early: bool = False

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step, "early_stopping": self.es.state_dict(),
                "history": self.history}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        if state.get("early_stopping"):
            self.es.load_state_dict(state["early_stopping"])

    def end_epoch(self, steps: int) -> None:
        self.global_step += steps
        self.epoch += 1
        self.epochs_run += 1


class StageOptim(NamedTuple):
    """One stage's optimizers and schedulers by name, and its grad scaler: what a checkpoint restores."""

    optimizers: dict[str, Optimizer]
    schedulers: dict[str, LRScheduler]
    scaler: torch.amp.GradScaler


class Run:
    """One run_training call: its settings, data, model and progress; methods are its phases, in order.

    ``world`` is where it runs (:mod:`tasks.train.world`): one process, or one rank of a process
    group (:class:`tasks.train.run_distributed.Ranked`); the run is the same either way.
    """

    def __init__(self, cfg: TrainSettings, log: Logger, world: RunWorld | None = None):
        self.cfg, self.log = cfg, log
        self.world = world or SingleProcess()
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.store = CheckpointStore(fs.join(cfg.output_dir, "checkpoints"))
        self.preprocess = ingest_preprocess(cfg.data)  # written with every checkpoint (_save_epoch)
        self.mode = monitor_mode(cfg.monitor) if cfg.monitor_mode == "auto" else cfg.monitor_mode
        self.readout_summary: ReadoutSummary | None = None  # set by fit_readout, for the report
        seed_everything(cfg.seed)
        self.extra_layouts = tuple(fs.IngestLayout(d) for d in cfg.extra_train_data)
        for data in (cfg.data, *cfg.extra_train_data):  # the audio normalisation holds for one mel setting
            mel_stats_for(ingest_preprocess(data), f"shards {data}")
        self.data = load_run_data(fs.IngestLayout(cfg.data), cfg.fold, cfg.exclude_manipulations, self.extra_layouts)
        shape = infer_input_shape(self.data.layout)
        model_cfg = resolve_model_config(cfg.model_preset, cfg.model_overrides(), shape)
        self.img_size, self.frames = model_cfg.img_size, frame_size_note(shape.img_size, model_cfg.img_size)
        self.config_dict = dataclasses.asdict(model_cfg)
        self.plain = AVFF(model_cfg).to(self.device)  # what checkpoints hold and the finish scores
        if cfg.stages in ("both", "classify"):  # fail now, not after stage 1 with no best epoch
            val = self.data.stats["val"]
            M.check_monitor_defined(cfg.monitor, val["videos_real"], val["videos_fake"])
        self.progress = Progress(EarlyStopping(cfg.patience, cfg.min_delta, self.mode))
        self.resume: dict | None = None
        self.encoders_uri = fs.join(cfg.output_dir, "encoders.safetensors")
        self.world.prepare(self.data, cfg.seed)
        self.model = self.world.wrap(self.plain, self.device)  # what trains (behind DDP on ranks)

    # ------------------------------------------------------------ setup

    def load_resume(self) -> None:
        if not self.cfg.resume_from:
            return
        source = resolve_checkpoint(self.cfg.resume_from)
        ckpt = load_checkpoint(source)
        # fields added to AVFFConfig after the checkpoint was written take their defaults
        saved = {**dataclasses.asdict(AVFFConfig()), **ckpt.config}
        if saved != self.config_dict:
            diff = {k: (saved.get(k), v) for k, v in self.config_dict.items() if saved.get(k) != v}
            raise ValueError(f"resume_from holds a different model config (checkpoint, now): {diff}")
        self.plain.load_state_dict(ckpt.weights)
        self.progress.load_state_dict(ckpt.state)
        self.resume = ckpt.state
        if self.world.is_main:  # resuming into a new output_dir: bring the best/pretrained checkpoints along
            self.store.adopt(source.rstrip("/").rsplit("/", 1)[0], ("best", "pretrained"))
        self.world.check_resume(ckpt.state, self.cfg.batch_size)

    def log_params(self) -> None:
        self.log.log_params(flatten_params(self.config_dict, "model"))
        self.log.log_params({"resolved.device": str(self.device), "resolved.precision": self.precision,
                             "resolved.monitor_mode": self.mode, "resolved.frames": self.frames})  # fmt: skip

    def loader(self, split: str, *, epoch: int, real_only: bool = False, train: bool = False,
                augment: bool = False, keep_clips: frozenset[tuple[str, int]] | None = None,
                statistics: Statistics | None = None, shuffle: bool | None = None):  # fmt: skip
        """One epoch's loader of a role as this process reads it; ``augment`` only ever reaches a ``train`` loader,
        ``statistics`` (measured per clip as it is read: the batches' ``handmade``) an evaluation one. ``shuffle``
        (default: ``train``): shards in a seeded order through the shuffle buffer, one pass unless ``train``."""
        cfg, view = self.cfg, self.data.view
        shards, keep_videos = split, None
        if view is not None:  # a CV fold: pooled shards, filtered by the fold's video ids
            if split == "test":
                raise ValueError("a cross-validation fold never reads the test split")
            shards, keep_videos = POOL, view.train if split == "train" else view.val
        clip_augment = ClipAugment(cfg.video_augment, cfg.audio_augment) if train and augment else None
        loader = make_loader(
            self.data.layout, shards,
            batch_size=cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size),
            num_workers=cfg.num_workers, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, epoch=epoch,
            samples_per_epoch=cfg.samples_per_epoch if train else None, real_only=real_only,
            shuffle=train if shuffle is None else shuffle,
            pin_memory=self.device.type == "cuda", augment=clip_augment, keep_videos=keep_videos,
            keep_clips=keep_clips, drop_videos=self.data.held_out if split in HELD_OUT_OF else frozenset(),
            extra_layouts=self.extra_layouts if train else (), img_size=self.img_size, statistics=statistics,
        )  # fmt: skip
        return self.world.train_batches(loader) if train else loader

    def _schedule(self, optimizer, n_samples: int, epochs: int):
        cfg = self.cfg
        n_samples = math.ceil(n_samples / self.world.world_size)  # this process's share
        per_epoch = _steps_per_epoch(cfg.samples_per_epoch or n_samples, cfg.batch_size)
        return build_scheduler(
            optimizer, cfg.scheduler, total_steps=per_epoch * max(epochs, 1), warmup_steps=cfg.warmup,
            cycle_steps=per_epoch * max(cfg.cycle_epochs, 1), cycle_mult=cfg.cycle_mult,
        )  # fmt: skip

    def _stage_optim(self, optimizers: dict[str, Optimizer], n_samples: int, epochs: int) -> StageOptim:
        """``optimizers`` with one schedule each over ``epochs`` of ``n_samples``, and a fresh scaler."""
        schedulers = {k: self._schedule(o, n_samples, epochs) for k, o in optimizers.items()}
        return StageOptim(optimizers, schedulers, make_scaler(self.device, self.precision))

    def _state(self, stage: str, stage_epoch: int, optim: StageOptim) -> dict:
        progress = self.progress.state_dict()
        return {
            "stage": stage, "stage_epoch": stage_epoch, "epoch": progress["epoch"],
            "global_step": progress["global_step"],
            "optimizers": {k: o.state_dict() for k, o in optim.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in optim.schedulers.items()},
            "scaler": optim.scaler.state_dict(), "early_stopping": progress["early_stopping"],
            "history": progress["history"], "rng": capture_rng(), "seed": self.cfg.seed,
            **self.world.checkpoint_state(self.cfg.batch_size),
        }  # fmt: skip

    def _restore(self, stage: str, optim: StageOptim) -> int:
        """Stage epochs already done (from resume_from), restoring optimizer and RNG states."""
        st = self.resume
        if st is None:
            return 0
        order = {"pretrain": 0, "classify": 1}
        if order[st["stage"]] > order[stage]:
            return -1  # this stage finished before the checkpoint
        if st["stage"] != stage:
            return 0
        for k, o in optim.optimizers.items():
            o.load_state_dict(st["optimizers"][k])
        for k, s in optim.schedulers.items():
            s.load_state_dict(st["schedulers"][k])
        optim.scaler.load_state_dict(st["scaler"])
        restore_rng(st["rng"])
        return int(st["stage_epoch"])

    def _save_epoch(self, row: dict, stage: str, stage_epoch: int, optim: StageOptim, tags: tuple[str, ...]) -> None:
        """Append the epoch's history ``row``, then checkpoint weights and state under ``tags``."""
        self.progress.history.append(row)
        state = self._state(stage, stage_epoch, optim)
        if self.world.is_main:  # every rank holds the same weights: one writes them
            saved = self.store.save(f"epoch-{self.progress.epoch:04d}", self.plain, self.config_dict, state, tags)
            # each checkpoint carries the ingest's preprocessing, so any of them (last, a CV fold's, an epoch's)
            # is scored as its data was made: landmark crops and lip tracks, not the defaults' box crops
            if self.preprocess is not None:
                write_preprocess(saved, self.preprocess)
            self.store.prune()

    # ------------------------------------------------------------ stage 1

    def _pretrain_optim(self) -> StageOptim:
        cfg = self.cfg
        lr = cfg.pretrain_lr or cfg.lr
        wd = cfg.weight_decay
        gen = build_optimizer(named_param_groups(named(self.model, self.model.generator_parameters()), wd, lr=lr),
                              cfg.optimizer, lr=lr)  # fmt: skip
        disc = build_optimizer(param_groups(self.model.discriminator_parameters(), wd), cfg.optimizer, lr=lr)
        n_real = self.data.stats["train"]["clips_real"]
        return self._stage_optim({"generator": gen, "discriminator": disc}, n_real, cfg.pretrain_epochs)

    def pretrain(self) -> None:
        """Stage 1 on REAL clips; the last epoch is tagged ``pretrained`` and its encoders saved alone."""
        cfg, progress = self.cfg, self.progress
        optim = self._pretrain_optim()
        gen, disc = optim.optimizers["generator"], optim.optimizers["discriminator"]
        done = self._restore("pretrain", optim)
        if done < 0:
            return
        for stage_epoch in range(done, cfg.pretrain_epochs):
            loader = self.loader("train", epoch=progress.epoch, real_only=True, train=True)
            ctx = StepContext(self.precision, cfg.grad_clip, optim.scaler, progress.global_step, cfg.log_every)
            out = pretrain_one_epoch(self.model, loader, gen, device=self.device, log=self.log, disc_optimizer=disc,
                                     scheduler=optim.schedulers["generator"],
                                     disc_scheduler=optim.schedulers["discriminator"], ctx=ctx)  # fmt: skip
            progress.end_epoch(int(out["steps"]))
            metrics = {f"pretrain_{k}": v for k, v in out.items() if k not in ("steps", "samples")}
            row = {"epoch": progress.epoch, "stage": "pretrain", **metrics, "lr": gen.param_groups[0]["lr"]}
            final = stage_epoch + 1 == cfg.pretrain_epochs
            self._save_epoch(row, "pretrain", stage_epoch + 1, optim, ("last", "pretrained") if final else ("last",))
            if final and self.world.is_main:  # what a later classify-only run takes as pretrained_encoders
                save_encoders(self.plain, self.encoders_uri)
            # per-epoch means of the terms would repeat the per-step curves (pretrain_step_*): the total only
            self.log.log_metrics({"pretrain_loss": metrics["pretrain_loss"], "lr": gen.param_groups[0]["lr"]},
                                 step=progress.epoch)  # fmt: skip

    # ------------------------------------------------------------ stage 2

    def _curriculum(self, stage_epoch: int) -> tuple[float, frozenset[tuple[str, int]] | None]:
        """(fraction, kept clips) of this stage-2 epoch: the easiest clips under the current model."""
        cfg = self.cfg
        if cfg.curriculum_epochs == 0:
            return 1.0, None
        fraction = linear_ramp(stage_epoch, start=cfg.curriculum_start, epochs=cfg.curriculum_epochs)
        if fraction >= 1.0:
            return 1.0, None
        preds = self._predict("train")
        keys = list(zip(preds.video_ids, preds.clips.tolist()))
        return fraction, easiest_clips(keys, preds.y, clip_difficulty(preds.y, preds.p), fraction)

    def _predict(self, split: str) -> Predictions:
        """Clip predictions of a whole split (in order, unshuffled) under the current weights, from every process."""

        def mine() -> Predictions:
            return evaluate(self.model, self.loader(split, epoch=0), device=self.device, precision=self.precision)

        return self.world.predictions(mine, split)

    def _validate(self) -> dict[str, float]:
        preds = self._predict("val")
        flat = M.flatten("val", M.evaluate_predictions(preds.video_ids, preds.y, preds.p, faces=preds.faces))
        flat["val_loss"] = flat["val_clip_log_loss"]
        if math.isnan(flat.get(self.cfg.monitor, 0.0)):
            raise ValueError(f"monitor {self.cfg.monitor!r} is NaN at epoch {self.progress.epoch} (val: "
                             f"{len(set(preds.video_ids))} videos, {int(preds.y.sum())} FAKE clips of {len(preds.y)}): "
                             "no best epoch could be kept")  # fmt: skip
        if self.cfg.monitor not in flat:
            raise KeyError(f"monitor {self.cfg.monitor!r} is not a validation metric; known: {sorted(flat)}")
        if not self.world.agree(flat[self.cfg.monitor]):
            raise RuntimeError(f"ranks disagree on {self.cfg.monitor} at epoch {self.progress.epoch}: "
                               "early stopping would diverge")  # fmt: skip
        return flat

    def _classify_optim(self) -> StageOptim:
        cfg = self.cfg
        params = self.model.classifier_parameters()
        if cfg.contrastive_weight > 0:  # the InfoNCE projections and temperature learn too
            params += self.model.contrastive_parameters()
        groups = named_param_groups(named(self.model, params), cfg.weight_decay, lr=cfg.lr,
                                    lr_scales=dict.fromkeys(ENCODER_PREFIXES, cfg.encoder_lr_scale))  # fmt: skip
        opt = build_optimizer(groups, cfg.optimizer, lr=cfg.lr)
        return self._stage_optim({"classifier": opt}, self.data.train_clips(), cfg.epochs)

    def pseudo_fake_p(self) -> float:
        """The chance a REAL clip is turned FAKE: 0 when pseudo-fakes are off or every kind is held out."""
        cfg = self.cfg
        return cfg.pseudo_fakes.p if kinds_drawn(cfg.pseudo_fakes, cfg.exclude_manipulations) else 0.0

    def _objective(self) -> Objective:
        """The stage-2 loss, its FAKE weight resolved from the prior of what the training loader reads (extra
        data and pseudo-fakes included) when ``class_weight`` asks."""
        cfg = self.cfg
        prior = self.data.training_prior(self.pseudo_fake_p()).clips
        pos_weight = pos_weight_from_labels(prior) if cfg.class_weight == "prior" else None
        if pos_weight is not None:
            self.log.log_params({"resolved.pos_weight": pos_weight})
        return cfg.objective(pos_weight)

    def classify(self) -> None:
        """Stage 2 until ``epochs`` or early stopping; every epoch validated, ``best`` kept on the monitor."""
        cfg, progress = self.cfg, self.progress
        path = cfg.pretrained_encoders
        if path and not (self.resume and self.resume["stage"] == "classify"):  # a resumed stage 2 has its own
            loaded, missing = load_encoders(self.plain, path)
            self.log.log_params({"pretrained_encoders.loaded": loaded, "pretrained_encoders.missing": missing})
        optim = self._classify_optim()
        objective = self._objective()
        done = self._restore("classify", optim)
        if done < 0:
            return
        if done and progress.es.should_stop:
            progress.stopped_early = True
            return
        for stage_epoch in range(done, cfg.epochs):
            row, improved = self._classify_epoch(stage_epoch, optim, objective)
            self._save_epoch(row, "classify", stage_epoch + 1, optim, ("last", "best") if improved else ("last",))
            self.log.log_metrics(curve_metrics(row, cfg.monitor), step=progress.epoch)
            if progress.es.should_stop:
                progress.stopped_early = True
                break

    def _classify_epoch(self, stage_epoch: int, optim: StageOptim, objective: Objective) -> tuple[dict, bool]:
        """One stage-2 epoch and its validation: (history row, whether the monitor improved)."""
        cfg, progress = self.cfg, self.progress
        opt = optim.optimizers["classifier"]
        fraction, keep = self._curriculum(stage_epoch)
        transform = batch_transform(cfg, stage_epoch, progress.epoch)
        loader = self.loader("train", epoch=progress.epoch, train=True, augment=True, keep_clips=keep)
        ctx = StepContext(self.precision, cfg.grad_clip, optim.scaler, progress.global_step, cfg.log_every)
        lr = opt.param_groups[0]["lr"]
        out = train_one_epoch(self.model, loader, opt, device=self.device, log=self.log,
                              scheduler=optim.schedulers["classifier"], ctx=ctx, objective=objective,
                              transform=transform)  # fmt: skip
        progress.end_epoch(int(out["steps"]))
        val = self._validate()
        improved = progress.es.step(val[cfg.monitor], progress.epoch)
        terms = {f"train_{k}": v for k, v in out.items() if k not in ("loss", "cls", "steps", "samples")}
        if cfg.curriculum_epochs:
            terms["curriculum_fraction"] = fraction
        if cfg.progressive_epochs:
            terms["progressive_scale"] = transform.scale if transform else 1.0
        return {
            "epoch": progress.epoch,
            "stage": "classify",
            "train_loss": out["loss"],
            **terms,
            **val,
            "lr": lr,
        }, improved

    # ------------------------------------------------------------ test, plots, report

    def fit_readout(self, best: str) -> FittedReadout | None:
        """``readout="fitted"``: the read-out of the ``best`` checkpoint's frozen model fitted (the texture probe on
        the train split, the join on val: :mod:`tasks.train.readout`) and set on the scoring model, logged and
        returned; None (logged why) when it cannot be fitted."""
        model = self.plain
        model.load_state_dict(load_checkpoint(best).weights)
        has_texture = model.signals is not None and model.signals.texture is not None
        val = readout_fit.collect(model, self.loader("val", epoch=0), device=self.device, precision=self.precision)
        # shuffled: with more train clips than PROBE_CLIPS the probe reads a seeded spread of them, not the first
        # shards (the full DFDC's first 50,000 would be its first few parts)
        train = (readout_fit.collect(model, self.loader("train", epoch=0, shuffle=True), device=self.device,
                                     precision=self.precision, texture_only=True, max_clips=readout_fit.PROBE_CLIPS)
                 if has_texture else None)  # fmt: skip
        readout, why = readout_fit.fit_readout(train, val)
        if readout is None:
            self.log.log_params({"readout_skipped": why})
            self.readout_summary = ReadoutSummary({}, skipped=why)
            return None
        model.set_readout(readout)
        self.readout_summary = ReadoutSummary(readout.weights, len(train.y) if train else 0, len(val.y))
        self.log.log_metrics({f"readout_weight_{k}": v for k, v in readout.weights.items()}, step=self.progress.epoch)
        groups = [self.data.group_of.get(k[0], k[0]) for k in val.keys]
        return FittedReadout(readout, val, readout_fit.cross_fitted(readout, val, groups, self.cfg.seed))

    def score_best(self, best: str, splits: tuple[str, ...]) -> dict[str, Predictions]:
        """Whole splits' predictions under the ``best`` checkpoint's weights, read by this process alone
        (a ranked world has closed its group: the main rank scores all of val and test), with the hand-made
        statistics of every clip measured in the same pass (the baselines the model must beat)."""
        self.plain.load_state_dict(load_checkpoint(best).weights)
        return {s: evaluate(self.plain, self.loader(s, epoch=0, statistics=STATISTICS), device=self.device,
                            precision=self.precision) for s in splits}  # fmt: skip

    def render(self, scored: finish.Scored, raw_test: Predictions, gate: Gate) -> finish.Published:
        """Plots and report.md, logged and (object storage) uploaded."""
        output_dir = self.cfg.output_dir
        with tempfile.TemporaryDirectory() as tmp:
            local = finish.plots_dir(output_dir, Path(tmp))
            paths = finish.render_plots(self.progress.history, scored.test, scored.threshold, local, raw_test)
            report = write_training_report(self._report_inputs(scored.val, scored.test, scored.test_metrics,
                                                               scored.calibration, gate))  # fmt: skip
            return finish.publish(output_dir, paths, report, local, self.log)

    def upload(self, predictions: Mapping[str, str]) -> None:
        """The prediction tables, and (``log_checkpoints``) the best and last checkpoints, as run artifacts."""
        for uri in predictions.values():
            finish.log_remote(self.log, uri, "predictions")
        if self.cfg.log_checkpoints:
            for tag in ("best", "last"):
                finish.log_remote(self.log, self.store.resolve(tag), f"checkpoints/{tag}")

    def gate(self, raw_val: Predictions, out_of_fold: str | None = None) -> Gate:
        """The registry gate on the uncalibrated val predictions, calibrated cross-fitted (not in-sample);
        ``out_of_fold``: they are scored out of fold already, as this says (:meth:`FittedReadout.gate_val`)."""
        cfg = self.cfg
        groups = [self.data.group_of.get(v, v) for v in raw_val.video_ids]
        train = self.data.training_prior(self.pseudo_fake_p())  # the report's prior baseline, at the gate's level
        level, _ = parse_monitor(cfg.monitor)
        prior = float(np.mean(train.videos if level == "video" else train.clips))
        numbers = gate_numbers(raw_val.y, raw_val.p, raw_val.video_ids, groups, cfg.monitor,
                               calibrate=cfg.calibrate, out_of_fold=out_of_fold,
                               seed=cfg.seed, n_bootstrap=cfg.report_bootstrap, faces=raw_val.faces,
                               train_prior=prior)  # fmt: skip
        return prior_gate(numbers, cfg.monitor, self.mode, register_if=cfg.register_if,
                          min_improvement=cfg.min_improvement)  # fmt: skip

    def _report_inputs(self, val: Predictions, test: Predictions, test_metrics: dict,
                       calibration: Calibration, gate: Gate | None = None) -> ReportInputs:  # fmt: skip
        """What report.md reads: this run's history, data, settings and its val/test video predictions."""
        vv, yv, pv = finish.by_video(val)
        vt, yt, pt = finish.by_video(test)
        progress, group_of = self.progress, self.data.group_of
        config = report_config(self.cfg, self.config_dict, self.device, self.precision, self.frames)
        return ReportInputs(
            history=progress.history, dataset=self.data.stats, config=config, test=test_metrics,
            early_stopped=progress.stopped_early, best_epoch=progress.es.best_epoch, monitor=self.cfg.monitor,
            monitor_mode=self.mode, y_test_video=yt, p_test_video=pt, y_val_video=yv, p_val_video=pv,
            seed=self.cfg.seed, n_bootstrap=self.cfg.report_bootstrap, patience=self.cfg.patience,
            max_epochs=self.cfg.epochs,
            groups_test_video=[group_of.get(v, v) for v in vt], groups_val_video=[group_of.get(v, v) for v in vv],
            calibration=calibration, gate=gate,
            loader_prior=(self.data.train_clips(), float(np.mean(self.data.training_prior(self.pseudo_fake_p()).clips))),
            readout=self.readout_summary,
        )  # fmt: skip


@dataclass(frozen=True)
class FittedReadout:
    """A read-out fitted at the end of a run, with what the registry gate needs to judge it out of fold."""

    readout: Readout
    val: readout_fit.Parts  # val's clips as the fit saw them
    val_p: np.ndarray | None  # (N,) val P(FAKE), the join cross-fitted by group halves; None: a half too small

    def gate_val(self, raw_val: Predictions) -> tuple[Predictions, str | None]:
        """``raw_val`` (scored with the read-out fitted on it) with the cross-fitted P(FAKE) in its place, matched
        clip by clip, and how it was scored; unchanged (its calibration cross-fitted, the join in-sample) and None
        when a half of val could not fit a join."""
        if self.val_p is None:
            return raw_val, None
        by_key = dict(zip(self.val.keys, self.val_p))
        faces = raw_val.faces if raw_val.faces is not None else np.zeros(len(raw_val.video_ids), np.int64)
        p = [by_key[(v, int(c), int(f))] for v, c, f in zip(raw_val.video_ids, raw_val.clips, faces)]
        return raw_val._replace(p=np.asarray(p, dtype=np.float64)), "the read-out's join refitted on each half"


class TrainLockedError(fs.LockedError):
    """Another training run is writing to the same output folder."""


TRAIN_LOCK = ".train.lock"  # in output_dir


def training_lock(output_dir: str):
    """The output folder's lock (the one ingest uses); nothing of a run may be written there before it is held."""
    return fs.exclusive_lock(output_dir, TRAIN_LOCK, "training run", TrainLockedError)


def run_training(cfg: TrainSettings, *, log: Logger, world: RunWorld | None = None,
                 locked: bool = False) -> TrainResult:  # fmt: skip
    """Stage 1 -> stage 2 -> test at the best checkpoint -> plots and report (module docstring).

    One run per ``output_dir`` at a time (the lock ingest uses): a second refuses at once,
    naming the first (pid, host, MLflow run). ``locked``: the caller already holds
    :func:`training_lock` (the flow takes it before writing its run record there). ``world``:
    where this process runs (:mod:`tasks.train.world`; default one process); only its main
    process takes the lock (the others write nothing there).
    """
    world = world or SingleProcess()
    if locked or not world.is_main:
        return _train(cfg, log, world)
    with training_lock(cfg.output_dir) as held:
        if held is not None and getattr(log, "run_id", None):
            held.describe(f"MLflow run {log.run_id}")
        return _train(cfg, log, world)


def _train(cfg: TrainSettings, log: Logger, world: RunWorld) -> TrainResult:
    """The run itself, under the lock."""
    run = Run(cfg, log, world)
    run.load_resume()
    run.log_params()
    if world.is_main:
        fs.atomic_write_bytes(fs.join(cfg.output_dir, "model_config.json"),
                              json.dumps(run.config_dict, indent=2, sort_keys=True).encode())  # fmt: skip
    if cfg.stages in ("both", "pretrain"):
        run.pretrain()
    if cfg.stages in ("both", "classify"):
        run.classify()
    result = trained(run)
    return finish_run(run, result) if cfg.stages in ("both", "classify") else result


def trained(run: Run) -> TrainResult:
    """What a run holds after its last epoch: history, checkpoints, encoders; nothing scored yet."""
    progress = run.progress
    return TrainResult(
        output_dir=run.cfg.output_dir, model_config=run.config_dict, device=str(run.device), precision=run.precision,
        history=progress.history, epochs_run=progress.epochs_run,
        best_epoch=progress.es.best_epoch if progress.es.best is not None else None,
        stopped_early=progress.stopped_early, best_checkpoint=run.store.resolve("best"),
        last_checkpoint=run.store.resolve("last"), encoders=run.encoders_uri if fs.exists(run.encoders_uri) else None,
        dataset=run.data.stats,
    )  # fmt: skip


def finish_run(run: Run, result: TrainResult) -> TrainResult:
    """``result`` completed at the best checkpoint: val and test scored, calibrated and thresholded, the
    decision kept beside the checkpoint, predictions, plots and the report written and logged.

    A ranked world closes its group first; only the main process finishes (the others return ``result``).
    """
    run.world.close()
    best = run.store.resolve("best") if run.world.is_main else None
    if best is None:
        return result
    cfg, best_epoch = run.cfg, run.progress.es.best_epoch
    train = run.data.training_prior(run.pseudo_fake_p())
    result = dataclasses.replace(result, train_fake_fraction=float(np.mean(train.videos)))
    if run.data.view is not None:  # a CV fold: its val alone, never test
        return finish_fold(run, result, run.score_best(best, ("val",))["val"], train)
    fitted = run.fit_readout(best) if cfg.readout == "fitted" else None
    raw = run.score_best(best, ("val", "test"))  # with the fitted read-out, when there is one
    gate = run.gate(raw["val"]) if fitted is None else run.gate(*fitted.gate_val(raw["val"]))
    scored = finish.score_best(raw["val"], raw["test"], train, enabled=cfg.calibrate, criterion=cfg.threshold_criterion)
    finish.log_scored(run.log, scored, cfg.monitor, best_epoch)
    finish.keep_decision(best, scored.threshold, cfg.threshold_criterion, scored.calibration.platt,
                         fitted.readout if fitted is not None else None)  # fmt: skip
    finish.keep_preprocess(best, cfg.data)
    predictions = finish.write_predictions(cfg.output_dir, {"val": scored.val, "test": scored.test})
    published = run.render(scored, raw["test"], gate)
    run.upload(predictions)
    return dataclasses.replace(
        result, threshold=scored.threshold, slope=scored.calibration.platt.slope,
        intercept=scored.calibration.platt.intercept, test_metrics=M.flatten("test", scored.test_metrics),
        val_metrics=M.flatten("best_val", scored.val_metrics), report_path=published.report, plots=published.plots,
        predictions=predictions, gate=gate,
    )  # fmt: skip


def finish_fold(run: Run, result: TrainResult, raw_val: Predictions, train: finish.TrainLabels) -> TrainResult:
    """A cross-validation fold's end: its val scored uncalibrated (a map fitted on it is in-sample), logged,
    and its predictions written."""
    val_metrics = finish.score(raw_val, train)
    flat = M.flatten("best_val", val_metrics)
    run.log.log_metrics(finish.summary_metrics(flat, run.cfg.monitor), step=run.progress.es.best_epoch)
    run.log.log_table(finish.metrics_table({"val": val_metrics}), finish.METRICS_TABLE)
    predictions = finish.write_predictions(run.cfg.output_dir, {"val": raw_val})
    return dataclasses.replace(result, val_metrics=flat, predictions=predictions)
