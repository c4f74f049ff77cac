"""Training-time augmentation: per-clip video and audio transforms, batch mixing, down-up resizing.

Everything is a pure function of tensors and an explicit ``torch.Generator``; nothing reads a
global RNG, so an epoch's augmented batches depend only on (seed, epoch, clip) and a resumed
run sees the same ones. The train loader applies these per-clip transforms
(:mod:`tasks.train.data`); batch mixing and down-up resizing live in :mod:`tasks.train.batch_augment`.
Evaluation loaders never augment.

Video, one clip ``(3, T, H, W)`` float in [0, 1] (before ImageNet normalisation). Parameters
are drawn ONCE per clip (:func:`sample_video_params`) and applied to all T frames, so the
frames of a clip stay consistent with each other: a flip flips every frame, a rotation turns
every frame by the same angle, colour jitter is one per-pixel colour map for the whole clip
(contrast blends towards the clip's mean grey, not each frame's), JPEG re-encodes every frame
at one quality, blur uses one sigma. Only noise samples differ per frame (as sensor noise
does); its standard deviation is one per clip.

Audio, one clip's log-mel ``(F, Tm)`` = ln(mel power) as Kaldi writes it (before the
AudioSet normalisation). The shards hold no waveform and no phase, so torchaudio's
``PitchShift`` (waveform) and ``TimeStretch`` (complex STFT) cannot run; their mel-domain
counterparts are:

- pitch shift   ≈ a shift along the mel axis by a fractional number of bins (mel bins are
                  near-logarithmic in frequency above ~1 kHz, where a bin shift is a constant
                  pitch ratio; below it is only approximate). Keeps A/V alignment.
- noise         white noise added in the POWER domain at a drawn SNR: ln(e^x + n), with n
                  exponential (the power of Gaussian noise), scaled to the clip's mean power.
                  Keeps A/V alignment.
- time stretch  the time axis resampled by a rate, cropped/padded back to Tm. BREAKS A/V
                  synchrony (the mouth no longer matches the sound): off by default.
- time shift    the mel frames moved by up to N frames, padded with the clip's quietest
                  level. BREAKS A/V synchrony: off by default.

AVFF detects fakes partly by audio-visual (mis)alignment, so a stretched or shifted REAL clip
looks like a FAKE one; the two sync-breaking transforms are there to be ablated, not used.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from storage.shard_schema import decode_jpeg, encode_jpeg
from tasks.train.settings import AudioAugment, VideoAugment

# Rec. 601 luma weights (what torchvision's rgb_to_grayscale uses)
_LUMA = (0.299, 0.587, 0.114)
# RGB -> YIQ; a hue rotation turns the (I, Q) chroma plane and keeps luma Y
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass(frozen=True)
class ClipAugment:
    """What the train loader applies to each clip."""

    video: VideoAugment = field(default_factory=VideoAugment)
    audio: AudioAugment = field(default_factory=AudioAugment)

    @property
    def enabled(self) -> bool:
        return self.video.enabled or self.audio.enabled


def clip_generator(seed: int, epoch: int, key: str) -> torch.Generator:
    """The generator of one clip in one epoch: independent of worker count and sample order."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


# ---------------------------------------------------------------- video: one clip (3, T, H, W) in [0, 1]


@dataclass(frozen=True)
class VideoParams:
    """One clip's drawn parameters; identity values mean "not applied"."""

    flip: bool = False
    angle: float = 0.0  # degrees, counter-clockwise as displayed
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # turns
    jpeg_quality: int | None = None
    blur_sigma: float | None = None
    noise_std: float | None = None


def sample_video_params(cfg: VideoAugment, g: torch.Generator) -> VideoParams:
    """Draw one clip's parameters. The same number of draws happens whatever is enabled."""
    u = torch.rand(12, generator=g).tolist()

    def span(x: float, width: float) -> float:  # x in [0, 1) -> U(1 - width, 1 + width)
        return 1.0 + width * (2 * x - 1)

    lo_q, hi_q = cfg.jpeg_quality
    return VideoParams(
        flip=u[0] < cfg.hflip,
        angle=cfg.rotate * (2 * u[1] - 1),
        brightness=span(u[2], cfg.brightness),
        contrast=span(u[3], cfg.contrast),
        saturation=span(u[4], cfg.saturation),
        hue=cfg.hue * (2 * u[5] - 1),
        jpeg_quality=lo_q + min(int(u[7] * (hi_q - lo_q + 1)), hi_q - lo_q) if u[6] < cfg.jpeg_p else None,
        blur_sigma=cfg.blur_sigma[0] + u[9] * (cfg.blur_sigma[1] - cfg.blur_sigma[0]) if u[8] < cfg.blur_p else None,
        noise_std=cfg.noise_std[0] + u[11] * (cfg.noise_std[1] - cfg.noise_std[0]) if u[10] < cfg.noise_p else None,
    )


