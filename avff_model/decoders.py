"""Per-modality reconstruction decoders (MAE-style, small transformers).

A decoder sees all L tokens of its modality (own encoder tokens at visible slices,
cross-modal predictions at hidden ones, see :func:`avff_model.fusion.fuse_tokens`)
and predicts the P raw values of every patch. Only hidden patches are scored.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Block, init_weights, run_blocks, sincos_pos_embed


class Decoder(nn.Module):
    """tokens (B, L, D_enc) -> patches (B, L, P)."""

    grad_checkpointing = False  # AVFF.set_grad_checkpointing

    def __init__(
        self, grid: tuple[int, ...], enc_width: int, width: int, depth: int, heads: int, patch_dim: int,
        mlp_ratio: float = 4.0, dropout: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        self.embed = nn.Linear(enc_width, width)
        self.register_buffer("pos_embed", sincos_pos_embed(width, grid)[None], persistent=False)  # (1, L, Dd)
        self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.pred = nn.Linear(width, patch_dim)
        self.apply(init_weights)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos_embed  # (B, L, Dd)
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        return self.pred(self.norm(x))  # (B, L, P)
