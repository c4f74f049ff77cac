"""One epoch of training or evaluation, with every dependency passed in (MAE's engine style).

- :func:`pretrain_one_epoch`  stage 1: AVFF's generator losses and its discriminators,
  two optimizers stepped in that order after one backward pass
- :func:`train_one_epoch`     stage 2: BCE-with-logits on REAL (0) and FAKE (1) clips, or any
  injected ``objective`` (:class:`tasks.train.objective.Objective`), after an optional batch
  ``transform`` (:class:`tasks.train.batch_augment.BatchTransform`: Mixup/CutMix, down-up resizing)
- :func:`evaluate`            clip probabilities of a whole loader

Both training functions fail fast on a non-finite loss, clip gradients, step their
schedulers once per optimizer step, run under bf16/fp16 autocast on CUDA (fp16 with a
GradScaler) and log per-step metrics through ``log`` with the global step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from tasks.train.device import autocast, make_scaler
from tasks.train.distributed import all_mean
from tasks.train.objective import Objective


class MetricLog(Protocol):
    """What the engine needs from a logger: metrics with their step."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss: stop instead of training on garbage."""


@dataclass
class StepContext:
    """What both training loops need besides model, loader, optimizer, device and log."""

    precision: str = "fp32"  # resolved: bf16 | fp16 | fp32
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    scaler: torch.amp.GradScaler | None = None
    start_step: int = 0  # global optimizer step before this epoch
    log_every: int = 1
    prefix: str | None = None  # metric key prefix; default train_step / pretrain_step


def _step_values(losses: dict[str, torch.Tensor], batch: int, step: int) -> tuple[dict[str, float], int]:
    """The step's loss values averaged over ranks (weighted by batch), and the global batch size.

    Checked after the reduction, so every rank raises together on a non-finite loss.
    """
    values, batch = all_mean(losses, batch)
    return _check_finite(values, step), batch


def _in_forward(model: torch.nn.Module, fn: Callable, *args):
    """``fn(model, *args)``; a :class:`tasks.train.distributed.DataParallel` runs it inside DDP's forward."""
    run = getattr(model, "run_in_forward", None)
    return run(fn, *args) if run is not None else fn(model, *args)


def _pretrain_losses(model: torch.nn.Module, video: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    return model.pretrain_losses(video, audio)


def _check_finite(losses: dict[str, torch.Tensor] | dict[str, float], step: int) -> dict[str, float]:
    values = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}")
    return values


def _clip_and_step(optimizer: Optimizer, params: list[torch.nn.Parameter], scaler, grad_clip: float) -> float:
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    scaler.step(optimizer)
    return float(norm)


def _params_of(optimizer: Optimizer) -> list[torch.nn.Parameter]:
    return [p for g in optimizer.param_groups for p in g["params"]]


@dataclass
class _EpochMeans:
    """Per-term loss sums weighted by the global batch size, and the step/sample counts."""

    sums: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    steps: int = 0

    def add(self, values: dict[str, float], batch: int) -> None:
        self.steps += 1
        self.samples += batch
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * batch

    def result(self, what: str) -> dict[str, float]:
        """The epoch mean of every term plus ``steps`` and ``samples``; raises on an empty loader."""
        if self.steps == 0:
            raise ValueError(f"the {what} loader yielded no batches")
        means = {k: v / self.samples for k, v in self.sums.items()}
        return {**means, "steps": float(self.steps), "samples": float(self.samples)}


def _to_device(batch: dict, device: torch.device) -> dict:
    """``batch`` with its tensors video (B, 3, T, H, W), audio (B, 1, F, Tm), target (B,) and, when it has
    one, mouth (B, 4) and lips (B, T, 2) on ``device``."""
    keys = [k for k in ("video", "audio", "target", "mouth", "lips") if k in batch]
    return {**batch, **{k: batch[k].to(device, non_blocking=True) for k in keys}}


