"""Video encoder: a ViT over 2x16x16 space-time tubelets (MARLIN-style).

video (B, 3, T, H, W) -> L_v = (T/2)(H/16)(W/16) tokens, ordered (t, h, w) row-major
(8 x 14 x 14 = 1568 at 224 px, 8 x 4 x 4 = 128 for the ``tiny`` preset).
"""

from __future__ import annotations

import torch

from .layers import MaskedViT, TubeletEmbed, patchify_video


class VideoEncoder(MaskedViT):
    def __init__(
        self, img_size: int, num_frames: int, tubelet: int, patch: int, width: int, depth: int,
        heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
    ):  # fmt: skip
        grid = (num_frames // tubelet, img_size // patch, img_size // patch)  # (T', H', W')
        super().__init__(TubeletEmbed(tubelet, patch, width), grid, width, depth, heads, mlp_ratio, dropout)
        self.tubelet, self.patch = tubelet, patch
        self.input_shape = (3, num_frames, img_size, img_size)

    @property
    def num_time(self) -> int:
        """Number of token positions along time (T')."""
        return self.grid[0]

    def token_time(self) -> torch.Tensor:
        """(L_v,) long: the time index (0..T'-1) of every token."""
        _, h, w = self.grid
        return torch.arange(self.num_tokens, device=self.pos_embed.device) // (h * w)

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, L_v, P_v): pixel targets aligned with the tokens."""
        return patchify_video(video, self.tubelet, self.patch)

    def forward(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """video (B, 3, T, H, W), mask (B, L_v) bool (True = hidden) -> (B, L_v, D_v)."""
        if tuple(video.shape[1:]) != self.input_shape:
            raise ValueError(f"video must be (B, {', '.join(map(str, self.input_shape))}), got {tuple(video.shape)}")
        return super().forward(video, mask)
