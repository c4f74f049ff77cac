"""Live progress lines from the metrics training logs anyway (loss, samples/s, ETA).

:class:`ProgressLog` wraps the run's :class:`tasks.tracking.logger.Logger`: everything passes through
unchanged, and from the per-step metrics (``pretrain_step_loss``, ``train_step_loss``) it
writes, at most every ``every_s`` seconds, a line such as::

    classify epoch 3 step 120 | loss 0.4132 | 88.1 samples/s | epoch ETA 0:41

The ETA is for the current epoch; it appears once the stage's first epoch has shown how many
steps an epoch takes. Each epoch's summary (``train_loss``, the monitored val metric) gets a
line too. ``emit`` is the caller's: the Prefect run logger, ``print``, a progress bar's write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tasks.tracking.logger import Logger

_STAGES = {"pretrain_step_loss": "pretrain", "train_step_loss": "classify"}
_EPOCH_KEYS = ("pretrain_loss", "train_loss", "val_loss", "val_video_auc", "val_video_log_loss")


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLog:
    """A Logger that also reports progress through ``emit`` (module docstring)."""

    def __init__(self, inner: Logger, emit: Callable[[str], None], *, global_batch: int, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.inner, self.emit, self.batch, self.every_s, self.clock = inner, emit, global_batch, every_s, clock
        self.stage: str | None = None
        self.epoch = 1
        self.steps_in_epoch = 0
        self.steps_per_epoch: dict[str, int] = {}
        self.mark: tuple[float, int] | None = None  # (time, steps in epoch) of the last line
        self.epoch_start = 0.0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        for key, stage in _STAGES.items():
            if key in metrics:
                self._step(stage, float(metrics[key]))
        if any(k in metrics for k in ("pretrain_loss", "train_loss")):
            self._epoch_done(metrics)

    def _step(self, stage: str, loss: float) -> None:
        now = self.clock()
        self.steps_in_epoch += 1
        if stage != self.stage:  # a stage's first step: its time is the origin (the wait before it is start-up)
            self.stage, self.steps_in_epoch, self.mark, self.epoch_start = stage, 1, (now, 1), now
        t0, s0 = self.mark or (now, 0)
        if now - t0 < self.every_s:
            return
        rate = (self.steps_in_epoch - s0) * self.batch / max(now - t0, 1e-9)
        line = f"{stage} epoch {self.epoch} step {self.steps_in_epoch} | loss {loss:.4f} | {rate:.1f} samples/s"
        total = self.steps_per_epoch.get(stage)
        if total and rate > 0:
            line += f" | epoch ETA {_clock(max(total - self.steps_in_epoch, 0) * self.batch / rate)}"
        self.emit(line)
        self.mark = (now, self.steps_in_epoch)

    def _epoch_done(self, metrics: Mapping[str, float]) -> None:
        now = self.clock()
        if self.stage is not None:
            self.steps_per_epoch.setdefault(self.stage, self.steps_in_epoch)
        shown = " | ".join(f"{k} {float(metrics[k]):.4f}" for k in _EPOCH_KEYS if k in metrics)
        self.emit(f"{self.stage or 'epoch'} epoch {self.epoch} done in {_clock(now - self.epoch_start)} | {shown}")
        self.epoch += 1
        self.steps_in_epoch, self.mark, self.epoch_start = 0, (now, 0), now

    def __getattr__(self, name: str) -> Any:  # log_params, log_artifact, set_tags, log_table, run_id
        return getattr(self.inner, name)
