"""Stage-2 training objectives: the classification loss and its optional extra terms.

All functions take logits (B,) and targets (B,) in [0, 1] (FAKE = 1; soft after Mixup/CutMix
or label smoothing) and return per-sample or scalar float32 losses:

- ``bce``    binary cross-entropy with logits
- ``focal``  BCE times ``|y - p|^gamma`` (Lin et al. 2017, for soft targets: with a hard
             label y it is ``(1 - p_t)^gamma``); ``gamma = 0`` is exactly BCE
- ``pos_weight``  weight of the FAKE term, ``n_real / n_fake`` of the training clips
             (:func:`pos_weight_from_labels`) so both classes carry equal total weight
- ``label_smoothing`` eps: targets pulled to ``y (1 - eps) + eps / 2``

:class:`Objective` adds, each with its own weight and all off by default: the BCE of the
model's auxiliary video-only and audio-only heads (needs ``AVFFConfig.aux_heads``) and stage
1's audio-visual InfoNCE on the REAL clips of the batch (FAKE clips may pair mismatched
audio and video, so they are no positives), and the same loss on each logit the model's own
joins (``branch_weight``: the fusion head's and the signal heads', so a branch whose cue the
others explain away still learns it; docs/learning.md "The visual types"). With
``branch_supervision="seen"`` a signal branch learns only from what it can see: its own loss on REAL clips
and the pseudo-fakes of the kinds it sees (:data:`tasks.train.pseudo_fakes.SEEN_BY`), and it enters the
joined logit's loss detached, so the fakes it cannot judge (every FAKE as read, whose kind is unknown)
train only the fusion head. Validation metrics never see these terms: val
log loss stays comparable across every option.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from avff_model.model import BRANCH_PREFIX
from tasks.train.pseudo_fakes import seen_mask

LossFn = Callable[..., torch.Tensor]
_LOSSES: dict[str, LossFn] = {}


def register_loss(fn: LossFn) -> LossFn:
    """Register a per-sample loss ``fn(logits, target, *, pos_weight, gamma) -> (B,)`` under its name."""
    _LOSSES[fn.__name__] = fn
    return fn


def list_losses() -> list[str]:
    return sorted(_LOSSES)


def get_loss(name: str) -> LossFn:
    if name not in _LOSSES:
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(list_losses())}")
    return _LOSSES[name]


def _pos_weight(pos_weight: float | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float32, device=like.device)


@register_loss
def bce(logits: torch.Tensor, target: torch.Tensor, *, pos_weight: float | None = None,
        gamma: float = 0.0) -> torch.Tensor:  # fmt: skip
    """(B,) per-sample BCE-with-logits; ``gamma`` is ignored."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none",
                                              pos_weight=_pos_weight(pos_weight, logits))  # fmt: skip


@register_loss
def focal(logits: torch.Tensor, target: torch.Tensor, *, pos_weight: float | None = None,
          gamma: float = 2.0) -> torch.Tensor:  # fmt: skip
    """(B,) per-sample focal loss: BCE x |y - sigmoid(logit)|^gamma (differentiated through, as in the paper)."""
    p = torch.sigmoid(logits.float())
    return bce(logits, target, pos_weight=pos_weight) * (target.float() - p).abs().pow(gamma)


