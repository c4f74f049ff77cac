"""Launch data-parallel training (:mod:`tasks.train.run_distributed`) on one node or a Ray cluster.

Both read ``world_size`` and ``ray_address`` from the run's :class:`tasks.train.settings.TrainSettings`:

- ``ray_address`` None: :func:`tasks.train.run_distributed.spawn`, ``world_size`` processes on
  this machine (one per GPU with nccl, CPU processes with gloo)
- ``ray_address`` set (``auto``, ``ray://host:10001``, ``host:6379``, or ``local`` for a
  Ray started here): Ray Train's TorchTrainer, ``world_size`` workers, one GPU each when
  ``use_gpu`` (the same Ray the ingest uses, so one cluster runs both). The output folder
  must be storage every worker reaches (s3://, or a shared mount), as for a resume.

Rank 0 logs to the flow's MLflow run through ``make_log`` (a picklable factory: it runs in
rank 0's process, e.g. :func:`rank0_logger` on the flow's tracker); the result is rank 0's :class:`tasks.train.run.TrainResult`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable

from storage import fs
from tasks.train.progress import ProgressLog
from tasks.tracking.logger import Logger
from tasks.tracking.tracker import Tracker
from tasks.train.run_distributed import spawn, train_rank
from tasks.train.run import TrainResult
from tasks.train.settings import TrainSettings


def rank0_logger(tracker: Tracker, run_id: str, global_batch: int) -> ProgressLog:
    """``tracker``'s logger on ``run_id`` built in the process that logs (rank 0), with progress lines on its stdout."""
    from tasks.train.finish import is_summary

    return ProgressLog(tracker.logger(run_id, summary=is_summary), functools.partial(print, flush=True),
                       global_batch=global_batch)  # fmt: skip


RESULT = "train_result.json"  # rank 0's TrainResult, handed from the Ray workers to the driver


def _ray_loop(config: dict) -> None:
    """One Ray Train worker: Ray has set up the process group; rank 0 writes the result beside the checkpoints."""
    settings = config["settings"]
    result = train_rank(settings, config["make_log"], backend=config["backend"], locked=config.get("locked", False))
    if result is not None:  # rank 0
        fs.atomic_write_bytes(fs.join(settings.output_dir, RESULT), json.dumps(dataclasses.asdict(result)).encode())


def train_on_ray(
    settings: TrainSettings, make_log: Callable[[], Logger] | None = None, locked: bool = False
) -> TrainResult:
    """``settings.world_size`` Ray Train workers, one GPU each when the cluster has GPUs; rank 0's result."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(address=None if settings.ray_address == "local" else settings.ray_address, log_to_driver=True)
    use_gpu = settings.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1
    trainer = TorchTrainer(
        _ray_loop,
        train_loop_config={"settings": settings, "make_log": make_log, "backend": "nccl" if use_gpu else "gloo",
                           "locked": locked},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=settings.world_size, use_gpu=use_gpu),
        run_config=RunConfig(name="train-avff"),
    )  # fmt: skip
    trainer.fit()
    return TrainResult(**json.loads(fs.read_bytes(fs.join(settings.output_dir, RESULT))))


def train_data_parallel(settings: TrainSettings, make_log: Callable[[], Logger] | None = None,
                        locked: bool = False) -> TrainResult:  # fmt: skip
    """``settings.world_size`` ranks (batch_size per rank), on this node or on Ray (``settings.ray_address``).

    ``locked``: the caller holds the output folder's lock (rank 0 does not take it again)."""
    world_size = settings.world_size
    if settings.ray_address is not None:
        return train_on_ray(settings, make_log, locked)
    import torch

    use_gpu = settings.device != "cpu" and torch.cuda.is_available()
    if use_gpu and world_size > torch.cuda.device_count():
        raise ValueError(f"world_size={world_size} but this machine has {torch.cuda.device_count()} GPUs")
    return spawn(settings, world_size, make_log, backend="nccl" if use_gpu else "gloo", locked=locked)
