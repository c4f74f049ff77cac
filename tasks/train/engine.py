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

import contextlib
import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from tasks.train.distributed import all_mean
from tasks.train.objective import Objective

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
OPTIMIZERS = ("adamw", "adam", "lion")
SCHEDULERS = ("cosine_warm_restarts", "warmup_cosine", "constant")


class MetricLog(Protocol):
    """What the engine needs from a logger: metrics with their step."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss: stop instead of training on garbage."""


# ---------------------------------------------------------------- setup helpers


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); ``deterministic`` also pins cuDNN/cuBLAS."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA that supports it, else fp16 on CUDA, else fp32; CPU is fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if device.type != "cuda":
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def make_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 on CUDA (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision == "fp16")


# ---------------------------------------------------------------- optimizers and schedules


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), Algorithm 2.

    ``update = sign(b1*m + (1-b1)*g)``; ``p -= lr * (update + wd * p)``; ``m = b2*m + (1-b2)*g``.
    Use a learning rate 3-10x smaller and a weight decay 3-10x larger than for AdamW.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        if lr <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid Lion hyper-parameters lr={lr} betas={betas}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # decoupled weight decay
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str = "adamw", *, lr: float,
                    weight_decay: float = 0.0) -> Optimizer:  # fmt: skip
    """AdamW, Adam or Lion; weight decay applies to matrices only, not biases/norms/scales."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    if name == "adam":  # L2 in the gradient (coupled), as Adam defines it
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.95))
    if name == "lion":
        return Lion(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def lr_factor(step: int, name: str, *, total_steps: int, warmup_steps: int = 0, cycle_steps: int | None = None,
              min_factor: float = 0.0, cycle_mult: float = 1.0) -> float:  # fmt: skip
    """The learning-rate multiplier after ``step`` optimizer steps (pure, so resumable).

    Linear warmup over ``warmup_steps``, then: ``constant`` 1; ``warmup_cosine`` one cosine
    to ``min_factor`` at ``total_steps``; ``cosine_warm_restarts`` (SGDR) cosines of
    ``cycle_steps`` first, each next cycle ``cycle_mult`` times longer (PyTorch's T_0 and
    T_mult of CosineAnnealingWarmRestarts), restarting at 1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    t = step - warmup_steps
    if name == "warmup_cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(t / span, 1.0)
    elif name == "cosine_warm_restarts":
        cycle = max(cycle_steps or total_steps - warmup_steps, 1)
        while t >= cycle and cycle_mult > 1:  # skip whole cycles, each cycle_mult times longer
            t -= cycle
            cycle = max(round(cycle * cycle_mult), 1)
        progress = (t % cycle) / cycle
    else:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Optimizer, name: str = "warmup_cosine", *, total_steps: int, warmup_steps: int = 0,
                    cycle_steps: int | None = None, min_factor: float = 0.0,
                    cycle_mult: float = 1.0) -> LRScheduler:  # fmt: skip
    """A LambdaLR over :func:`lr_factor`, stepped once per optimizer step."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")

    def factor(step: int) -> float:
        return lr_factor(step, name, total_steps=total_steps, warmup_steps=warmup_steps,
                         cycle_steps=cycle_steps, min_factor=min_factor, cycle_mult=cycle_mult)  # fmt: skip

    return LambdaLR(optimizer, factor)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without an improvement larger than ``min_delta``."""

    patience: int
    min_delta: float = 0.0
    mode: str = "min"
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")

    def step(self, value: float, epoch: int) -> bool:
        """Record one epoch's monitored value; True when it is a new best."""
        self.history.append(float(value))
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        else:
            gain = (self.best - value) if self.mode == "min" else (value - self.best)
            improved = gain > self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "history": list(self.history)}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.history = state["bad_epochs"], list(state["history"])