def smooth_targets(target: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) targets pulled towards 1/2: y (1 - eps) + eps / 2."""
    return target * (1 - eps) + 0.5 * eps


def pos_weight_from_labels(y) -> float:
    """n_real / n_fake of training targets (FAKE = 1; a soft target counts as its expected value, e.g.
    :func:`tasks.train.pseudo_fakes.expected_targets`): the FAKE weight that balances both classes.

    Raises ValueError when a class is missing (no weight can balance it).
    """
    y = np.asarray(y, dtype=np.float64)
    n_pos, n_neg = float(y.sum()), float((1.0 - y).sum())
    if y.size == 0 or n_pos <= 0 or n_neg <= 0:
        raise ValueError(f"class weights need both classes, got {n_neg:g} REAL and {n_pos:g} FAKE")
    return n_neg / n_pos


@dataclass(frozen=True)
class Objective:
    """The stage-2 loss: ``loss`` on the head's logit, plus weighted auxiliary and contrastive terms."""

    loss: str = "bce"  # a name in the registry: bce | focal
    focal_gamma: float = 2.0
    pos_weight: float | None = None  # FAKE weight; None = 1
    label_smoothing: float = 0.0
    aux_weight: float = 0.0  # x (BCE of the video-only head + BCE of the audio-only head)
    contrastive_weight: float = 0.0  # x InfoNCE over the batch's REAL clips
    branch_weight: float = 0.0  # x (the loss of each logit the model's joins: the fusion head's, the signal heads')
    branch_supervision: str = "every"  # "every" clip for each branch's loss | "seen": what the branch can see
    pseudo_kinds: tuple[str, ...] = ()  # the pseudo-fake kinds the batches' "pseudo_kind" indexes

    def __post_init__(self) -> None:
        get_loss(self.loss)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if min(self.focal_gamma, self.aux_weight, self.contrastive_weight, self.branch_weight) < 0:
            raise ValueError("focal_gamma, aux_weight, contrastive_weight and branch_weight must be >= 0")
        if self.branch_supervision not in ("every", "seen"):
            raise ValueError(f"branch_supervision must be 'every' or 'seen', got {self.branch_supervision!r}")
        if self.branch_supervision == "seen" and self.branch_weight <= 0:
            raise ValueError("branch_supervision='seen' needs branch_weight > 0: the signal branches' own loss")
        if self.pos_weight is not None and self.pos_weight <= 0:
            raise ValueError(f"pos_weight must be > 0, got {self.pos_weight}")

    def __call__(self, model: torch.nn.Module, video: torch.Tensor, audio: torch.Tensor,
                 target: torch.Tensor, mouth: torch.Tensor | None = None, lips: torch.Tensor | None = None,
                 pseudo_kind: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """video (B, 3, T, H, W), audio (B, 1, F, Tm), target (B,), mouth (B, 4) or None (the batch's
        mouth boxes, :mod:`avff_model.crop_geometry`), lips (B, T, 2) or None (the mouth's opening and
        width, :func:`avff_model.inputs.clip_lips`), pseudo_kind (B,) or None (the pseudo-fake applied to each
        clip, an index in ``pseudo_kinds``, -1 for none) -> {"loss": total, term: value}."""
        extra = ("video", "audio") if self.aux_weight > 0 or self.contrastive_weight > 0 else ()
        logits, feats = model.forward_with_features(video, audio, extra, mouth, lips)  # (B,), {name: (B, L, D)}
        seen = self.branch_supervision == "seen"
        if seen:  # the join's loss trains the fusion head only: the signal branches enter it detached
            branches = {k.removeprefix(BRANCH_PREFIX): v for k, v in feats.items() if k.startswith(BRANCH_PREFIX)}
            logits = model.join_logits({k: v if k == "fusion" else v.detach() for k, v in branches.items()})
        y = smooth_targets(target.float(), self.label_smoothing)
        fn = get_loss(self.loss)
        out = {"cls": fn(logits, y, pos_weight=self.pos_weight, gamma=self.focal_gamma).mean()}
        total = out["cls"]
        if self.aux_weight > 0:
            for m, aux in model.aux_logits(feats).items():
                out[f"aux_{m}"] = bce(aux, y, pos_weight=self.pos_weight).mean()
                total = total + self.aux_weight * out[f"aux_{m}"]
        if self.branch_weight > 0:  # deep supervision: each joined logit must also classify on its own
            for name in [k for k in feats if k.startswith(BRANCH_PREFIX)]:
                branch, keep = name.removeprefix(BRANCH_PREFIX), slice(None)
                if seen and branch != "fusion":  # REAL clips and the pseudo-fakes this branch sees
                    keep = seen_mask(branch, pseudo_kind, self.pseudo_kinds, target)  # (B,) bool
                logit = feats[name][keep]  # (B',)
                out[name] = (fn(logit, y[keep], pos_weight=self.pos_weight, gamma=self.focal_gamma).mean()
                             if len(logit) else feats[name].sum() * 0.0)  # fmt: skip
                total = total + self.branch_weight * out[name]
        if self.contrastive_weight > 0:
            out["contrastive"] = model.contrastive_loss(feats, keep=target == 0)
            total = total + self.contrastive_weight * out["contrastive"]
        return {"loss": total, **out}
