"""Signal branches: small learned features with a built-in notion of *where* and *when* to look.

Ours, not the paper's (docs/model.md, "Signal branches"). The tiny ViTs of AVFF, trained on a
few dozen identities, memorise identities instead of learning lip sync or blending artefacts
(docs/results.md: a learned model at chance where a hand-made statistic reaches 0.98). These
branches give the classifier the two signals a hand-made statistic finds, as *learned*
features with a structural prior, and add their logit to the fusion head's:

- :class:`SyncBranch` (audio-visual): per frame, a learned embedding of the mouth region
  (each clip's stored mouth box, or the template's: :mod:`avff_model.crop_geometry`) and of the mel frames heard around it; both are
  standardised over time and correlated at lags -L..L frames. A clip whose mouth moves with its
  own sound correlates at lag 0; moved, swapped or unrelated audio does not. With ``lips``, the
  same lagged correlation between the mouth's opening and width from face landmarks (each clip's
  ``lips``, :func:`avff_model.inputs.clip_lips`) and the sound's loudness, each on its own, with no
  learned weight before the head: on real faces the landmarks' opening follows speech where the
  mouth region's pixels barely do, and a learned sound channel fitted to 12 people did not carry to
  others (docs/results.md, "Real footage").
- :class:`TextureBranch` (visual): a learned 3x3 filter bank on the grey frames (and, with
  ``colour``, another on the colour left once the brightness is taken out), its log energy
  inside the face ellipse and in the border around it, and the colour difference between the
  two. Blur, resampling and blending seams change the inside but not the border.

Inputs as everywhere in ``avff_model``: video (B, 3, T, H, W), audio (B, 1, F, Tm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .crop_geometry import FACE_CENTRE, FACE_RADII, MOUTH_BOX, pixel_slices
from .fusion import frame_shift, time_overlap
from .inputs import AUDIO_MEAN, AUDIO_STD, mel_band

MOUTH_GRID = (8, 16)  # the mouth region pooled to this many (rows, columns)
LIP_CHANNELS = 2  # a clip's lips per frame: the mouth's opening and width (tasks/ingest/landmarks.lip_shape)
LIP_EPS = 1e-5  # the lips' variance floor: their opening moves by ~0.05 of the eyes-to-mouth distance
# the lip track's sync peak (:func:`sync_peak`): the sound's loudness in the band where speech moves with
# the lips, and the lags, in steps of the 25 fps track, of "near" (0.08 s), "far" (beyond 0.32 s) and the
# farthest (1.2 s); chosen on 10 people's real clips, confirmed on 5 others (docs/results.md, "Real footage")
SYNC_BAND_HZ = (500.0, 2000.0)
TRACK_NEAR, TRACK_FAR, TRACK_MAX_LAG = 2, 8, 30
TRACK_MIN_OVERLAP = 8  # the fewest overlapping steps a lag's correlation is taken over (0.32 s)
PEAK_FEATURES = 4


def _standardise(x: torch.Tensor, dim: int, eps: float = 1e-3) -> torch.Tensor:
    """Zero mean, unit variance along ``dim``; ``eps`` keeps a still series (a frozen face, silence)
    near zero instead of blowing its rounding noise up to unit size."""
    centred = x - x.mean(dim, keepdim=True)
    return centred * torch.rsqrt(centred.pow(2).mean(dim, keepdim=True) + eps)


def lagged_correlation(v: torch.Tensor, a: torch.Tensor, lags: int) -> torch.Tensor:
    """v, a (B, T, D), standardised over T -> (B, 2 * lags + 1): the mean over channels and the
    overlapping frames of v_t * a_{t + l}, for l = -lags..lags (index ``lags`` is lag 0)."""
    t = v.shape[1]
    out = []
    for lag in range(-lags, lags + 1):
        lo, hi = max(0, -lag), t - max(0, lag)  # v frames whose partner a_{t + lag} exists
        out.append((v[:, lo:hi] * a[:, lo + lag : hi + lag]).mean(dim=(1, 2)))  # (B,)
    return torch.stack(out, dim=1)  # (B, 2L + 1)


def mouth_region(video: torch.Tensor, mouth: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, T, H, W), mouth (B, 4) (top, bottom, left, right) fractions per clip or None (the
    template's MOUTH_BOX for every clip) -> (B, T, R * C): the grey mouth region of each frame,
    pooled to MOUTH_GRID."""
    _, _, _, h, w = video.shape
    grey = video.mean(dim=1)  # (B, T, H, W)
    if mouth is None or bool((mouth == mouth[:1]).all()):  # one box for the batch: one slice
        rows, cols = pixel_slices(MOUTH_BOX if mouth is None else tuple(mouth[0].tolist()), h, w)
        return F.adaptive_avg_pool2d(grey[:, :, rows, cols], MOUTH_GRID).flatten(2)  # (B, T, R * C)
    boxes = [pixel_slices(tuple(m), h, w) for m in mouth.tolist()]
    pooled = [
        F.adaptive_avg_pool2d(g[:, rows, cols], MOUTH_GRID) for g, (rows, cols) in zip(grey, boxes)
    ]  # B x (T, R, C)
    return torch.stack(pooled).flatten(2)  # (B, T, R * C)


