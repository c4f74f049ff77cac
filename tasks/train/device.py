"""Where and how precisely training runs: seeding, the device, autocast precision, the grad scaler."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


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
    """``auto`` -> the first CUDA device when there is one, else the CPU; any other name as torch spells it."""
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
    """Autocast to bf16/fp16 on CUDA for a resolved ``precision``; a no-op context otherwise."""
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def make_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 on CUDA (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision == "fp16")
