"""Stage-2 objectives: focal, class weights, label smoothing, auxiliary and contrastive terms (CPU, ms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avff_model import AVFF, get_config
from tasks.train.objective import Objective, bce, focal, get_loss, list_losses, pos_weight_from_labels, smooth_targets

SMALL = dict(img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)


def _logits_targets(n: int = 64):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(n, generator=g)
    target = torch.rand(n, generator=g).round()
    target[::5] = 0.3  # soft targets (Mixup/CutMix) too
    return logits, target


@pytest.mark.parametrize("pos_weight", [None, 2.5])
def test_focal_with_gamma_zero_equals_bce(pos_weight):
    logits, target = _logits_targets()
    weight = None if pos_weight is None else torch.tensor(pos_weight)
    ref = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=weight)
    assert torch.allclose(focal(logits, target, gamma=0.0, pos_weight=pos_weight), ref, atol=1e-7)
    assert torch.allclose(bce(logits, target, pos_weight=pos_weight), ref, atol=1e-7)


def test_focal_down_weights_easy_examples_by_one_minus_p_t_to_the_gamma():
    logits = torch.tensor([4.0, 0.0, -4.0])  # confident right, unsure, confident wrong (all FAKE)
    target = torch.ones(3)
    p = torch.sigmoid(logits)
    assert torch.allclose(focal(logits, target, gamma=2.0), bce(logits, target) * (1 - p) ** 2)
    ratio = focal(logits, target, gamma=2.0) / bce(logits, target)
    assert ratio[0] < 0.001 and ratio[2] > 0.95  # the easy one nearly vanishes, the hard one stays


def test_class_weights_follow_the_training_prior():
    for n_real, n_fake in [(80, 20), (20, 80), (50, 50), (3, 997)]:
        y = np.array([0] * n_real + [1] * n_fake)
        w = pos_weight_from_labels(y)
        prior = n_fake / (n_real + n_fake)
        assert w == pytest.approx((1 - prior) / prior)
        assert n_fake * w == pytest.approx(n_real)  # FAKE and REAL carry equal total weight
    with pytest.raises(ValueError, match="both classes"):
        pos_weight_from_labels(np.ones(5))
    # the weight multiplies only the FAKE term of the loss
    logits = torch.tensor([0.3, -0.2])
    target = torch.tensor([1.0, 0.0])
    assert torch.allclose(bce(logits, target, pos_weight=4.0), bce(logits, target) * torch.tensor([4.0, 1.0]))


def test_label_smoothing_targets():
    assert torch.allclose(smooth_targets(torch.tensor([0.0, 1.0, 0.5]), 0.1), torch.tensor([0.05, 0.95, 0.5]))
    logits, target = _logits_targets(8)
    model = _FixedLogits(logits)
    out = Objective(label_smoothing=0.2)(model, None, None, target)
    assert torch.isclose(out["loss"], F.binary_cross_entropy_with_logits(logits, target * 0.8 + 0.1))
    with pytest.raises(ValueError, match="label_smoothing"):
        Objective(label_smoothing=1.0)


def test_unknown_losses_raise_and_the_registry_lists_them():
    assert list_losses() == ["bce", "focal"] and get_loss("focal") is focal
    with pytest.raises(KeyError, match="bce, focal"):
        Objective(loss="hinge")


class _FixedLogits(torch.nn.Module):
    """A stand-in with AVFF's stage-2 interface returning given logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward_with_features(self, video, audio, features=(), mouth=None, lips=None):
        return self.logits, {}


def _model(**kw) -> AVFF:
    torch.manual_seed(0)
    return AVFF(get_config("tiny", **SMALL, **kw))


def _inputs(b: int = 6):
    g = torch.Generator().manual_seed(1)
    video = torch.randn(b, 3, 4, 32, 32, generator=g)  # (B, 3, T, H, W)
    audio = torch.randn(b, 1, 32, 32, generator=g)  # (B, 1, F, Tm)
    return video, audio, (torch.arange(b) % 2).float()


def test_auxiliary_unimodal_losses_add_with_their_weight_and_train_their_heads():
    model = _model(aux_heads=True)
    video, audio, target = _inputs()
    out = Objective(aux_weight=0.5)(model, video, audio, target)
    assert set(out) == {"loss", "cls", "aux_video", "aux_audio"}
    assert torch.isclose(out["loss"], out["cls"] + 0.5 * (out["aux_video"] + out["aux_audio"]))
    aux = model.aux_logits(model.forward_features(video, audio, ("video", "audio")))
    assert torch.isclose(out["aux_video"], F.binary_cross_entropy_with_logits(aux["video"], target))
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux_heads.parameters() if p.ndim == 2)
    assert {id(p) for p in model.aux_heads.parameters()} <= {id(p) for p in model.classifier_parameters()}
    assert not {id(p) for p in model.aux_heads.parameters()} & {id(p) for p in model.generator_parameters()}
    with pytest.raises(RuntimeError, match="aux_heads"):
        Objective(aux_weight=0.5)(_model(), video, audio, target)