def frames_of_sound(audio: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, 1, F, Tm) -> (B, T, F): the mel frames heard around each video frame, averaged.

    The mel window starts at the first frame's time (tasks/ingest/preprocess.py), so frame k,
    shown at k / fps, gets the columns of [(k - 1/2) / fps, (k + 1/2) / fps), cut to the clip
    (the first and last frames average the half window that exists). A window starting at the
    frame (k / fps onwards) would pair each frame with the sound half a frame after it.
    """
    tm = audio.shape[-1]
    steps = torch.arange(frames, device=audio.device), torch.arange(tm, device=audio.device)
    weights = time_overlap(steps[0], frames, steps[1], tm, out_shift=frame_shift(frames))  # (T, Tm), rows sum to 1
    return torch.einsum("bft,kt->bkf", audio[:, 0], weights.to(audio.dtype))  # (B, T, F)


def loudness(sound: torch.Tensor) -> torch.Tensor:
    """(B, T, F) normalised log-mel per frame (:func:`frames_of_sound`) -> (B, T, 1) its log energy:
    the log of the summed mel power, as the hand-made statistic's loudness (tasks/evaluate/handmade.py)."""
    return torch.logsumexp(sound.float() * (2.0 * AUDIO_STD) + AUDIO_MEAN, dim=-1, keepdim=True).to(sound.dtype)


