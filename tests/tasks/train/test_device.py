"""Device, precision, autocast and the grad scaler on CPU."""

from __future__ import annotations

import random

import pytest
import torch

from tasks.train.device import autocast, make_scaler, resolve_device, resolve_precision, seed_everything

CPU = torch.device("cpu")


def test_precision_resolution():
    assert resolve_precision("auto", CPU) == "fp32" and resolve_precision("bf16", CPU) == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("int8", CPU)


def test_cpu_runs_fp32_without_autocast_or_scaling():
    assert resolve_device("cpu") == CPU and resolve_device("auto").type in ("cpu", "cuda")
    with autocast(CPU, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not make_scaler(CPU, "fp16").is_enabled()


def test_seed_everything_repeats_python_and_torch_draws():
    seed_everything(3)
    first = (random.random(), torch.rand(2).tolist())
    seed_everything(3)
    assert (random.random(), torch.rand(2).tolist()) == first
