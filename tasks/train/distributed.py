"""torch.distributed primitives of data-parallel training (no Ray, no Prefect, no MLflow).

One process per device ("rank"), all holding the same model; each reads its own shards and
DistributedDataParallel averages gradients during ``backward``. This module holds the pieces
:mod:`tasks.train.run_distributed` assembles:

- :class:`World` / :func:`init_world` / :func:`close_world`: rank, world size, local device;
  the process group from the usual environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
  ``MASTER_PORT``, ``LOCAL_RANK``: what torchrun, Ray Train and :func:`tasks.train.run_distributed.spawn` set)
- :class:`DataParallel`: the model behind DDP, with *any* loss function run inside DDP's
  forward (AVFF's ``pretrain_losses`` and stage-2 objectives are methods, not ``forward``)
- :func:`even_batches`: every rank takes the same number of steps (ranks whose shards hold
  more samples drop their tail), or DDP would wait forever on the rank that ran out
- :func:`all_mean`: per-step loss values averaged over ranks, weighted by batch size
- :func:`gather_predictions`: every rank's evaluation predictions on every rank, so metrics
  and early-stopping decisions are computed from the same numbers everywhere
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class World:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current_world() -> World:
    """The initialised process group's world, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def resolve_backend(backend: str, device: str = "auto") -> str:
    """``auto``: nccl when the ranks train on CUDA, gloo on CPU."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    return "nccl" if cuda else "gloo"


def init_world(backend: str = "auto", *, device: str = "auto", timeout_s: float = 600.0,
               init_method: str | None = None) -> World:  # fmt: skip
    """Join the process group described by the environment (idempotent); pin this rank's CUDA device.

    ``init_method`` (e.g. ``file:///tmp/x``, one node) replaces MASTER_ADDR/MASTER_PORT; RANK and
    WORLD_SIZE still come from the environment.
    """
    if dist.is_initialized():
        return current_world()
    backend = resolve_backend(backend, device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # "cuda" below means this rank's device
    timeout = datetime.timedelta(seconds=timeout_s)
    if init_method is None:
        dist.init_process_group(backend, timeout=timeout)
    else:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size, timeout=timeout)
    return current_world()


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def close_world() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _Dispatch(torch.nn.Module):
    """DDP wraps ``forward``: this one runs ``fn(model, *args)``, so a method's graph gets DDP's hooks."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.model, *args)


def _pretrain_losses(model, video, audio):
    return model.pretrain_losses(video, audio)


def _forward(model, video, audio, mouth=None, lips=None):
    return model(video, audio, mouth, lips)


class DataParallel:
    """An AVFF under DistributedDataParallel that the single-process engine uses unchanged.

    ``pretrain_losses`` and ``run_in_forward(fn, ...)`` go through DDP (gradients averaged over
    ranks in ``backward``); calls without gradients (evaluation) go straight to the model, so
    ranks evaluating different numbers of batches never wait on each other. Everything else
    (``state_dict``, ``load_state_dict``, parameter groups) is the wrapped model's own, so
    checkpoints hold the same keys as single-process ones.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.module = model
        # find_unused_parameters: each stage leaves parts of AVFF unused (the classifier head in
        # stage 1, decoders and discriminators in stage 2). broadcast_buffers off: AVFF's buffers are
        # constants (position embeddings, slice ids), but for the optional signal_norm="batch" FeatureNorm,
        # whose running statistics each rank keeps from its own batches (rank 0's are checkpointed).
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        self.ddp = DistributedDataParallel(_Dispatch(model), device_ids=ids, find_unused_parameters=True,
                                           broadcast_buffers=False)  # fmt: skip

    def run_in_forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(model, *args)`` inside DDP's forward (its result's backward averages gradients)."""
        if torch.is_grad_enabled():
            return self.ddp(fn, *args)
        return fn(self.module, *args)

    def pretrain_losses(self, video: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.run_in_forward(_pretrain_losses, video, audio)

    def __call__(self, video: torch.Tensor, audio: torch.Tensor, mouth: torch.Tensor | None = None,
                 lips: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        return self.run_in_forward(_forward, video, audio, mouth, lips)

    def train(self, mode: bool = True) -> DataParallel:
        self.ddp.train(mode)
        return self

    def eval(self) -> DataParallel:
        return self.train(False)

    def __getattr__(self, name: str) -> Any:  # only called for names not found above
        return getattr(self.module, name)


def even_batches(loader: Iterable[dict]) -> Iterator[dict]:
    """Batches of ``loader`` while *every* rank still has one (one tiny all-reduce per step)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        yield from loader
        return
    it = iter(loader)
    while True:
        batch = next(it, None)
        have = torch.tensor([0 if batch is None else 1], device=_collective_device())
        dist.all_reduce(have, op=dist.ReduceOp.MIN)
        if int(have.item()) == 0:
            return
        yield batch


def all_mean(values: dict[str, torch.Tensor], weight: int) -> tuple[dict[str, float], int]:
    """Batch-size-weighted mean of scalar ``values`` over ranks, and the summed weight.

    Single process: the values themselves. The keys must be the same on every rank.
    """
    keys = sorted(values)
    local = torch.stack([values[k].detach().float().reshape(()) for k in keys])  # (K,)
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return {k: float(v) for k, v in zip(keys, local.tolist())}, weight
    buf = torch.cat([local.cpu() * weight, torch.tensor([float(weight)])]).to(_collective_device())  # (K+1,)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    total = float(buf[-1])
    return {k: float(v) / total for k, v in zip(keys, buf[:-1].tolist())}, int(round(total))


def gather_predictions(preds):
    """Every rank's predictions (a :class:`tasks.train.engine.Predictions`), concatenated in rank order."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return preds
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tuple(preds))
    ids = [v for p in parts for v in p[0]]
    arrays = [np.concatenate([np.asarray(p[i]) for p in parts]) for i in (1, 2, 3)]
    faces = np.concatenate([np.zeros(len(p[0]), np.int64) if p[4] is None else np.asarray(p[4]) for p in parts])
    return type(preds)(ids, arrays[0].astype(np.int64), arrays[1].astype(np.int64), arrays[2].astype(np.float64),
                       faces.astype(np.int64))  # fmt: skip


def same_everywhere(value: float) -> bool:
    """True when ``value`` is identical on every rank (NaN counts as equal to NaN)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return True
    values: list = [None] * dist.get_world_size()
    dist.all_gather_object(values, float(value))
    return all(v == values[0] or (v != v and values[0] != values[0]) for v in values)
