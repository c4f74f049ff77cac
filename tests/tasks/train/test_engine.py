"""The training engine with the real tiny AVFF on in-memory batches (CPU, seconds)."""

from __future__ import annotations

import math

import pytest
import torch

from avff_model import AVFF, get_config
from tasks.tracking.logger import InMemoryLogger
from tasks.train.engine import (
    EarlyStopping,
    Lion,
    NonFiniteLossError,
    StepContext,
    build_optimizer,
    build_scheduler,
    evaluate,
    lr_factor,
    pretrain_one_epoch,
    resolve_precision,
    seed_everything,
    train_one_epoch,
)

SMALL = dict(img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)
CPU = torch.device("cpu")


def _model(seed: int = 0) -> AVFF:
    torch.manual_seed(seed)
    return AVFF(get_config("tiny", **SMALL))


def _batches(n: int = 4, b: int = 8, seed: int = 0) -> list[dict]:
    """FAKE clips (odd rows) carry a bright square: a pattern the model can learn."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        video = torch.randn(b, 3, 4, 32, 32, generator=g) * 0.3  # (B, 3, T, H, W)
        target = (torch.arange(b) % 2).float()  # (B,)
        video[target.bool(), :, :, 8:20, 8:20] = 2.0
        out.append({"video": video, "audio": torch.randn(b, 1, 32, 32, generator=g), "target": target,
                    "video_id": [f"v{i}_{j}" for j in range(b)], "clip": torch.zeros(b, dtype=torch.int64)})  # fmt: skip
    return out


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


def test_optimizers_decay_only_matrices_and_unknown_names_raise():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    for name in ("adamw", "adam", "lion"):
        opt = build_optimizer(model.parameters(), name, lr=1e-3, weight_decay=0.1)
        decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
        assert [p.ndim for g in decayed for p in g["params"]] == [2]
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model.parameters(), "sgd", lr=1e-3)


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


def test_classification_loss_falls_and_metrics_carry_steps():
    seed_everything(0)
    model, batches, log = _model(), _batches(), InMemoryLogger()
    opt = build_optimizer(model.classifier_parameters(), "adamw", lr=1e-3, weight_decay=0.01)
    losses, step = [], 0
    for _ in range(4):
        out = train_one_epoch(model, batches, opt, device=CPU, log=log, ctx=StepContext(grad_clip=1.0, start_step=step))
        step += int(out["steps"])
        losses.append(out["loss"])
    assert losses[-1] < 0.5 * losses[0]
    assert [s for s, _ in log.metrics["train_step_loss"]] == list(range(1, 17))
    assert max(v for _, v in log.metrics["train_step_grad_norm"]) > 0
    preds = evaluate(model, batches, device=CPU)
    assert preds.p.shape == (32,) and preds.y.tolist() == [0, 1] * 16 and len(preds.video_ids) == 32
    assert preds.p[preds.y == 1].mean() > preds.p[preds.y == 0].mean() + 0.3


def test_pretraining_steps_generator_and_discriminator():
    seed_everything(0)
    model, log = _model(), InMemoryLogger()
    gen = build_optimizer(model.generator_parameters(), "adamw", lr=1e-3)
    disc = build_optimizer(model.discriminator_parameters(), "lion", lr=1e-4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = pretrain_one_epoch(model, _batches(2), gen, device=CPU, log=log, disc_optimizer=disc)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("video_disc.") for n in changed) and any(n.startswith("video_encoder.") for n in changed)
    assert not any(n.startswith("head.") for n in changed)  # the classifier is not part of stage 1
    assert set(out) >= {"loss", "disc_loss", "contrastive", "recon_video", "recon_audio", "adv_gen", "steps"}
    assert [s for s, _ in log.metrics["pretrain_step_disc_loss"]] == [1, 2]


def test_a_non_finite_loss_stops_training_at_once():
    model = _model()
    bad = _batches(1)
    bad[0]["video"][0, 0, 0, 0, 0] = float("nan")
    opt = build_optimizer(model.parameters(), "adamw", lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="step 7"):
        train_one_epoch(model, bad, opt, device=CPU, log=InMemoryLogger(), ctx=StepContext(start_step=7))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_precision_resolution():
    assert resolve_precision("auto", CPU) == "fp32" and resolve_precision("bf16", CPU) == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("int8", CPU)


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
