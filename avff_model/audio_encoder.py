"""Audio encoder: a ViT over 16x16 patches of the log-mel spectrogram (AudioMAE-style).

audio (B, 1, F, Tm) -> L_a = (F/16)(Tm/16) tokens, ordered (f, tm) row-major
(8 x 20 = 160 for 128 mel bins x 320 frames).
"""

from __future__ import annotations

import torch

from .layers import MaskedViT, PatchEmbed, patchify_audio


class AudioEncoder(MaskedViT):
    def __init__(
        self, n_mels: int, mel_frames: int, patch: int, width: int, depth: int, heads: int,
        mlp_ratio: float = 4.0, dropout: float = 0.0,
    ):  # fmt: skip
        grid = (n_mels // patch, mel_frames // patch)  # (F', Tm')
        super().__init__(PatchEmbed(patch, width), grid, width, depth, heads, mlp_ratio, dropout)
        self.patch = patch
        self.input_shape = (1, n_mels, mel_frames)

    @property
    def num_time(self) -> int:
        """Number of token positions along time (Tm')."""
        return self.grid[1]

    def token_time(self) -> torch.Tensor:
        """(L_a,) long: the time index (0..Tm'-1) of every token."""
        return torch.arange(self.num_tokens, device=self.pos_embed.device) % self.grid[1]

    def patchify(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, Tm) -> (B, L_a, P_a): mel targets aligned with the tokens."""
        return patchify_audio(audio, self.patch)

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """audio (B, 1, F, Tm), mask (B, L_a) bool (True = hidden) -> (B, L_a, D_a)."""
        if tuple(audio.shape[1:]) != self.input_shape:
            raise ValueError(f"audio must be (B, {', '.join(map(str, self.input_shape))}), got {tuple(audio.shape)}")
        return super().forward(audio, mask)
