"""Optimizers, parameter groups, learning-rate schedules and early stopping (CPU, milliseconds)."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.train.optim import (
    EarlyStopping, Lion, build_optimizer, build_scheduler, lr_factor, named, named_param_groups, param_groups,
)  # fmt: skip


def test_lion_follows_the_published_update_rule():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    grads = [torch.tensor([0.3, -0.1, 0.0]), torch.tensor([-1.0, 0.2, 0.4])]
    ref, m = p.detach().clone(), torch.zeros(3)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        ref = ref * (1 - 0.1 * 0.5) - 0.1 * torch.sign(0.9 * m + 0.1 * g)
        m = 0.99 * m + 0.01 * g
    assert torch.allclose(p.detach(), ref)


def test_param_groups_decay_only_matrices_and_skip_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model[1].bias.requires_grad_(False)
    groups = param_groups(model.parameters(), 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [[tuple(p.shape) for p in g["params"]] for g in groups] == [[(4, 3)], [(4,), (4,)]]
    assert [g["weight_decay"] for g in param_groups(model[1].parameters(), 0.1)] == [0.0]  # no empty group


def test_optimizers_keep_the_groups_settings_and_unknown_names_raise():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    for name in ("adamw", "adam", "lion"):
        opt = build_optimizer(param_groups(model.parameters(), 0.1), name, lr=1e-3)
        decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
        assert [p.ndim for g in decayed for p in g["params"]] == [2]
        assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(param_groups(model.parameters(), 0.0), "sgd", lr=1e-3)


def test_schedules_warm_up_decay_and_restart():
    kw = dict(total_steps=110, warmup_steps=10)
    assert lr_factor(0, "warmup_cosine", **kw) == pytest.approx(0.1)
    assert lr_factor(9, "warmup_cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(60, "warmup_cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(110, "warmup_cosine", **kw) == pytest.approx(0.0)
    assert lr_factor(50, "constant", **kw) == 1.0
    restarts = [lr_factor(s, "cosine_warm_restarts", cycle_steps=20, **kw) for s in (10, 29, 30)]
    assert restarts[0] == 1.0 and restarts[1] < 0.01 and restarts[2] == 1.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, "warmup_cosine", **kw)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[9] == lrs[10] == pytest.approx(2.0) and lrs[11] < 2.0
    with pytest.raises(ValueError, match="unknown scheduler"):
        build_scheduler(opt, "step", total_steps=10)


def test_warm_restart_cycles_grow_like_pytorchs_t_mult():
    """cycle_steps / cycle_mult are CosineAnnealingWarmRestarts' T_0 / T_mult (the reference report's 10 / 2)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2)
    expected = []
    for _ in range(30):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    ours = [lr_factor(s, "cosine_warm_restarts", total_steps=30, cycle_steps=3, cycle_mult=2) for s in range(30)]
    assert ours == pytest.approx(expected, abs=1e-9)
    assert [s for s in range(1, 30) if ours[s] == 1.0] == [3, 9, 21]  # cycles of 3, 6, 12 steps


def test_early_stopping_counts_epochs_without_real_improvement():
    es = EarlyStopping(patience=2, min_delta=0.01, mode="min")
    seen = []
    for epoch, v in enumerate([1.0, 0.8, 0.795, 0.9, 0.7, 0.71, 0.705], start=1):
        seen.append(es.step(v, epoch))
        if es.should_stop:
            break
    assert seen == [True, True, False, False] and es.best == 0.8 and es.best_epoch == 2
    restored = EarlyStopping(patience=2, mode="min")
    restored.load_state_dict(es.state_dict())
    assert restored.should_stop and restored.best_epoch == 2
    es_max = EarlyStopping(patience=1, mode="max")
    assert es_max.step(0.5, 1) and not es_max.step(math.nan, 2) and es_max.should_stop


def test_named_param_groups_scale_encoder_lr_and_spare_tokens_norms_and_biases_from_decay():
    from avff_model import AVFF, get_config
    from avff_model.model import ENCODER_PREFIXES

    model = AVFF(get_config("tiny", fusion="attention"))
    params = model.classifier_parameters()
    groups = named_param_groups(named(model, params), 0.05, lr=1e-3, lr_scales=dict.fromkeys(ENCODER_PREFIXES, 0.1))
    where = {n: (g["lr"], g["weight_decay"]) for g in groups for n, p in named(model, g["params"])}
    assert sorted(where) == sorted(n for n, _ in named(model, params))  # every parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(params)
    assert where["video_encoder.blocks.0.attn.qkv.weight"] == pytest.approx((1e-4, 0.05))
    assert where["a2v.token_map.weight"] == pytest.approx((1e-4, 0.05))
    assert where["video_encoder.mask_token"] == pytest.approx((1e-4, 0.0))
    assert where["audio_encoder.blocks.0.norm1.weight"] == pytest.approx((1e-4, 0.0))
    assert where["head.cls"] == where["head.modality"] == where["head.out.bias"] == pytest.approx((1e-3, 0.0))
    assert where["head.out.weight"] == pytest.approx((1e-3, 0.05))
    opt = build_optimizer(groups, "adamw", lr=1e-3)
    got = [v for g in opt.param_groups for v in (g["lr"], g["weight_decay"])]
    assert got == pytest.approx([1e-3, 0.05, 1e-3, 0.0, 1e-4, 0.05, 1e-4, 0.0])  # the base rate first: what loops log
