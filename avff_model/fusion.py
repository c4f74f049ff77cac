"""Complementary masking and the cross-modal A2V / V2A networks.

The clip's time axis is cut into K slices. Per sample, a random half of the slices is
hidden from the video encoder and the other half from the audio encoder; the decoder of
each modality then sees its own tokens at visible slices and the other modality's
prediction (A2V or V2A) at its hidden slices.

Where each token sits in time: the mel window starts at the first frame's time
(tasks/ingest/preprocess.py), so mel column j covers [j, j + 1) hops from that time, while video
frame k is a sample *at* time k / fps and stands for [(k - 1/2) / fps, (k + 1/2) / fps): a
tubelet of frames 2i, 2i + 1 covers [(2i - 1/2) / fps, (2i + 3/2) / fps), half a frame earlier
than its index suggests (:func:`frame_shift`). A slice is the span of one video time token
(T' = 8 tubelet steps over K = 8 slices: one step each); an audio token belongs to the slice
its span overlaps most (:func:`overlap_slices`): Tm' = 20 columns of 0.16 s give slices of
2, 2, 3, 2, 3, 2, 3, 3 columns, so per-sample hidden-token counts differ (see docs/model.md).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Block, init_weights


def frame_shift(num_frames: int) -> float:
    """Where a video time grid starts, as a fraction of the clip: half a frame before the mel start.

    Frame k is shown at k / fps from the mel start and stands for the half frame either side of it.
    """
    return -0.5 / num_frames


def slice_ids(token_time: torch.Tensor, num_time: int, num_slices: int) -> torch.Tensor:
    """(L,) time index of each token -> (L,) slice index in [0, K) (video tokens: the slices are their steps)."""
    return token_time * num_slices // num_time


def overlap_slices(token_time: torch.Tensor, num_time: int, num_slices: int, slice_shift: float) -> torch.Tensor:
    """(L,) time index of each token on an unshifted grid (audio) -> (L,) the slice it overlaps most
    (the first on a tie); slice k covers [k / K + slice_shift, (k + 1) / K + slice_shift) of the clip."""
    slices = torch.arange(num_slices, device=token_time.device)
    return time_overlap(token_time, num_time, slices, num_slices, in_shift=slice_shift).argmax(dim=1)  # (L,)


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


def time_overlap(out_time: torch.Tensor, out_steps: int, in_time: torch.Tensor, in_steps: int, *,
                 out_shift: float = 0.0, in_shift: float = 0.0) -> torch.Tensor:  # fmt: skip
    """(L_out, L_in): how much of each output token's time span each input token covers; rows sum to 1.

    Token time index i of a grid of n steps covers [i/n + shift, (i+1)/n + shift) of the clip,
    cut to the clip [0, 1): a video grid has ``shift = frame_shift(T)``, the mel grid 0.
    """

    def span(time: torch.Tensor, steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = time / steps + shift, (time + 1) / steps + shift
        return lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0)

    lo_o, hi_o = span(out_time[:, None], out_steps, out_shift)  # (L_out, 1)
    lo_i, hi_i = span(in_time[None], in_steps, in_shift)  # (1, L_in)
    overlap = (torch.minimum(hi_o, hi_i) - torch.maximum(lo_o, lo_i)).clamp(min=0)  # (L_out, L_in)
    return overlap / overlap.sum(dim=1, keepdim=True)


class CrossModalMap(nn.Module):
    """A2V / V2A: tokens of one modality -> predicted tokens of the other.

    (B, L_in, D_in) -> transformer block -> linear over the token axis (L_in -> L_out)
    -> linear over the width (D_in -> D_out) -> (B, L_out, D_out). The token-axis map is
    what moves information between the two token grids (which share no positions).

    ``align`` (L_out, L_in), if given, initialises the token-axis map: :func:`time_overlap`
    makes each predicted token start as the mean of the input tokens at the same time, so
    from the first step a video token and its A2V prediction describe the same moment
    (a random token map would have to learn that alignment from data first).
    """

    def __init__(self, l_in: int, l_out: int, d_in: int, d_out: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, align: torch.Tensor | None = None):  # fmt: skip
        super().__init__()
        self.block = Block(d_in, heads, mlp_ratio, dropout)
        self.token_map = nn.Linear(l_in, l_out)
        self.proj = nn.Linear(d_in, d_out)
        self.apply(init_weights)
        if align is not None:
            with torch.no_grad():
                self.token_map.weight.copy_(align)  # (L_out, L_in)
                self.token_map.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)  # (B, L_in, D_in)
        x = self.token_map(x.transpose(1, 2))  # (B, D_in, L_out)
        return self.proj(x.transpose(1, 2))  # (B, L_out, D_out)


def slice_pool(tokens: torch.Tensor, slices: torch.Tensor, num_slices: int) -> torch.Tensor:
    """tokens (B, L, D), slices (L,) slice index of each token -> (B, K, D) per-slice means."""
    onehot = torch.nn.functional.one_hot(slices, num_slices).to(tokens.dtype)  # (L, K)
    return torch.einsum("bld,lk->bkd", tokens, onehot) / onehot.sum(dim=0)[None, :, None]


# The lip-sync comparison (w_sync loss, "sync" features): video slices [2, 6) against the audio of
# those slices and against the same audio moved by -2, -1, +1, +2 slices (0.4 s each at 3.2 s / 8).
SYNC_WINDOW, SYNC_SHIFTS = (2, 6), (-2, -1, 1, 2)
SYNC_FEATURES = 2 * len(SYNC_SHIFTS) + 1  # width of the "sync" feature (see AVFF.sync_similarities)


def sync_candidates(
    audio: torch.Tensor, num_slices: int, window: tuple[int, int], shifts: tuple[int, ...]
) -> torch.Tensor:
    """audio (B, 1, F, Tm) -> (1 + N, B, 1, F, Tm): the clip's audio, then N time-shifted copies.

    Every candidate keeps only slices ``window`` = [lo, hi) and is 0 (the normalised mean)
    elsewhere; candidate n holds the audio of slices [lo + shifts[n], hi + shifts[n]) there.
    All candidates are contiguous audio with the same blank edges at the same positions:
    no splice, no moved silence, no position tells the in-sync one apart, only lip sync.
    The window is cut on the mel's own 0.4 s grid; the video slices sit half a frame earlier
    (module docstring), so the kept audio lies inside the video span it is compared with.
    """
    lo, hi = window
    if lo + min(shifts) < 0 or hi + max(shifts) > num_slices:
        raise ValueError(f"window {window} shifted by {shifts} leaves the clip's {num_slices} slices")
    step = audio.shape[-1] // num_slices  # mel frames per slice
    out = audio.new_zeros((1 + len(shifts), *audio.shape))  # (1 + N, B, 1, F, Tm)
    for n, d in enumerate((0, *shifts)):
        out[n, ..., lo * step : hi * step] = audio[..., (lo + d) * step : (hi + d) * step]
    return out


XMODAL_FEATURES = 6  # width of the "xmodal" feature (see cross_modal_stats)


def cross_modal_stats(dist_v: torch.Tensor, dist_a: torch.Tensor, video_slices: torch.Tensor,
                      audio_slices: torch.Tensor, num_slices: int) -> torch.Tensor:  # fmt: skip
    """Per-token cross-modal distances dist_v (B, L_v), dist_a (B, L_a) -> (B, 6): per modality the
    mean, max and std over the K per-slice means. Order-free across slices: a mismatched
    moment counts the same wherever in the clip it is, and the width does not depend on K."""
    out = []
    for dist, slices in ((dist_v, video_slices), (dist_a, audio_slices)):
        per_slice = slice_pool(dist[..., None], slices, num_slices)[..., 0]  # (B, K)
        out += [per_slice.mean(dim=1), per_slice.amax(dim=1), per_slice.std(dim=1)]
    return torch.stack(out, dim=1)  # (B, 6)


def fuse_tokens(own: torch.Tensor, cross: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """own, cross (B, L, D), mask (B, L) True = hidden -> (B, L, D): ``cross`` where hidden."""
    return torch.where(mask[..., None], cross.to(own.dtype), own)
