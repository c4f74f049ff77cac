"""Temporal agreement between one modality's tokens and the other's cross-modal prediction.

The lip-sync cues are second order: a mouth that opens *when* the sound is loud. A per-token
MLP on [v_t ; A2V(a)_t] followed by a mean over tokens can only approximate that product with
one GELU layer; :class:`TemporalAgreement` computes it. Both inputs are projected to H channels,
standardised over time per position (so a clip's constant look or loudness drops out), and
multiplied: per position and channel, the correlation over time of what this modality shows
with what the other predicts, at lags ``lags`` (in time tokens). The positions are then
pooled by mean and max (a mouth is one place on the video grid; on the audio grid all
frequency rows carry loudness).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import init_weights

MIN_TIME = 3  # fewer time steps carry no correlation: the features are then zeros


class TemporalAgreement(nn.Module):
    """own (B, L, D), cross (B, L, D) on the same token grid -> (B, 2 * len(lags) * H).

    ``bind_time(token_time)`` (L,) the time index of each token must be called once (AVFF does);
    every time step must hold the same number of positions S = L / T'.
    """

    def __init__(self, width: int, hidden: int, lags: tuple[int, ...] = (-1, 0, 1)):
        super().__init__()
        self.own = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden))
        self.cross = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden))
        self.lags = lags
        self.register_buffer("order", torch.empty(0, dtype=torch.long), persistent=False)
        self.num_time = 0
        self.apply(init_weights)

    @property
    def out_dim(self) -> int:
        return 2 * len(self.lags) * self.own[1].out_features

    def bind_time(self, token_time: torch.Tensor) -> None:
        """token_time (L,): tokens are regrouped as (T', S) by a stable sort on it."""
        counts = torch.bincount(token_time)
        if (counts != counts[0]).any():
            raise ValueError("every time step needs the same number of tokens")
        self.order = torch.argsort(token_time, stable=True).to(self.order.device)
        self.num_time = len(counts)
        if max(abs(k) for k in self.lags) >= self.num_time:
            raise ValueError(f"lags {self.lags} need more than {self.num_time} time steps")

    def _grid(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, T', S, H), time-major, standardised over T'."""
        if self.num_time == 0:
            raise RuntimeError("TemporalAgreement.bind_time was never called")
        x = x[:, self.order].unflatten(1, (self.num_time, -1)).float()  # (B, T', S, H)
        x = x - x.mean(dim=1, keepdim=True)
        return x / (x.pow(2).mean(dim=1, keepdim=True) + 1e-4).sqrt()

    def forward(self, own: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
        if 0 < self.num_time < MIN_TIME:  # two standardised steps are +-1 whatever the clip: noise, not agreement
            return own.new_zeros(own.shape[0], self.out_dim)
        o, c = self._grid(self.own(own)), self._grid(self.cross(cross))  # (B, T', S, H) each
        t = self.num_time
        corr = []
        for k in self.lags:  # own at t against cross at t + k
            a, b = (o[:, : t - k], c[:, k:]) if k >= 0 else (o[:, -k:], c[:, : t + k])
            corr.append((a * b).mean(dim=1))  # (B, S, H)
        corr = torch.cat(corr, dim=-1)  # (B, S, len(lags) H)
        return torch.cat([corr.mean(dim=1), corr.amax(dim=1)], dim=-1).to(own.dtype)  # (B, 2 len(lags) H)