def hflip(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) -> every frame mirrored left-right."""
    return torch.flip(video, dims=(-1,))


def rotate(video: torch.Tensor, degrees: float) -> torch.Tensor:
    """(3, T, H, W) -> every frame turned ``degrees`` counter-clockwise as displayed (reflection padding).

    90 degrees equals ``torch.rot90(video, 1, dims=(-2, -1))`` on square frames.
    """
    if degrees == 0:
        return video
    c, t, h, w = video.shape
    a = math.radians(degrees)
    # affine_grid maps output to input coordinates in [-1, 1]; the aspect terms keep angles true for H != W
    theta = torch.tensor([[math.cos(a), -math.sin(a) * h / w, 0.0], [math.sin(a) * w / h, math.cos(a), 0.0]],
                         dtype=video.dtype)  # fmt: skip
    frames = video.permute(1, 0, 2, 3)  # (T, 3, H, W)
    grid = F.affine_grid(theta.expand(t, 2, 3), [t, c, h, w], align_corners=False)  # (T, H, W, 2)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.permute(1, 0, 2, 3)  # (3, T, H, W)


def grey(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) -> (1, T, H, W) luma."""
    w = torch.tensor(_LUMA, dtype=video.dtype).view(3, 1, 1, 1)
    return (video * w).sum(dim=0, keepdim=True)


def adjust_brightness(video: torch.Tensor, factor: float) -> torch.Tensor:
    return (video * factor).clamp(0, 1)


def adjust_contrast(video: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the CLIP's mean grey (one constant for all frames, so one map for all)."""
    mean = grey(video).mean()
    return (factor * video + (1 - factor) * mean).clamp(0, 1)


def adjust_saturation(video: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * video + (1 - factor) * grey(video)).clamp(0, 1)


def hue_matrix(turns: float) -> torch.Tensor:
    """(3, 3) RGB -> RGB map rotating the YIQ chroma plane by ``turns`` of a full circle."""
    a = 2 * math.pi * turns
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])
    return torch.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ


def adjust_hue(video: torch.Tensor, turns: float) -> torch.Tensor:
    if turns == 0:
        return video
    m = hue_matrix(turns).to(video.dtype)
    return torch.einsum("ij,jthw->ithw", m, video).clamp(0, 1)  # (3, T, H, W)


