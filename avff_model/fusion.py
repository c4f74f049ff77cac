"""Complementary masking and the cross-modal A2V / V2A networks.

The clip's time axis is cut into K slices. Per sample, a random half of the slices is
hidden from the video encoder and the other half from the audio encoder; the decoder of
each modality then sees its own tokens at visible slices and the other modality's
prediction (A2V or V2A) at its hidden slices.

Slice of a token = time_index * K // num_time. For video, T' = 8 tubelet steps and K = 8
give one step per slice; for audio, Tm' = 20 columns over K = 8 slices give slices of
3, 2, 3, 2, ... columns, so per-sample hidden-token counts differ (see docs/model.md).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Block, init_weights


def slice_ids(token_time: torch.Tensor, num_time: int, num_slices: int) -> torch.Tensor:
    """(L,) time index of each token -> (L,) slice index in [0, K)."""
    return token_time * num_slices // num_time


def complementary_slice_mask(
    batch: int, num_slices: int, *, device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # fmt: skip
    """(B, K) bool, True where a slice is hidden from VIDEO; audio hides the complement.

    Exactly K/2 slices per sample are True. The noise is drawn on the generator's device
    (so a CPU generator drives a CUDA model deterministically) and moved to ``device``.
    """
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch, num_slices, generator=generator, device=noise_device)  # (B, K)
    rank = noise.argsort(dim=1).argsort(dim=1)  # (B, K): each slice's rank in its row
    return (rank < num_slices // 2).to(device)


def token_masks(
    slice_mask: torch.Tensor, video_slices: torch.Tensor, audio_slices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """slice_mask (B, K) -> (mask_v (B, L_v), mask_a (B, L_a)), bool, True = hidden."""
    mask_v = slice_mask[:, video_slices]  # (B, L_v)
    mask_a = ~slice_mask[:, audio_slices]  # (B, L_a)
    return mask_v, mask_a


class CrossModalMap(nn.Module):
    """A2V / V2A: tokens of one modality -> predicted tokens of the other.

    (B, L_in, D_in) -> transformer block -> linear over the token axis (L_in -> L_out)
    -> linear over the width (D_in -> D_out) -> (B, L_out, D_out). The token-axis map is
    what moves information between the two token grids (which share no positions).
    """

    def __init__(self, l_in: int, l_out: int, d_in: int, d_out: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0):  # fmt: skip
        super().__init__()
        self.block = Block(d_in, heads, mlp_ratio, dropout)
        self.token_map = nn.Linear(l_in, l_out)
        self.proj = nn.Linear(d_in, d_out)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)  # (B, L_in, D_in)
        x = self.token_map(x.transpose(1, 2))  # (B, D_in, L_out)
        return self.proj(x.transpose(1, 2))  # (B, L_out, D_out)


def fuse_tokens(own: torch.Tensor, cross: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """own, cross (B, L, D), mask (B, L) True = hidden -> (B, L, D): ``cross`` where hidden."""
    return torch.where(mask[..., None], cross.to(own.dtype), own)