# ---------------------------------------------------------------- epochs


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

    ``objective(model, video, audio, target) -> {"loss": total, term: value}`` defaults to plain
    BCE-with-logits; ``transform(batch) -> batch`` runs on the device before the forward pass.
    """
    ctx = ctx or StepContext()
    objective = objective or Objective()
    prefix = ctx.prefix or "train_step"
    scaler = ctx.scaler or make_scaler(device, ctx.precision)
    params = _params_of(optimizer)
    model.train()
    sums: dict[str, float] = {}
    n_samples, steps = 0, 0
    for batch in loader:
        batch = {**batch, **{k: batch[k].to(device, non_blocking=True) for k in ("video", "audio", "target")}}
        if transform is not None:
            batch = transform(batch)
        video, audio, target = batch["video"], batch["audio"], batch["target"]  # (B, 3, T, H, W), (B, 1, F, Tm), (B,)
        step = ctx.start_step + steps
        with autocast(device, ctx.precision):
            losses = _in_forward(model, objective, video, audio, target)
        values, batch_size = _step_values(losses, len(target), step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        grad_norm = _clip_and_step(optimizer, params, scaler, ctx.grad_clip)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        steps += 1
        n_samples += batch_size
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * batch_size
        if steps % ctx.log_every == 0:
            # "cls" alone equals "loss": log the terms only when the objective has several
            shown = values if len(values) > 2 else {"loss": values["loss"]}
            metrics = {f"{prefix}_{k}": v for k, v in shown.items()}
            log.log_metrics({**metrics, f"{prefix}_grad_norm": grad_norm, f"{prefix}_lr": lr}, step=step + 1)
    if steps == 0:
        raise ValueError("the training loader yielded no batches")
    return {**{k: v / n_samples for k, v in sums.items()}, "steps": float(steps), "samples": float(n_samples)}


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
    sums: dict[str, float] = {}
    n_samples, steps = 0, 0
    for batch in loader:
        video = batch["video"].to(device, non_blocking=True)  # (B, 3, T, H, W)
        audio = batch["audio"].to(device, non_blocking=True)  # (B, 1, F, Tm)
        step = ctx.start_step + steps
        with autocast(device, ctx.precision):
            losses = _in_forward(model, _pretrain_losses, video, audio)
        values, b = _step_values(losses, video.shape[0], step)
        optimizer.zero_grad(set_to_none=True)
        disc_optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"] + losses["disc_loss"]).backward()
        grad_norm = _clip_and_step(optimizer, gen_params, scaler, ctx.grad_clip)
        disc_norm = _clip_and_step(disc_optimizer, disc_params, scaler, ctx.grad_clip)
        scaler.update()  # once per iteration, after both optimizers (AMP multi-optimizer recipe)
        lr = optimizer.param_groups[0]["lr"]
        for sched in (scheduler, disc_scheduler):
            if sched is not None:
                sched.step()
        steps += 1
        n_samples += b
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * b
        if steps % ctx.log_every == 0:
            metrics = {f"{prefix}_{k}": v for k, v in values.items()}
            metrics.update({f"{prefix}_grad_norm": grad_norm, f"{prefix}_disc_grad_norm": disc_norm,
                            f"{prefix}_lr": lr})  # fmt: skip
            log.log_metrics(metrics, step=step + 1)
    if steps == 0:
        raise ValueError("the pretraining loader yielded no batches")
    return {**{k: v / n_samples for k, v in sums.items()}, "steps": float(steps), "samples": float(n_samples)}


class Predictions(NamedTuple):
    """Clip-level predictions of one split, in loader order."""

    video_ids: list[str]
    clips: np.ndarray  # (N,) int64
    y: np.ndarray  # (N,) int64, FAKE = 1
    p: np.ndarray  # (N,) float64, probability of FAKE


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: Iterable[dict], *, device: torch.device,
             precision: str = "fp32") -> Predictions:  # fmt: skip
    """Probabilities of FAKE for every clip of ``loader`` (model in eval mode)."""
    model.eval()
    ids: list[str] = []
    clips, ys, ps = [], [], []
    for batch in loader:
        with autocast(device, precision):
            logits = model(batch["video"].to(device), batch["audio"].to(device))  # (B,)
        ps.append(torch.sigmoid(logits.float()).cpu().numpy())
        ys.append(batch["target"].numpy())
        clips.append(batch["clip"].numpy())
        ids.extend(batch["video_id"])
    if not ids:
        raise ValueError("the evaluation loader yielded no batches")
    return Predictions(ids, np.concatenate(clips), np.concatenate(ys).astype(np.int64),
                       np.concatenate(ps).astype(np.float64))  # fmt: skip
