"""What the training loops are handed: optimizers over parameter groups, learning-rate schedules,
early stopping.

- :func:`param_groups`     which parameters decay and which do not
- :func:`named_param_groups`  the same by name (tokens and embeddings do not decay), with per-prefix learning rates
- :func:`build_optimizer`  AdamW, Adam or :class:`Lion` over those groups
- :func:`lr_factor` / :func:`build_scheduler`  warmup + cosine / SGDR / constant, per optimizer step
- :class:`EarlyStopping`   patience on one monitored value, with a resumable state
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

OPTIMIZERS = ("adamw", "adam", "lion")
SCHEDULERS = ("cosine_warm_restarts", "warmup_cosine", "constant")


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


def param_groups(params: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """The trainable ``params`` in two optimizer groups: matrices decay, biases/norms/scales do not."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


# parameters named so (the last part of the name) are embeddings or tokens, not weights: no decay
NO_DECAY_NAMES = ("mask_token", "pos_embed", "cls", "modality")


def named(model: torch.nn.Module, params: Iterable[torch.nn.Parameter]) -> list[tuple[str, torch.nn.Parameter]]:
    """The (name, parameter) pairs of ``model`` for ``params``, in ``params``' order."""
    names = {p: n for n, p in model.named_parameters()}
    return [(names[p], p) for p in params]


def named_param_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float, *, lr: float,
                       lr_scales: Mapping[str, float] | None = None) -> list[dict]:  # fmt: skip
    """Trainable (name, parameter) pairs in groups of (learning rate, decay): highest rate first, decaying
    before not, so group 0 carries the base ``lr`` (what the loops log) when no scale exceeds 1.

    No decay for anything with fewer than 2 dimensions (biases, norm weights, scales) nor for
    :data:`NO_DECAY_NAMES` (mask tokens, position embeddings, [CLS]). A name starting with a
    prefix of ``lr_scales`` learns at ``lr * scale`` (the first prefix that matches), the rest
    at ``lr``: e.g. pretrained encoders at a tenth of the head's rate in stage 2.
    """
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        scale = next((s for prefix, s in (lr_scales or {}).items() if name.startswith(prefix)), 1.0)
        decays = p.ndim >= 2 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES
        group = groups.setdefault((scale, decays), {"params": [], "weight_decay": weight_decay if decays else 0.0,
                                                     "lr": lr * scale})  # fmt: skip
        group["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], not k[1]))]


def build_optimizer(groups: list[dict], name: str = "adamw", *, lr: float) -> Optimizer:
    """AdamW, Adam or Lion over parameter ``groups`` (see :func:`param_groups`), each keeping its own settings."""
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
