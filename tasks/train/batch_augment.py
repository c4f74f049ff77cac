"""Batch-level training transforms: Mixup, CutMix and progressive down-up resizing.

Pure functions of batch tensors plus :class:`BatchTransform`, the one callable the engine
applies on the device before the forward pass (:func:`tasks.train.engine.train_one_epoch`).
Randomness comes from an explicit ``torch.Generator`` seeded by (seed, epoch).

Labels mix with the inputs: Mixup's target is ``lam y_i + (1 - lam) y_j`` with the same
``lam`` as the pixels; CutMix pastes one box of clip j into every frame of clip i and weights
y_j by the pasted area fraction. Targets become soft, which BCE-with-logits (and the focal
loss of :mod:`tasks.train.objective`) accept.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tasks.train.settings import MixAugment


def mixup(
    video: torch.Tensor, audio: torch.Tensor, target: torch.Tensor, lam: float, perm: torch.Tensor,
    mix_audio: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """x' = lam x + (1 - lam) x[perm] for video (B, 3, T, H, W), audio (B, 1, F, Tm) and target (B,)."""
    video = lam * video + (1 - lam) * video[perm]
    if mix_audio:
        audio = lam * audio + (1 - lam) * audio[perm]
    return video, audio, lam * target + (1 - lam) * target[perm]


def cutmix_box(h: int, w: int, lam: float, g: torch.Generator) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): a box of ~(1 - lam) of the frame at a random centre, clipped to it."""
    rh, rw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, (), generator=g)), int(torch.randint(w, (), generator=g))
    y0, y1 = max(cy - rh // 2, 0), min(cy + rh - rh // 2, h)
    x0, x1 = max(cx - rw // 2, 0), min(cx + rw - rw // 2, w)
    return y0, y1, x0, x1


def cutmix(
    video: torch.Tensor, target: torch.Tensor, box: tuple[int, int, int, int], perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``box`` of clip perm[i] into clip i in ALL frames; target weighted by the pasted area.

    video (B, 3, T, H, W), target (B,) -> the mixed pair. The audio stays the base clip's.
    """
    y0, y1, x0, x1 = box
    h, w = video.shape[-2:]
    area = (y1 - y0) * (x1 - x0) / (h * w)
    video = video.clone()
    video[..., y0:y1, x0:x1] = video[perm][..., y0:y1, x0:x1]
    return video, (1 - area) * target + area * target[perm]


def down_up(video: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 3, T, H, W) -> each frame bilinearly shrunk by ``scale`` and enlarged back to H x W.

    Progressive resizing without touching the ViT: the token grid (and the A2V/V2A token
    maps sized by it) stays fixed while the detail the frames carry grows with ``scale``.
    """
    if scale >= 1:
        return video
    b, c, t, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)  # (B T, 3, H, W)
    small = F.interpolate(frames, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                          align_corners=False, antialias=True)  # fmt: skip
    big = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)  # (B T, 3, H, W)
    return big.reshape(b, t, c, h, w).transpose(1, 2)  # (B, 3, T, H, W)


class BatchTransform:
    """The engine's per-batch transform: pseudo-fakes, down-up resize at ``scale``, then Mixup or CutMix.

    Batches are dicts (see :mod:`tasks.train.data`); ``target`` becomes a soft label in [0, 1].
    ``pseudo_fakes`` (a :class:`tasks.train.pseudo_fakes.PseudoFakes`) runs first, so mixing
    mixes its FAKE labels like any other.
    """

    def __init__(self, mix: MixAugment, *, scale: float = 1.0, generator: torch.Generator,
                 pseudo_fakes: Callable[[dict], dict] | None = None):  # fmt: skip
        self.mix, self.scale, self.g, self.pseudo_fakes = mix, scale, generator, pseudo_fakes

    @property
    def active(self) -> bool:
        return self.mix.enabled or self.scale < 1 or self.pseudo_fakes is not None

    def __call__(self, batch: dict) -> dict:
        if self.pseudo_fakes is not None:
            batch = self.pseudo_fakes(batch)
        video, audio, target = batch["video"], batch["audio"], batch["target"]
        video = down_up(video, self.scale)
        m = self.mix
        if m.enabled and len(target) > 1:
            # the same draws whether or not this batch is mixed: later batches do not shift
            u = torch.rand(2, generator=self.g).tolist()
            perm = torch.randperm(len(target), generator=self.g).to(target.device)  # (B,)
            use_cutmix = m.cutmix_alpha > 0 and (m.mixup_alpha == 0 or u[1] < m.switch_p)
            lam = beta(m.cutmix_alpha if use_cutmix else m.mixup_alpha, self.g)
            box = cutmix_box(video.shape[-2], video.shape[-1], lam, self.g)
            if u[0] < m.prob and use_cutmix:
                video, target = cutmix(video, target, box, perm)
            elif u[0] < m.prob:
                video, audio, target = mixup(video, audio, target, lam, perm, m.mix_audio)
        return {**batch, "video": video, "audio": audio, "target": target}


def beta(alpha: float, g: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw from a NumPy RNG seeded by ``g`` (torch.distributions takes no generator)."""
    seed = int(torch.randint(2**62, (), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))
