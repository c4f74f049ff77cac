"""Stage-1 losses: contrastive InfoNCE, masked reconstruction MSE, patch GAN terms, cross-modal target.

All losses are computed in float32 (safe under autocast). ``mask`` arguments are
(B, L) bool with True = hidden: only hidden patches are scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(za: torch.Tensor, zb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between (B, E) embeddings; sample i of ``za`` pairs with i of ``zb``.

    ``logit_scale`` is log(1 / temperature), clamped at log(100) as in CLIP.
    """
    za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
    logits = logit_scale.float().clamp(max=4.6052).exp() * za @ zb.t()  # (B, B)
    labels = torch.arange(za.shape[0], device=za.device)  # (B,)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def sync_nce(zv: torch.Tensor, za: torch.Tensor, za_shifted: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Pick the in-sync audio: InfoNCE of a clip's video against its own audio and N shifted copies.

    zv, za (B, K, E) per-time-slice embeddings of a clip's video and audio; za_shifted
    (N, B, K, E) the same clip's audio rolled in time. A candidate's score is the mean over
    slices of the cosine between video slice k and audio slice k. Identity, voice, content
    and token positions are the same in every candidate, so only lip sync tells them apart.
    """
    zv = F.normalize(zv.float(), dim=-1)
    cands = torch.cat([za[None], za_shifted], dim=0)  # (1 + N, B, K, E)
    cands = F.normalize(cands.float(), dim=-1)
    sims = (cands * zv[None]).sum(dim=-1).mean(dim=-1)  # (1 + N, B)
    logits = logit_scale.float().clamp(max=4.6052).exp() * sims.t()  # (B, 1 + N)
    return F.cross_entropy(logits, torch.zeros(zv.shape[0], dtype=torch.long, device=zv.device))


def cosine_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, L, D) predicted and target tokens -> (B, L) 1 - cosine, in [0, 2], float32."""
    return 1 - F.cosine_similarity(pred.float(), target.float(), dim=-1)


def cross_modal_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance of cross-modal predictions (B, L, D) to the STOP-GRADIENT tokens of
    the other modality (B, L, D): the prediction learns to match, the target is not pulled."""
    return cosine_distance(pred, target.detach()).mean()


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's norm_pix_loss targets: each patch (B, L, P) to zero mean, unit variance."""
    mean = patches.mean(dim=-1, keepdim=True)  # (B, L, 1)
    var = patches.var(dim=-1, keepdim=True)  # (B, L, 1)
    return (patches - mean) / (var + eps).sqrt()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, L) ``values`` over positions where ``mask`` is True (0 if none)."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-patch MSE of (B, L, P) tensors, averaged over hidden patches only."""
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, L)
    return masked_mean(per_patch, mask)


def _masked_bce(logits: torch.Tensor, label: float, mask: torch.Tensor) -> torch.Tensor:
    target = torch.full_like(logits, label, dtype=torch.float32)
    per_patch = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")  # (B, L)
    return masked_mean(per_patch, mask)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Real patches -> 1, reconstructed patches -> 0, over hidden positions; logits (B, L)."""
    return _masked_bce(real_logits, 1.0, mask) + _masked_bce(fake_logits, 0.0, mask)


def generator_adv_loss(fake_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for the generator: -log D(reconstruction), hidden positions."""
    return _masked_bce(fake_logits, 1.0, mask)