def band_loudness(sound: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """(B, T, F) normalised log-mel per step, (F,) bool band -> (B, T, 1) the log energy inside the band."""
    return torch.logsumexp((sound.float() * (2.0 * AUDIO_STD) + AUDIO_MEAN)[..., band], dim=-1, keepdim=True)


def sync_peak(lips: torch.Tensor, loud: torch.Tensor) -> torch.Tensor:
    """lips (B, K, 2) opening and width, loud (B, K, 1) -> (B, 4): the lagged correlation of the mouth's
    opening (gap minus width, each standardised) with the loudness at lag 0, its best within
    TRACK_NEAR steps, its best beyond TRACK_FAR, and near minus far. A mouth that moves with its own
    sound peaks near lag 0; a moved sound peaks elsewhere, an unrelated one nowhere in particular
    (:func:`tasks.evaluate.handmade.sync_peak`, the hand-made twin, which takes each lag's Pearson
    correlation over its overlap; here both series are standardised once over the whole track, a
    batched form that differs from it only by the overlap's own mean and scale)."""
    z = _standardise(lips.float(), dim=1, eps=LIP_EPS)  # (B, K, 2)
    opening = _standardise(z[..., :1] - z[..., 1:], dim=1)  # (B, K, 1)
    lags = max(min(TRACK_MAX_LAG, lips.shape[1] - TRACK_MIN_OVERLAP), 0)
    profile = lagged_correlation(opening, _standardise(loud.float(), dim=1), lags)  # (B, 2L + 1)
    near = profile[:, max(lags - TRACK_NEAR, 0) : lags + TRACK_NEAR + 1].amax(dim=1)  # (B,)
    offsets = torch.arange(-lags, lags + 1, device=lips.device).abs()
    far_part = profile[:, offsets > TRACK_FAR]
    far = far_part.amax(dim=1) if far_part.shape[1] else torch.zeros_like(near)  # (B,)
    return torch.stack([profile[:, lags], near, far, near - far], dim=1)  # (B, 4)


class SyncBranch(nn.Module):
    """video (B, 3, T, H, W), audio (B, 1, F, Tm) -> (B, 2 * lags + 1 + D) lip-sync features, and with
    ``lips`` another LIP_CHANNELS * (2 * lags + 1) from the landmarks' mouth opening and width."""

    def __init__(self, n_mels: int, dim: int = 16, hidden: int = 32, lags: int = 3, lips: bool = False,
                 peak: bool = False, pixels: bool = True, lip_lags: bool = True):  # fmt: skip
        super().__init__()
        if not (pixels or lips) or (lips and not (lip_lags or peak)):
            raise ValueError("a sync branch needs its pixel part or the lips, and lips need their lags or their peak")
        self.lip_lags = lip_lags  # with lips: each lip channel's lagged correlation (False: their sync peak only)
        self.lags = lags
        self.pixels = pixels  # the learned mouth-region and sound embeddings (False: the lips' features only)
        self.peak = peak  # with lips: also their :func:`sync_peak` (a lip track's lags reach 1.2 s)
        self.register_buffer("band", torch.from_numpy(mel_band(n_mels, *SYNC_BAND_HZ)), persistent=False)
        # no bias on the last layers: standardising over time removes any constant, so a bias there
        # would get no gradient but float noise (which Adam turns into lr-sized steps)
        if pixels:
            self.mouth = nn.Sequential(nn.Linear(MOUTH_GRID[0] * MOUTH_GRID[1], hidden), nn.GELU(),
                                       nn.Linear(hidden, dim, bias=False))  # fmt: skip
            self.sound = nn.Sequential(nn.Linear(n_mels, hidden), nn.GELU(), nn.Linear(hidden, dim, bias=False))
        self.lips = lips
        self.out_dim = (2 * lags + 1 + dim if pixels else 0) + (
            (LIP_CHANNELS * (2 * lags + 1) if lip_lags else 0) + (PEAK_FEATURES if peak else 0) if lips else 0
        )

    def forward(self, video: torch.Tensor, audio: torch.Tensor, mouth: torch.Tensor | None = None,
                lips: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """``mouth``: (B, 4) each clip's mouth box as fractions (:func:`mouth_region`); None: the template's.
        ``lips``: (B, T, 2) each frame's mouth opening and width; None or zeros: no landmarks (no lip features)."""
        sound = frames_of_sound(audio, video.shape[2])  # (B, T, F)
        out = []
        if self.pixels:
            zv = _standardise(self.mouth(mouth_region(video, mouth)), dim=1)  # (B, T, D)
            za = _standardise(self.sound(sound), dim=1)  # (B, T, D)
            per_channel = (zv * za).mean(dim=1)  # (B, D) lag-0 correlation of each channel
            out += [lagged_correlation(zv, za, self.lags), per_channel]
        if self.lips:
            if lips is None:
                lips = video.new_zeros(video.shape[0], video.shape[2], LIP_CHANNELS)
            heard = sound if lips.shape[1] == sound.shape[1] else frames_of_sound(audio, lips.shape[1])  # (B, K, F)
            if self.lip_lags:
                zl = _standardise(lips.to(heard.dtype), dim=1, eps=LIP_EPS)  # (B, K, 2); a still mouth stays 0
                zs = _standardise(loudness(heard), dim=1)  # (B, K, 1)
                out += [
                    lagged_correlation(zl[..., c : c + 1], zs, self.lags) for c in range(LIP_CHANNELS)
                ]  # 2 x (B, 2L + 1)
            if self.peak:
                peak = sync_peak(lips, band_loudness(heard, self.band))  # (B, 4)
                still = lips.float().std(dim=1).amax(dim=1, keepdim=True) < 1e-4  # no landmarks: zeros
                out.append(torch.where(still, torch.zeros_like(peak), peak).to(heard.dtype))
        return torch.cat(out, dim=1)  # (B, out_dim)


def face_ellipse(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(H, W) bool: inside the face ellipse of the crop geometry (FACE_CENTRE, FACE_RADII)."""
    y = (torch.arange(h, device=device) + 0.5) / h - FACE_CENTRE[0]  # (H,)
    x = (torch.arange(w, device=device) + 0.5) / w - FACE_CENTRE[1]  # (W,)
    ry, rx = FACE_RADII
    return (y[:, None] / ry) ** 2 + (x[None, :] / rx) ** 2 <= 1.0  # (H, W)


class TextureBranch(nn.Module):
    """video (B, 3, T, H, W) -> (B, 3 * filters + 3), with ``colour`` (B, 6 * filters + 3): per filter, the
    log energy inside the face ellipse, in the border, and their difference; then the inside-minus-border
    mean colour. The grey bank filters the frames' brightness; the colour bank (``colour``) filters what is
    left of each pixel once its brightness is taken out, where a pasted face's tint meets the skin around it
    (a seam the grey frames do not show; measured, not adopted: docs/learning.md "A colour bank for the texture
    branch")."""

    def __init__(self, filters: int = 8, colour: bool = False):
        super().__init__()
        self.bank = nn.Conv2d(1, filters, kernel_size=3, padding=1, bias=False)
        with torch.no_grad():  # filter 0 starts as the Laplacian, the rest as small random filters
            self.bank.weight.normal_(0.0, 0.3)
            self.bank.weight[0, 0] = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
        self.colour = nn.Conv2d(3, filters, kernel_size=3, padding=1, bias=False) if colour else None
        if self.colour is not None:
            # filters 0-3 start as the vertical and horizontal edges of the red and the blue channel (the same
            # filter on every channel would see nothing: the channels of a colour without brightness sum to 0)
            with torch.no_grad():
                self.colour.weight.normal_(0.0, 0.3)
                edge = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]) / 4
                for k, (channel, e) in enumerate([(0, edge), (0, edge.T), (2, edge), (2, edge.T)][:filters]):
                    self.colour.weight[k] = 0.0
                    self.colour.weight[k, channel] = e
        self.out_dim = 3 * filters * (2 if colour else 1) + 3

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        inside = face_ellipse(h, w, video.device).to(video.dtype)  # (H, W)
        border = 1.0 - inside
        grey = video.mean(dim=1).reshape(b * t, 1, h, w)  # (B T, 1, H, W)
        inside_c, border_c = inside[1:-1, 1:-1], border[1:-1, 1:-1]

        def log_energy(filtered: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            energy = filtered[..., 1:-1, 1:-1].pow(2).reshape(b, t, -1, h - 2, w - 2)  # (B, T, K, H-2, W-2)
            return torch.log((energy * m).sum(dim=(-2, -1)) / m.sum() + 1e-6).mean(dim=1)  # (B, K)

        banks = [self.bank(grey)]
        if self.colour is not None:  # each frame minus its brightness: (B T, 3, H, W)
            banks.append(self.colour(video.transpose(1, 2).reshape(b * t, c, h, w) - grey))
        energies = [(log_energy(f, inside_c), log_energy(f, border_c)) for f in banks]  # per bank (B, K) x 2
        colour_in = (video * inside).sum(dim=(-2, -1)).mean(dim=2) / inside.sum()  # (B, 3)
        colour_out = (video * border).sum(dim=(-2, -1)).mean(dim=2) / border.sum()  # (B, 3)
        parts = [p for e_in, e_out in energies for p in (e_in, e_out, e_in - e_out)]
        return torch.cat([*parts, colour_in - colour_out], dim=1)  # (B, 3K + 3) or (B, 6K + 3)


class SignalFeatures(nn.Module):
    """The branches a head's modalities allow: "sync" needs both, "texture" needs video.

    forward(video, audio) -> (B, out_dim), the branches' features concatenated.
    """

    def __init__(self, n_mels: int, *, sync: bool, texture: bool, lips: bool = False, peak: bool = False,
                 pixels: bool = True, lip_lags: bool = True, colour: bool = False):  # fmt: skip
        super().__init__()
        self.sync = SyncBranch(n_mels, lips=lips, peak=peak, pixels=pixels, lip_lags=lip_lags) if sync else None
        self.texture = TextureBranch(colour=colour) if texture else None
        self.out_dim = (self.sync.out_dim if sync else 0) + (self.texture.out_dim if texture else 0)

    def forward(self, video: torch.Tensor, audio: torch.Tensor, mouth: torch.Tensor | None = None,
                lips: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        parts = []
        if self.sync is not None:
            parts.append(self.sync(video, audio, mouth, lips))
        if self.texture is not None:
            parts.append(self.texture(video))
        return torch.cat(parts, dim=1).to(video.dtype)  # (B, S)
