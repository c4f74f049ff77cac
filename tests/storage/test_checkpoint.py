"""Checkpoints: exact round trips, atomic pointers, and refusal of code-carrying pickles."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from storage.checkpoint import (
    STATE,
    WEIGHTS,
    CheckpointError,
    CheckpointStore,
    capture_rng,
    load_checkpoint,
    load_weights,
    restore_rng,
    save_checkpoint,
)
from tasks.train.optim import build_optimizer, build_scheduler, param_groups


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))


def _trained():
    model = _model()
    opt = build_optimizer(param_groups(model.parameters(), 0.1), "adamw", lr=1e-2)
    sched = build_scheduler(opt, "warmup_cosine", total_steps=10, warmup_steps=2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    model, opt, sched = _trained()
    state = {"optimizers": {"m": opt.state_dict()}, "schedulers": {"m": sched.state_dict()}, "rng": capture_rng(),
             "epoch": 3, "history": [{"epoch": 1, "stage": "classify", "val_loss": float("nan")}]}  # fmt: skip
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(str(tmp_path / "ck"), model, {"width": 8}, state)

    ckpt = load_checkpoint(str(tmp_path / "ck"))
    assert ckpt.config == {"width": 8} and ckpt.state["epoch"] == 3
    fresh = _model()
    fresh.load_state_dict(ckpt.weights)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    opt2 = build_optimizer(param_groups(fresh.parameters(), 0.1), "adamw", lr=1e-2)
    opt2.load_state_dict(ckpt.state["optimizers"]["m"])
    sched2 = build_scheduler(opt2, "warmup_cosine", total_steps=10, warmup_steps=2)
    sched2.load_state_dict(ckpt.state["schedulers"]["m"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    restore_rng(ckpt.state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class _Exploit:
    """A pickle payload that creates a marker file when unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_pickle_posing_as_a_checkpoint_is_refused(tmp_path):
    model, _, _ = _trained()
    ck = tmp_path / "ck"
    save_checkpoint(str(ck), model, {}, {"epoch": 1})
    marker = tmp_path / "pwned"
    # the payload executes on a plain pickle.load: prove it, then plant it as state.pt
    pickle.loads(pickle.dumps(_Exploit(str(tmp_path / "control")))).close()
    assert (tmp_path / "control").exists()
    (ck / STATE).write_bytes(pickle.dumps({"format": 1, "state": _Exploit(str(marker))}))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(str(ck))
    assert not marker.exists()
    # the same payload inside torch.save's zip container is refused too
    torch.save({"format": 1, "state": _Exploit(str(marker))}, ck / STATE)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(str(ck))
    assert not marker.exists()


def test_weights_from_another_save_are_detected(tmp_path):
    a, _, _ = _trained()
    save_checkpoint(str(tmp_path / "a"), a, {}, {})
    save_checkpoint(str(tmp_path / "b"), _model(), {}, {})
    # an interrupted save: new weights landed, the old state.pt still names the old hash
    (tmp_path / "a" / WEIGHTS).write_bytes((tmp_path / "b" / WEIGHTS).read_bytes())
    with pytest.raises(CheckpointError, match="does not belong"):
        load_checkpoint(str(tmp_path / "a"))
    with pytest.raises(CheckpointError, match="not a safetensors"):
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / WEIGHTS).write_bytes(b"\x00" * 16)
        load_weights(str(tmp_path / "c"))


def test_store_pointers_resolve_and_prune(tmp_path):
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    model = _model()
    store.save("epoch-0001", model, {"k": 1}, {"epoch": 1}, ("last", "best"))
    store.save("epoch-0002", model, {"k": 1}, {"epoch": 2}, ("last",))
    store.save("epoch-0003", model, {"k": 1}, {"epoch": 3}, ("last",))
    store.prune()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best.json", "epoch-0001", "epoch-0003", "last.json"]
    assert load_checkpoint(str(tmp_path / "checkpoints" / "best.json")).state["epoch"] == 1
    assert load_checkpoint(str(tmp_path)).state["epoch"] == 3  # an output dir resolves to its last
    assert load_weights(str(tmp_path))[1] == {"k": 1}
    with pytest.raises(CheckpointError, match="invalid checkpoint name"):
        store.mark("last", "../../etc")
    (tmp_path / "checkpoints" / "last.json").write_text('{"checkpoint": "../outside"}')
    with pytest.raises(CheckpointError, match="invalid checkpoint name"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "nowhere"))
