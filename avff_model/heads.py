"""Patch discriminators (stage 1) and the stage-2 classifier heads.

Classifier heads live in a registry keyed by ``AVFFConfig.fusion``. Each head declares
the token features it ``inputs`` (a subset of "video", "audio", "a2v", "v2a", each
(B, L, D) as produced by :meth:`avff_model.AVFF.forward_features`), so the model only
computes what the head reads, and returns one logit per sample, (B,), FAKE = 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .agreement import TemporalAgreement
from .fusion import SYNC_FEATURES, XMODAL_FEATURES
from .layers import Block, init_weights


class PatchDiscriminator(nn.Module):
    """Per-patch real/reconstructed logit: patches (B, L, P) -> (B, L)."""

    def __init__(self, patch_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(patch_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )  # fmt: skip
        self.apply(init_weights)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.net(patches).squeeze(-1)  # (B, L)


class FeatureNorm(nn.BatchNorm1d):
    """BatchNorm1d that also takes a training batch of one (a last partial batch): it is normalised by the
    running statistics, which it leaves as they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def mlp_head(in_dim: int, hidden: int, dropout: float, norm: str = "layer") -> nn.Sequential:
    """(B, in_dim) -> (B, 1). ``norm``: "layer" normalises each sample across its features (for tokens'
    features); "batch" each feature across samples (running statistics at eval), for a vector of unlike
    features whose common level is itself the cue (the texture branch's log energies: docs/learning.md).
    ``hidden=0``: no hidden layer, a linear read-out of the normalised features (a logistic regression)."""
    first = {"layer": nn.LayerNorm, "batch": FeatureNorm}[norm](in_dim)
    if hidden == 0:
        return nn.Sequential(first, nn.Dropout(dropout), nn.Linear(in_dim, 1))
    return nn.Sequential(first, nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class BranchHeads(nn.Module):
    """One :func:`mlp_head` per branch: (B, sum(dims)) -> (B, len(dims)), head k on its branch's slice of the
    features (the signal branches' features concatenated in ``dims``' order)."""

    def __init__(self, dims: list[int], hidden: int, dropout: float, norm: str = "layer"):
        super().__init__()
        self.dims = list(dims)
        self.heads = nn.ModuleList(mlp_head(d, hidden, dropout, norm) for d in self.dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, sum(dims)) -> (B, K)
        return torch.cat([h(part) for h, part in zip(self.heads, x.split(self.dims, dim=1))], dim=1)


def noisy_or(logits: torch.Tensor) -> torch.Tensor:
    """(B, K) logits of K detectors -> (B,) the logit of "at least one says FAKE": 1 - prod_k (1 - p_k).

    -log P(every detector says REAL) = S = sum_k softplus(l_k), so p = 1 - exp(-S) and
    logit(p) = log(1 - exp(-S)) + S (computed with expm1; S is floored where every l_k is hugely negative).
    """
    s = F.softplus(logits).sum(dim=-1).clamp_min(1e-30)  # (B,)
    return torch.log(-torch.expm1(-s)) + s


_HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        _HEADS[name] = cls
        return cls

    return deco


def list_heads() -> list[str]:
    return sorted(_HEADS)


def build_head(name: str, *, video_width: int, audio_width: int, hidden: int, heads: int,
               dropout: float) -> nn.Module:  # fmt: skip
    """The registered head ``name``; unknown names raise KeyError listing the known ones."""
    if name not in _HEADS:
        raise KeyError(f"unknown fusion head {name!r}; known: {', '.join(list_heads())}")
    head = _HEADS[name](video_width, audio_width, hidden, heads, dropout)
    head.apply(init_weights)
    return head


@register_head("avff_concat")
class AVFFConcatHead(nn.Module):
    """The paper's classifier: uni-modal and cross-modal features concatenated token by token.

    On the video grid each token is video_t ⊕ A2V(audio)_t, on the audio grid audio_t ⊕
    V2A(video)_t; a per-token MLP sees both halves before anything is averaged, so it can
    compare what one modality shows with what the other predicts at the same place and time
    (a mouth that does not match the sound). Pooling first would compare clip averages only,
    and no average of a mouth track and a sound track tells whether they move together.
    """

    inputs = ("video", "audio", "a2v", "v2a")

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.video_tokens = nn.Sequential(nn.LayerNorm(2 * dv), nn.Linear(2 * dv, hidden), nn.GELU())
        self.audio_tokens = nn.Sequential(nn.LayerNorm(2 * da), nn.Linear(2 * da, hidden), nn.GELU())
        self.mlp = mlp_head(2 * hidden, hidden, dropout)

    def pooled(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.video_tokens(torch.cat([feats["video"], feats["a2v"]], dim=-1)).mean(dim=1)  # (B, H)
        a = self.audio_tokens(torch.cat([feats["audio"], feats["v2a"]], dim=-1)).mean(dim=1)  # (B, H)
        return torch.cat([v, a], dim=1)  # (B, 2H)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(self.pooled(feats)).squeeze(-1)  # (B,)


@register_head("avff_sync")
class AVFFSyncHead(AVFFConcatHead):
    """avff_concat plus the lip-sync scores (``AVFF.sync_similarities``): how well the clip's own
    audio fits its mouth compared with the same audio moved by 0.4-0.8 s. Meaningful after a
    stage 1 with ``w_sync > 0``, which trains the projections the scores are measured in."""

    inputs = (*AVFFConcatHead.inputs, "sync")

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__(dv, da, hidden, heads, dropout)
        self.mlp = mlp_head(2 * hidden + SYNC_FEATURES, hidden, dropout)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(torch.cat([self.pooled(feats), feats["sync"]], dim=1)).squeeze(-1)  # (B,)


@register_head("avff_xmodal")
class AVFFCrossModalHead(AVFFConcatHead):
    """avff_concat plus the cross-modal prediction errors (``AVFF.cross_modal_features``): how far
    each modality's tokens are from what the other predicts, slice by slice. Meaningful after a
    stage 1 with ``w_cross > 0``, which trains A2V/V2A to predict REAL clips' tokens."""

    inputs = (*AVFFConcatHead.inputs, "xmodal")

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__(dv, da, hidden, heads, dropout)
        self.mlp = mlp_head(2 * hidden + XMODAL_FEATURES, hidden, dropout)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(torch.cat([self.pooled(feats), feats["xmodal"]], dim=1)).squeeze(-1)  # (B,)


@register_head("avff_agree")
class AVFFAgreeHead(AVFFConcatHead):
    """avff_concat plus the temporal agreement of each modality with the other's prediction
    (:class:`avff_model.agreement.TemporalAgreement`): per position, the correlation over time
    of v with A2V(a) and of a with V2A(v) at lags of -1, 0, +1 time tokens. The product the
    lip-sync cue needs (mouth x loudness) is computed, not left to one GELU layer."""

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__(dv, da, hidden, heads, dropout)
        self.agree_video = TemporalAgreement(dv, max(hidden // 4, 4))
        self.agree_audio = TemporalAgreement(da, max(hidden // 4, 4))
        self.mlp = mlp_head(2 * hidden + self.agree_video.out_dim + self.agree_audio.out_dim, hidden, dropout)

    def bind_time(self, video_time: torch.Tensor, audio_time: torch.Tensor) -> None:
        """(L_v,), (L_a,) time index of each token (AVFF calls this once)."""
        self.agree_video.bind_time(video_time)
        self.agree_audio.bind_time(audio_time)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        agree = [self.agree_video(feats["video"], feats["a2v"]), self.agree_audio(feats["audio"], feats["v2a"])]
        return self.mlp(torch.cat([self.pooled(feats), *agree], dim=1)).squeeze(-1)  # (B,)


@register_head("attention")
class AttentionHead(nn.Module):
    """A small cross-modal transformer over [CLS; video tokens; audio tokens]."""

    inputs = ("video", "audio")

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.proj_v, self.proj_a = nn.Linear(dv, hidden), nn.Linear(da, hidden)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, hidden))
        self.modality = nn.Parameter(0.02 * torch.randn(2, hidden))  # tells video from audio tokens
        self.block = Block(hidden, heads, dropout=dropout)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.proj_v(feats["video"]) + self.modality[0]  # (B, L_v, Dh)
        a = self.proj_a(feats["audio"]) + self.modality[1]  # (B, L_a, Dh)
        cls = self.cls.expand(v.shape[0], -1, -1).to(v.dtype)  # (B, 1, Dh)
        x = self.block(torch.cat([cls, v, a], dim=1))  # (B, 1 + L_v + L_a, Dh)
        return self.out(self.norm(x[:, 0])).squeeze(-1)  # (B,)


@register_head("late")
class LateHead(nn.Module):
    """Late fusion: the mean of a video-only and an audio-only logit."""

    inputs = ("video", "audio")

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.video, self.audio = mlp_head(dv, hidden, dropout), mlp_head(da, hidden, dropout)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        lv = self.video(feats["video"].mean(dim=1))  # (B, 1)
        la = self.audio(feats["audio"].mean(dim=1))  # (B, 1)
        return (0.5 * (lv + la)).squeeze(-1)  # (B,)


@register_head("video_only")
class VideoOnlyHead(nn.Module):
    inputs = ("video",)

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.mlp = mlp_head(dv, hidden, dropout)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(feats["video"].mean(dim=1)).squeeze(-1)  # (B,)


@register_head("audio_only")
class AudioOnlyHead(nn.Module):
    inputs = ("audio",)

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.mlp = mlp_head(da, hidden, dropout)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(feats["audio"].mean(dim=1)).squeeze(-1)  # (B,)


@register_head("signals_only")
class SignalsOnlyHead(nn.Module):
    """No encoder feature at all: a learned bias, so the model's logit is the signal branches'
    (avff_model/signals.py) plus a constant. It names video and audio as inputs only so that both
    branches are built; the ablation that says what the branches learn without the ViTs."""

    inputs = ("video", "audio")

    def __init__(self, dv: int, da: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.bias.expand(feats["video"].shape[0])  # (B,)
