"""Where a training run executes: the one thing a data-parallel run does differently.

:class:`tasks.train.run.Run` is the same run in one process and on every rank of a process
group; it is given a :class:`RunWorld` that says how this process takes part:

- ``prepare``: refuse data the world cannot split; seed this process's own draws
- ``wrap``: the module that trains (the model itself, or the model behind DDP)
- ``train_batches``: a training loader as this process takes it (every rank the same number of steps)
- ``predictions``: a split's predictions as every process must see them (gathered across ranks)
- ``agree``: whether a number is the same everywhere (early stopping must not diverge)
- ``checkpoint_state`` / ``check_resume``: what a checkpoint records of the world, and what a
  resumed run must match (the global batch: the schedule counts optimizer steps)
- ``close``: leave the group before the main process alone scores the best checkpoint
- ``is_main``: this process logs, writes checkpoints and finishes the run

:class:`SingleProcess` is the plain run; :class:`tasks.train.run_distributed.Ranked` one rank's share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:  # run imports this module; the annotations alone need these
    from tasks.train.engine import Predictions
    from tasks.train.run import RunData


class RunWorld(Protocol):
    """How one process takes part in a run (module docstring)."""

    is_main: bool
    world_size: int

    def prepare(self, data: RunData, seed: int) -> None: ...

    def wrap(self, model: torch.nn.Module, device: torch.device) -> Any: ...

    def train_batches(self, loader: Iterable[dict]) -> Iterable[dict]: ...

    def predictions(self, predict: Callable[[], Predictions], split: str) -> Predictions: ...

    def agree(self, value: float) -> bool: ...

    def checkpoint_state(self, batch_size: int) -> dict[str, int]: ...

    def check_resume(self, state: dict, batch_size: int) -> None: ...

    def close(self) -> None: ...


class SingleProcess:
    """The whole run in this process: all data, nothing to gather, it logs and saves."""

    is_main = True
    world_size = 1

    def prepare(self, data: RunData, seed: int) -> None:
        pass

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return model

    def train_batches(self, loader: Iterable[dict]) -> Iterable[dict]:
        return loader

    def predictions(self, predict: Callable[[], Predictions], split: str) -> Predictions:
        return predict()

    def agree(self, value: float) -> bool:
        return True

    def checkpoint_state(self, batch_size: int) -> dict[str, int]:
        return {}

    def check_resume(self, state: dict, batch_size: int) -> None:
        pass

    def close(self) -> None:
        pass