def _step_schedulers(*schedulers: LRScheduler | None) -> None:
    for sched in schedulers:
        if sched is not None:
            sched.step()


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable[dict],
    optimizer: Optimizer,
    *,
    device: torch.device,
    log: MetricLog,
    scheduler: LRScheduler | None = None,
    ctx: StepContext | None = None,
    objective: Objective | None = None,
    transform: Callable[[dict], dict] | None = None,
) -> dict[str, float]:
    """Stage 2: one pass over ``loader``; returns the epoch mean of every loss term and the step count.

    ``objective(model, video, audio, target, mouth, lips[, pseudo_kind]) -> {"loss": total, term: value}``
    (``pseudo_kind`` where the batch has pseudo-fakes) defaults to plain BCE-with-logits;
    ``transform(batch) -> batch`` runs on the device before the forward pass.
    """
    ctx = ctx or StepContext()
    objective = objective or Objective()
    prefix = ctx.prefix or "train_step"
    scaler = ctx.scaler or make_scaler(device, ctx.precision)
    params = _params_of(optimizer)
    model.train()
    epoch = _EpochMeans()
    for batch in loader:
        batch = _to_device(batch, device)
        if transform is not None:
            batch = transform(batch)
        video, audio, target = batch["video"], batch["audio"], batch["target"]  # (B, 3, T, H, W), (B, 1, F, Tm), (B,)
        step = ctx.start_step + epoch.steps
        kinds = (batch["pseudo_kind"],) if "pseudo_kind" in batch else ()  # (B,): the pseudo-fake each clip got
        with autocast(device, ctx.precision):
            losses = _in_forward(model, objective, video, audio, target, batch.get("mouth"), batch.get("lips"), *kinds)
        values, batch_size = _step_values(losses, len(target), step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        grad_norm = _clip_and_step(optimizer, params, scaler, ctx.grad_clip)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        _step_schedulers(scheduler)
        epoch.add(values, batch_size)
        if epoch.steps % ctx.log_every == 0:
            # "cls" alone equals "loss": log the terms only when the objective has several
            shown = values if len(values) > 2 else {"loss": values["loss"]}
            metrics = {f"{prefix}_{k}": v for k, v in shown.items()}
            log.log_metrics({**metrics, f"{prefix}_grad_norm": grad_norm, f"{prefix}_lr": lr}, step=step + 1)
    return epoch.result("training")


def pretrain_one_epoch(
    model: torch.nn.Module,
    loader: Iterable[dict],
    optimizer: Optimizer,
    *,
    device: torch.device,
    log: MetricLog,
    disc_optimizer: Optimizer,
    scheduler: LRScheduler | None = None,
    disc_scheduler: LRScheduler | None = None,
    ctx: StepContext | None = None,
) -> dict[str, float]:
    """Stage 1: ``model.pretrain_losses`` per batch; generator step, then discriminator step.

    ``loss`` carries no gradient into the discriminators and ``disc_loss`` none into the
    generator (the model guarantees it), so one backward of their sum feeds both optimizers.
    Returns the epoch mean of every loss term plus the step count.
    """
    ctx = ctx or StepContext()
    prefix = ctx.prefix or "pretrain_step"
    scaler = ctx.scaler or make_scaler(device, ctx.precision)
    gen_params, disc_params = _params_of(optimizer), _params_of(disc_optimizer)
    model.train()
    epoch = _EpochMeans()
    for batch in loader:
        video = batch["video"].to(device, non_blocking=True)  # (B, 3, T, H, W)
        audio = batch["audio"].to(device, non_blocking=True)  # (B, 1, F, Tm)
        step = ctx.start_step + epoch.steps
        with autocast(device, ctx.precision):
            losses = _in_forward(model, _pretrain_losses, video, audio)
        values, batch_size = _step_values(losses, video.shape[0], step)
        optimizer.zero_grad(set_to_none=True)
        disc_optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"] + losses["disc_loss"]).backward()
        grad_norm = _clip_and_step(optimizer, gen_params, scaler, ctx.grad_clip)
        disc_norm = _clip_and_step(disc_optimizer, disc_params, scaler, ctx.grad_clip)
        scaler.update()  # once per iteration, after both optimizers (AMP multi-optimizer recipe)
        lr = optimizer.param_groups[0]["lr"]
        _step_schedulers(scheduler, disc_scheduler)
        epoch.add(values, batch_size)
        if epoch.steps % ctx.log_every == 0:
            metrics = {f"{prefix}_{k}": v for k, v in values.items()}
            metrics.update({f"{prefix}_grad_norm": grad_norm, f"{prefix}_disc_grad_norm": disc_norm,
                            f"{prefix}_lr": lr})  # fmt: skip
            log.log_metrics(metrics, step=step + 1)
    return epoch.result("pretraining")


class Predictions(NamedTuple):
    """Clip-level predictions of one split, in loader order."""

    video_ids: list[str]
    clips: np.ndarray  # (N,) int64
    y: np.ndarray  # (N,) int64, FAKE = 1
    p: np.ndarray  # (N,) float64, probability of FAKE
    faces: np.ndarray | None = None  # (N,) int64, which face of its video each clip shows (0: the main one)
    # statistic name -> (N,) float64, the hand-made statistics (tasks/evaluate/handmade.py) of each clip,
    # when the loader measured them (make_loader(statistics=...)); None otherwise
    handmade: dict[str, np.ndarray] | None = None


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: Iterable[dict], *, device: torch.device,
             precision: str = "fp32") -> Predictions:  # fmt: skip
    """Probabilities of FAKE for every clip of ``loader`` (model in eval mode), with the clips' hand-made
    statistics when the loader measured them (a batch's ``handmade``)."""
    model.eval()
    ids: list[str] = []
    clips, ys, ps, faces, handmade = [], [], [], [], []
    for batch in loader:
        with autocast(device, precision):
            mouth = batch["mouth"].to(device) if "mouth" in batch else None  # (B, 4)
            lips = batch["lips"].to(device) if "lips" in batch else None  # (B, T, 2)
            logits = model(batch["video"].to(device), batch["audio"].to(device), mouth, lips)  # (B,)
        ps.append(torch.sigmoid(logits.float()).cpu().numpy())
        ys.append(batch["target"].numpy())
        clips.append(batch["clip"].numpy())
        faces.append(batch["face"].numpy() if "face" in batch else np.zeros(len(batch["video_id"]), np.int64))  # (B,)
        ids.extend(batch["video_id"])
        if "handmade" in batch:
            handmade.append(batch["handmade"])  # name -> (B,)
    if not ids:
        raise ValueError("the evaluation loader yielded no batches")
    measured = (
        {n: np.concatenate([h[n].numpy() for h in handmade]).astype(np.float64) for n in handmade[0]}
        if handmade
        else None
    )
    return Predictions(ids, np.concatenate(clips), np.concatenate(ys).astype(np.int64),
                       np.concatenate(ps).astype(np.float64), np.concatenate(faces).astype(np.int64), measured)  # fmt: skip
