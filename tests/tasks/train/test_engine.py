"""The training engine with the real tiny AVFF on in-memory batches (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from avff_model import AVFF, get_config
from tasks.tracking.logger import InMemoryLogger
from tasks.train.device import seed_everything
from tasks.train.engine import NonFiniteLossError, StepContext, evaluate, pretrain_one_epoch, train_one_epoch
from tasks.train.optim import build_optimizer, param_groups

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


def test_classification_loss_falls_and_metrics_carry_steps():
    seed_everything(0)
    model, batches, log = _model(), _batches(), InMemoryLogger()
    opt = build_optimizer(param_groups(model.classifier_parameters(), 0.01), "adamw", lr=1e-3)
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
    gen = build_optimizer(param_groups(model.generator_parameters(), 0.0), "adamw", lr=1e-3)
    disc = build_optimizer(param_groups(model.discriminator_parameters(), 0.0), "lion", lr=1e-4)
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
    opt = build_optimizer(param_groups(model.parameters(), 0.0), "adamw", lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="step 7"):
        train_one_epoch(model, bad, opt, device=CPU, log=InMemoryLogger(), ctx=StepContext(start_step=7))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_batchs_mouth_boxes_and_lips_reach_the_sync_branch_in_training_and_evaluation():
    """A batch's "mouth" (B, 4) and "lips" (B, T, 2) go to the model in train_one_epoch (through the
    objective) and in evaluate: the evaluated probabilities are the model's own forward with those
    boxes and lips, not the template's box without lips."""
    seed_everything(0)
    model, batches, log = _model(), _batches(2), InMemoryLogger()
    t = batches[0]["video"].shape[2]
    for batch in batches:
        batch["mouth"] = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).repeat(8, 1)  # (B, 4): top-left quarter
        batch["lips"] = torch.rand(8, t, 2, generator=torch.Generator().manual_seed(1))  # (B, T, 2)
    seen = []

    def objective(m, video, audio, target, mouth=None, lips=None):
        seen.append((mouth, lips))
        logits = m(video, audio, mouth, lips)
        return {"loss": torch.nn.functional.binary_cross_entropy_with_logits(logits, target)}

    opt = build_optimizer(param_groups(model.classifier_parameters(), 0.0), "adamw", lr=1e-3)
    train_one_epoch(model, batches, opt, device=CPU, log=log, objective=objective)
    assert len(seen) == 2 and all(torch.equal(m, batches[0]["mouth"]) and torch.equal(lp, batches[0]["lips"])
                                  for m, lp in seen)  # fmt: skip
    preds = evaluate(model, batches, device=CPU)
    with torch.no_grad():
        own = torch.cat([torch.sigmoid(model(b["video"], b["audio"], b["mouth"], b["lips"])) for b in batches])
        no_lips = torch.cat([torch.sigmoid(model(b["video"], b["audio"], b["mouth"])) for b in batches])
        template = torch.cat([torch.sigmoid(model(b["video"], b["audio"])) for b in batches])
    assert torch.allclose(torch.from_numpy(preds.p).float(), own, atol=1e-6)
    assert not torch.allclose(own, no_lips) and not torch.allclose(no_lips, template)