def jpeg_reencode(video: torch.Tensor, quality: int) -> torch.Tensor:
    """Every frame through the shards' own JPEG codec (storage.shard_schema) at ``quality``."""
    frames = (video.permute(1, 2, 3, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()  # (T, H, W, 3)
    out = np.stack([decode_jpeg(encode_jpeg(f, quality)) for f in frames])  # (T, H, W, 3)
    return torch.from_numpy(out).permute(3, 0, 1, 2).to(video.dtype) / 255.0  # (3, T, H, W)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """(K,) normalised 1-D Gaussian, K = 2 ceil(3 sigma) + 1."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur_last(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """1-D blur along the last axis as a weighted sum of K shifted views (faster than a 1-channel conv on CPU)."""
    r = (len(k) - 1) // 2
    n = x.shape[-1]
    rows = x.reshape(-1, 1, n)  # (rows, 1, n): the shape F.pad's reflect mode takes
    padded = F.pad(rows, (r, r), mode="reflect" if n > r else "replicate").reshape(*x.shape[:-1], n + 2 * r)
    out = torch.zeros_like(x)
    for i, w in enumerate(k.tolist()):
        out.add_(padded[..., i : i + n], alpha=w)
    return out


def gaussian_blur(video: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable blur of every frame with one sigma (reflect padding)."""
    k = gaussian_kernel(sigma)
    x = _blur_last(video, k)  # along W
    return _blur_last(x.transpose(-1, -2), k).transpose(-1, -2).contiguous()  # along H


def gaussian_noise(video: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    return (video + std * torch.randn(video.shape, generator=g, dtype=video.dtype)).clamp(0, 1)


def apply_video_params(video: torch.Tensor, p: VideoParams, g: torch.Generator) -> torch.Tensor:
    """Geometry, then colour, then degradations; ``g`` only feeds the noise."""
    if p.flip:
        video = hflip(video)
    video = rotate(video, p.angle)
    if p.brightness != 1:
        video = adjust_brightness(video, p.brightness)
    if p.contrast != 1:
        video = adjust_contrast(video, p.contrast)
    if p.saturation != 1:
        video = adjust_saturation(video, p.saturation)
    video = adjust_hue(video, p.hue)
    if p.jpeg_quality is not None:
        video = jpeg_reencode(video, p.jpeg_quality)
    if p.blur_sigma is not None:
        video = gaussian_blur(video, p.blur_sigma)
    if p.noise_std is not None:
        video = gaussian_noise(video, p.noise_std, g)
    return video


def augment_video(video: torch.Tensor, cfg: VideoAugment, g: torch.Generator) -> torch.Tensor:
    """(3, T, H, W) in [0, 1] -> the same shape, one parameter draw for the whole clip."""
    if not cfg.enabled:
        return video
    return apply_video_params(video, sample_video_params(cfg, g), g)


# ---------------------------------------------------------------- audio: one log-mel (F, Tm)


def shift_mel_bins(mel: torch.Tensor, bins: float) -> torch.Tensor:
    """(F, Tm) -> content moved ``bins`` mel bins up (fractional: linear interpolation, edges held)."""
    if bins == 0:
        return mel
    n = mel.shape[0]
    src = torch.arange(n, dtype=torch.float32) - bins  # where each output bin reads from
    src = src.clamp(0, n - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (src - lo.float()).to(mel.dtype).unsqueeze(1)  # (F, 1)
    return (1 - w) * mel[lo] + w * mel[hi]


def _fit_time(mel: torch.Tensor, length: int) -> torch.Tensor:
    """(F, T') -> (F, length): crop the end or pad it with each bin's quietest level."""
    t = mel.shape[1]
    if t >= length:
        return mel[:, :length]
    floor = mel.min(dim=1, keepdim=True).values  # (F, 1)
    return torch.cat([mel, floor.expand(-1, length - t)], dim=1)


def stretch_time(mel: torch.Tensor, rate: float) -> torch.Tensor:
    """(F, Tm) played ``rate`` times faster (>1 shorter), then cropped/padded back to Tm."""
    if rate == 1:
        return mel
    f, tm = mel.shape
    new = max(1, round(tm / rate))
    out = F.interpolate(mel[None], size=new, mode="linear", align_corners=False)[0]  # (F, new)
    return _fit_time(out, tm)


def shift_time(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """(F, Tm) delayed by ``frames`` (negative: advanced), gaps filled with each bin's quietest level."""
    if frames == 0:
        return mel
    tm = mel.shape[1]
    floor = mel.min(dim=1, keepdim=True).values  # (F, 1)
    k = min(abs(frames), tm)
    pad = floor.expand(-1, k)
    return torch.cat([pad, mel[:, : tm - k]], 1) if frames > 0 else torch.cat([mel[:, k:], pad], 1)


def add_power_noise(mel: torch.Tensor, snr_db: float, g: torch.Generator) -> torch.Tensor:
    """ln(e^mel + n): white noise of exponential power per cell at ``snr_db`` below the mean power."""
    power = mel.double().exp()  # (F, Tm)
    level = power.mean() / 10 ** (snr_db / 10)
    noise = -torch.rand(mel.shape, generator=g, dtype=torch.float64).clamp_min(1e-12).log()  # Exp(1)
    return (power + level * noise).log().to(mel.dtype)


def augment_mel(mel: torch.Tensor, cfg: AudioAugment, g: torch.Generator) -> torch.Tensor:
    """(F, Tm) raw log-mel -> the same shape; pitch, then stretch, shift, noise."""
    if not cfg.enabled:
        return mel
    u = torch.rand(5, generator=g).tolist()  # fixed number of draws
    mel = shift_mel_bins(mel, cfg.pitch_shift * (2 * u[0] - 1))
    mel = stretch_time(mel, 1.0 + cfg.time_stretch * (2 * u[1] - 1))
    mel = shift_time(mel, round(cfg.time_shift * (2 * u[2] - 1)))
    if u[3] < cfg.noise_p:
        lo, hi = cfg.noise_snr_db
        mel = add_power_noise(mel, lo + u[4] * (hi - lo), g)
    return mel