def test_stage_2_contrastive_term_uses_real_clips_only():
    model = _model()
    video, audio, target = _inputs(6)  # REAL at 0, 2, 4
    out = Objective(contrastive_weight=0.1)(model, video, audio, target)
    feats = model.forward_features(video, audio, ("video", "audio"))
    real = target == 0
    ref = model.contrastive_loss({k: v[real] for k, v in feats.items()})
    assert torch.isclose(out["contrastive"], ref, atol=1e-5) and out["contrastive"] > 0
    assert torch.isclose(out["loss"], out["cls"] + 0.1 * out["contrastive"])
    one_real = torch.tensor([0.0, 1, 1, 1, 1, 1])
    assert Objective(contrastive_weight=0.1)(model, video, audio, one_real)["contrastive"] == 0  # no negative
    names = {n for n, p in model.named_parameters() if any(p is q for q in model.contrastive_parameters())}
    assert names == {"video_proj.weight", "video_proj.bias", "audio_proj.weight", "audio_proj.bias", "logit_scale"}


def test_default_objective_is_the_plain_bce_the_engine_always_used():
    model = _model()
    video, audio, target = _inputs()
    out = Objective()(model, video, audio, target)
    assert set(out) == {"loss", "cls"}
    assert torch.isclose(out["loss"], F.binary_cross_entropy_with_logits(model(video, audio), target))


@pytest.mark.parametrize("fusion", ["sum", "noisy_or"])
def test_branch_losses_supervise_each_joined_logit_on_its_own(fusion):
    model = _model(signal_fusion=fusion)
    model.eval()  # no dropout: the objective's pass and the reference pass see the same logits
    video, audio, target = _inputs()
    out = Objective(branch_weight=0.5)(model, video, audio, target)
    feats = model.forward_features(video, audio, model.inputs)
    branches = model.branch_logits(feats)
    assert list(branches) == (["fusion", "sync", "texture"] if fusion == "noisy_or" else ["fusion", "signals"])
    assert torch.allclose(model.join_logits(branches), model(video, audio))
    for name, logit in branches.items():
        assert torch.isclose(out[f"logit_{name}"], F.binary_cross_entropy_with_logits(logit, target), atol=1e-6)
    terms = sum(out[f"logit_{name}"] for name in branches)
    assert torch.isclose(out["loss"], out["cls"] + 0.5 * terms)
    model.zero_grad()
    out["logit_signals" if fusion == "sum" else "logit_texture"].backward()  # a branch's own loss trains its head
    texture = model.signals.texture.bank.weight.grad
    assert texture is not None and texture.abs().sum() > 0
    assert all(p.grad is None for p in model.head.parameters())  # and not the fusion head


def test_without_signal_branches_the_logit_is_the_fusion_heads_whatever_the_join():
    model = _model(signal_fusion="noisy_or", sync_branch=False, texture_branch=False)
    model.eval()
    video, audio, _ = _inputs()
    feats = model.forward_features(video, audio, model.inputs)
    assert list(model.branch_logits(feats)) == ["fusion"]
    assert torch.equal(model(video, audio), model.head(feats))  # not a noisy-OR of one, which floors at ~-69


def test_seen_mask_keeps_real_clips_and_the_pseudo_fakes_a_branch_can_see():
    from tasks.train.pseudo_fakes import seen_mask

    kinds = ("self_blend", "face_resample", "audio_shift", "audio_pitch")
    target = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # a REAL clip, a FAKE as read, then pseudo-fakes
    pseudo_kind = torch.tensor([-1, -1, 0, 1, 2, 3])
    assert seen_mask("texture", pseudo_kind, kinds, target).tolist() == [True, False, True, True, False, False]
    assert seen_mask("sync", pseudo_kind, kinds, target).tolist() == [True, False, False, False, True, False]
    assert seen_mask("signals", pseudo_kind, kinds, target).tolist() == [True, False, True, True, True, False]
    assert seen_mask("texture", None, kinds, target).tolist() == [True] + [False] * 5  # no pseudo-fakes: REAL only


@pytest.mark.parametrize("fusion", ["sum", "noisy_or"])
def test_seen_supervision_trains_a_signal_branch_only_on_what_it_can_see(fusion):
    """branch_supervision="seen": a signal branch's own loss counts only REAL clips and the pseudo-fakes of its
    kinds, and the joined loss reaches the fusion head only; so FAKE clips as read (kind unknown) and, with a head
    per branch, the sync branch's pseudo-fakes give the texture branch no gradient at all, and the fusion head
    still learns from them. (One head over both branches, "sum", sees both branches' kinds.)"""
    kinds = ("face_resample", "audio_shift")
    model = _model(signal_fusion=fusion)
    model.eval()
    video, audio, _ = _inputs(4)
    target = torch.ones(4)
    objective = Objective(branch_weight=1.0, branch_supervision="seen", pseudo_kinds=kinds)
    unseen = torch.tensor([-1, -1, 1, 1] if fusion == "noisy_or" else [-1] * 4)  # FAKE as read; the audio pseudo-fake
    out = objective(model, video, audio, target, pseudo_kind=unseen)
    model.zero_grad()
    out["loss"].backward()
    assert model.signals.texture.bank.weight.grad is None or model.signals.texture.bank.weight.grad.abs().sum() == 0
    assert sum(p.grad.abs().sum() for p in model.head.parameters() if p.grad is not None) > 0
    seen = torch.tensor([0, 0, 1, 1])  # visual pseudo-fakes: the texture branch's own loss trains it
    model.zero_grad()
    objective(model, video, audio, target, pseudo_kind=seen)["loss"].backward()
    assert model.signals.texture.bank.weight.grad.abs().sum() > 0
    every = Objective(branch_weight=1.0)(model, video, audio, target, pseudo_kind=unseen)  # today's: every clip
    model.zero_grad()
    every["loss"].backward()
    assert model.signals.texture.bank.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="branch_weight"):
        Objective(branch_supervision="seen")
