"""Data-parallel training: :func:`tasks.train.run.run_training` on every rank of a process group.

Each rank runs the same :class:`tasks.train.run.Run`, given the world :class:`Ranked` (its model
behind a :class:`tasks.train.distributed.DataParallel`):

- shards split per rank (``urls[rank::world]``, :mod:`tasks.train.data`) then per loader
  worker; every rank takes the same number of steps (:func:`tasks.train.distributed.even_batches`)
- both stages under DDP: stage 1's generator and discriminator optimizers step after one
  backward whose gradients DDP has averaged, so every rank keeps identical weights
- per-step losses averaged over ranks before they are logged; validation predictions
  gathered from all ranks, so metrics and early stopping are the same numbers everywhere
  (checked: a rank that disagrees raises)
- rank 0 alone logs (MLflow), writes checkpoints, and, once the process group is closed,
  scores the best checkpoint on val and test and writes the report

``batch_size`` is per rank (global batch = world_size x batch_size); ``samples_per_epoch``
is global, split evenly across ranks. Resuming needs the same global batch as the checkpoint
(any world size whose product with the batch size matches): a different one is refused,
because the learning-rate schedule is counted in optimizer steps.

Launchers: :func:`spawn` (torch.multiprocessing, one node) here; torchrun runs
:func:`train_rank` through ``python -m tasks.train.run_distributed``; Ray Train's TorchTrainer in
``flows/train_distributed.py``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from tasks.ingest.folds import POOL
from tasks.tracking.logger import Logger
from tasks.train import distributed as D
from tasks.train.data import shard_urls
from tasks.train.engine import Predictions
from tasks.train.run import RunData, TrainResult, run_training
from tasks.train.settings import TrainSettings


class SilentLogger:
    """What ranks other than 0 log to: nothing."""

    def log_params(self, params) -> None: ...

    def log_metrics(self, metrics, step: int) -> None: ...

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags) -> None: ...

    def log_table(self, rows, artifact_file: str) -> None: ...


def per_rank_settings(cfg: TrainSettings, world_size: int) -> TrainSettings:
    """``samples_per_epoch`` (global) -> this rank's share; refuses a share that is not whole."""
    if cfg.samples_per_epoch is None:
        return cfg
    if cfg.samples_per_epoch % world_size:
        raise ValueError(f"samples_per_epoch={cfg.samples_per_epoch} must be a multiple of world_size={world_size}")
    return cfg.replace(samples_per_epoch=cfg.samples_per_epoch // world_size)


class Ranked:
    """One rank's share of a run (module docstring): the :class:`tasks.train.world.RunWorld` of a process
    group that ``world`` describes and that is already initialised."""

    def __init__(self, world: D.World):
        self.world = world
        self.is_main, self.world_size = world.is_main, world.world_size

    def prepare(self, data: RunData, seed: int) -> None:
        """Every rank needs a shard of each role it reads; ranks draw their own masks and augmentations."""
        for split in (POOL,) if data.view is not None else ("train", "val"):
            n = len(shard_urls(data.layout, split))
            if n < self.world_size:
                raise ValueError(f"{split} has {n} shards for {self.world_size} ranks: every rank needs at least one "
                                 f"(write smaller shards, or use fewer ranks)")  # fmt: skip
        if self.world.rank:  # masks and other draws differ across ranks; weights are rank 0's (DDP broadcast)
            torch.manual_seed(seed + 1_000_003 * self.world.rank)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> D.DataParallel:
        return D.DataParallel(model, device)

    def train_batches(self, loader: Iterable[dict]) -> Iterable[dict]:
        return D.even_batches(loader)

    def predictions(self, predict: Callable[[], Predictions], split: str) -> Predictions:
        """Every rank's predictions of ``split``, on every rank."""
        try:
            mine = predict()
        except ValueError:  # this rank's shards hold none of the kept videos
            mine = Predictions([], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
        preds = D.gather_predictions(mine)
        if not preds.video_ids:
            raise ValueError(f"no {split} predictions on any rank")
        return preds

    def agree(self, value: float) -> bool:
        return D.same_everywhere(value)

    def checkpoint_state(self, batch_size: int) -> dict[str, int]:
        return {"world_size": self.world_size, "global_batch": batch_size * self.world_size}

    def check_resume(self, state: dict, batch_size: int) -> None:
        """A resumed run keeps the checkpoint's global batch: the schedule counts optimizer steps."""
        saved, now = state.get("global_batch"), batch_size * self.world_size
        if saved is not None and saved != now:
            raise ValueError(
                f"resume_from was trained with a global batch of {saved} ({state.get('world_size')} ranks x "
                f"{saved // max(state.get('world_size') or 1, 1)}); now {self.world_size} x "
                f"{batch_size} = {now}. Keep world_size x batch_size equal to resume."
            )

    def close(self) -> None:
        """Leave the group: rank 0 then scores the best checkpoint on all of val and test, alone."""
        D.close_world()


def train_rank(cfg: TrainSettings, make_log: Callable[[], Logger] | None = None, *, backend: str = "auto",
               timeout_s: float = 600.0, init_method: str | None = None, locked: bool = False) -> TrainResult | None:  # fmt: skip
    """One rank's run, from the environment's process group (torchrun, Ray Train, :func:`spawn`).

    Rank 0 takes the output folder's lock (unless the caller holds it: ``locked``), logs through
    ``make_log()`` and returns the result; the others run silent and return None.
    """
    world = D.init_world(backend, device=cfg.device, timeout_s=timeout_s, init_method=init_method)
    try:
        cfg = per_rank_settings(cfg, world.world_size)

        log = make_log() if world.is_main and make_log is not None else SilentLogger()
        result = run_training(cfg, log=log, world=Ranked(world), locked=locked)
        # every rank leaves together: a rank that tore gloo down while rank 0 still finished its run was seen
        # to abort ("terminate called without an active exception"); a failed rank skips this and is ended
        D.barrier()
        return result if world.is_main else None
    finally:
        D.close_world()


def _spawned(rank: int, world_size: int, rendezvous: str, cfg: TrainSettings, make_log, backend: str,
             result: str, locked: bool = False) -> None:  # fmt: skip
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size)})  # fmt: skip
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    print(f"rank {rank}/{world_size} pid {os.getpid()}", file=sys.stderr, flush=True)
    out = train_rank(cfg, make_log, backend=backend, init_method=f"file://{rendezvous}", locked=locked)
    if rank == 0:
        torch.save(dataclasses.asdict(out), result)


def spawn(cfg: TrainSettings, world_size: int, make_log: Callable[[], Logger] | None = None, *,
          backend: str = "auto", locked: bool = False) -> TrainResult:  # fmt: skip
    """``world_size`` ranks on this machine (one per GPU, or CPU processes with gloo); rank 0's result.

    ``make_log`` must be picklable (a module-level function or a partial of one): it runs in rank 0.
    When any rank dies, the others are terminated and this raises; the last checkpoint resumes.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    with tempfile.TemporaryDirectory() as tmp:
        # a file rendezvous on one node: no TCP port to pick, none another process can take first
        result, rendezvous = str(Path(tmp) / "result.pt"), str(Path(tmp) / "rendezvous")
        mp.spawn(_spawned, args=(world_size, rendezvous, cfg, make_log, backend, result, locked), nprocs=world_size,
                 join=True)  # fmt: skip
        return TrainResult(**torch.load(result, weights_only=False))
