"""Building blocks shared by the encoders, decoders and heads.

Pre-norm transformer block, tubelet/patch embeddings, fixed sin-cos position
embeddings, and patchify/unpatchify (the reconstruction targets). Shape letters are
those of :mod:`avff_model`; P is the number of values in one patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads)  # (B, L, 3, h, D/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, D/h)
        p = self.dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, h, L, D/h)
        x = x.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm ViT block: (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TubeletEmbed(nn.Module):
    """video (B, 3, T, H, W) -> tokens (B, L_v, D), tokens ordered (t, h, w) row-major."""

    def __init__(self, tubelet: int, patch: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, (tubelet, patch, patch), (tubelet, patch, patch))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.proj(video)  # (B, D, T/t, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, L_v, D)


class PatchEmbed(nn.Module):
    """log-mel (B, 1, F, Tm) -> tokens (B, L_a, D), tokens ordered (f, tm) row-major."""

    def __init__(self, patch: int, dim: int, in_chans: int = 1):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.proj(audio)  # (B, D, F/p, Tm/p)
        return x.flatten(2).transpose(1, 2)  # (B, L_a, D)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """MAE's 1-D sin-cos embedding: pos (N,) -> (N, dim), dim even."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    out = pos.double()[:, None] * omega[None, :]  # (N, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1).float()  # (N, dim)


def sincos_pos_embed(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """Fixed sin-cos embedding for a row-major token grid: -> (prod(grid), dim).

    Each grid axis gets an equal even share of ``dim``; a remainder (when ``dim`` is
    not a multiple of 2 * len(grid)) is zero-padded.
    """
    share = (dim // (2 * len(grid))) * 2
    axes = torch.meshgrid(*[torch.arange(n) for n in grid], indexing="ij")  # each grid-shaped
    parts = [sincos_1d(share, a.reshape(-1)) for a in axes]  # each (L, share)
    emb = torch.cat(parts, dim=1)  # (L, share * len(grid))
    return F.pad(emb, (0, dim - emb.shape[1]))  # (L, dim)


def patchify_video(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, L_v, P) with P = tubelet*patch*patch*C, tokens as TubeletEmbed."""
    B, C, T, H, W = video.shape
    x = video.reshape(B, C, T // tubelet, tubelet, H // patch, patch, W // patch, patch)  # (B, C, T', t, H', p, W', p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, T', H', W', t, p, p, C)
    return x.reshape(B, (T // tubelet) * (H // patch) * (W // patch), -1)  # (B, L_v, P)


def unpatchify_video(x: torch.Tensor, grid: tuple[int, int, int], tubelet: int, patch: int) -> torch.Tensor:
    """Inverse of :func:`patchify_video`: (B, L_v, P) -> (B, C, T, H, W)."""
    (B, _, P), (t, h, w) = x.shape, grid
    C = P // (tubelet * patch * patch)
    x = x.reshape(B, t, h, w, tubelet, patch, patch, C)  # (B, T', H', W', t, p, p, C)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, T', t, H', p, W', p)
    return x.reshape(B, C, t * tubelet, h * patch, w * patch)  # (B, C, T, H, W)


def patchify_audio(audio: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 1, F, Tm) -> (B, L_a, P) with P = patch*patch, tokens as PatchEmbed."""
    B, _, Fq, Tm = audio.shape
    x = audio.reshape(B, Fq // patch, patch, Tm // patch, patch)  # (B, F', p, Tm', p)
    x = x.permute(0, 1, 3, 2, 4)  # (B, F', Tm', p, p)
    return x.reshape(B, (Fq // patch) * (Tm // patch), patch * patch)  # (B, L_a, P)


def unpatchify_audio(x: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """Inverse of :func:`patchify_audio`: (B, L_a, P) -> (B, 1, F, Tm)."""
    B, (f, tm) = x.shape[0], grid
    x = x.reshape(B, f, tm, patch, patch).permute(0, 1, 3, 2, 4)  # (B, F', p, Tm', p)
    return x.reshape(B, 1, f * patch, tm * patch)  # (B, 1, F, Tm)


def init_weights(m: nn.Module) -> None:
    """MAE initialisation: xavier-uniform linears and (flattened) patch convs, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.Conv2d, nn.Conv3d)):
        nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))  # as a (D, C*kernel) linear
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class MaskedViT(nn.Module):
    """A ViT encoder with SimMIM-style masking, shared by the video and audio encoders.

    ``forward(x, mask)``: tokens where ``mask`` (B, L) is True have their patch embedding
    replaced by a learned mask token before the position embedding is added, so every
    sample keeps all L tokens (see docs/model.md for why tokens are not dropped).
    """

    grad_checkpointing = False  # AVFF.set_grad_checkpointing: recompute block activations in backward

    def __init__(
        self, embed: nn.Module, grid: tuple[int, ...], width: int, depth: int, heads: int,
        mlp_ratio: float = 4.0, dropout: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        self.grid = grid
        self.width = width
        self.patch_embed = embed
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos_embed", sincos_pos_embed(width, grid)[None], persistent=False)  # (1, L, D)
        self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def num_tokens(self) -> int:
        return self.pos_embed.shape[1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: the raw input; mask: (B, L) bool, True = hidden. -> (B, L, D), final-normed."""
        x = self.patch_embed(x)  # (B, L, D)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)  # (B, L, D)
        x = x + self.pos_embed
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        return self.norm(x)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """``x`` through every block; ``checkpointed`` (training with gradients only) keeps each block's
    input and recomputes its activations in backward: less memory, about one more forward."""
    for block in blocks:
        if checkpointed and block.training and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)  # (B, L, D)
        else:
            x = block(x)  # (B, L, D)
    return x
