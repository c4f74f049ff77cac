"""Pseudo-fakes: labelled FAKE clips made on the fly from REAL ones (stage 2).

Each kind imitates a family of manipulation without depending on any one generator, so the
classifier sees unlimited negatives whose only difference from a REAL clip is the artefact:

- ``self_blend``     the face blended with a colour-, blur- and warp-jittered copy of itself
                     through a soft ellipse (Shiohara & Yamasaki 2022, "self-blended images"):
                     seams, a blur step and a colour mismatch at the blend boundary
- ``face_resample``  the face region down- and up-sampled (a cheap stand-in for a face-only
                     re-encode: the face is softer than its surroundings)
- ``mouth_freeze``   the lower face held at one frame for the whole clip (mouth stops moving)
- ``mouth_shuffle``  the lower face's frames in a random order (mouth moves, out of time)
- ``audio_shift``    the log-mel rolled by 0.1-1 s in time (lip sync off, same sound)
- ``audio_swap``     another clip's audio from the same batch (voice and words do not fit)
- ``audio_pitch``    the log-mel shifted along the mel axis by a few bins (a pitch shift)

Tensors as in :mod:`tasks.train.data`: video (B, 3, T, H, W) ImageNet-normalised face crops
(the face roughly centred), audio (B, 1, F, Tm) normalised log-mel, 10 ms per column. Every
function is pure; randomness comes from an explicit CPU ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from avff_model.crop_geometry import FACE_CENTRE, FACE_RADII, MOUTH_HALF_HEIGHT, MOUTH_HALF_WIDTH, MOUTH_Y
from tasks.train.augment import gaussian_blur, shift_mel_bins
from tasks.train.batch_augment import down_up
from tasks.train.settings import PSEUDO_FAKE_KINDS as KINDS
from tasks.train.settings import PseudoFakeAugment, PseudoFakeKind

AUDIO_KINDS = tuple(k for k in KINDS if k.startswith("audio_"))
VISUAL_KINDS = tuple(k for k in KINDS if k not in AUDIO_KINDS)
# the mouth ellipse of a clip without a stored mouth box: inscribed in the template's mouth box
MOUTH_CENTRE, MOUTH_RADII = (MOUTH_Y, 0.5), (MOUTH_HALF_HEIGHT, MOUTH_HALF_WIDTH)

# The pseudo-fake kinds that imitate each manipulation type of the synthetic generator
# (storage.manipulations.MANIPULATIONS; a test checks every type has an entry): a model
# trained with a type's stand-in has seen that type in all but name, so a run that holds the type
# out (exclude_manipulations) draws none of them, and a result with one switched on says so.
# A frozen mouth is a degenerate unrelated mouth track, hence mouth_decorrelated's second kind.
STAND_INS: dict[str, tuple[PseudoFakeKind, ...]] = {
    "lipsync_offset": ("audio_shift",),
    "audio_swap": ("audio_swap",),
    "mouth_decorrelated": ("mouth_shuffle", "mouth_freeze"),
    "face_blend": ("self_blend",),
    "visual_artifact": ("face_resample",),
    "audio_pitch": ("audio_pitch",),
}


# The pseudo-fake kinds each signal branch can see (``Objective.branch_supervision="seen"``): the texture
# branch measures the face's pixels alone, the sync branch the mouth against the sound; "signals" is the one
# head over both (signal_fusion="sum"). audio_pitch changes neither the pixels nor the sync: no branch sees it.
SEEN_BY: dict[str, frozenset[str]] = {
    "texture": frozenset({"self_blend", "face_resample"}),
    "sync": frozenset({"mouth_freeze", "mouth_shuffle", "audio_shift", "audio_swap"}),
}
SEEN_BY["signals"] = SEEN_BY["texture"] | SEEN_BY["sync"]


def seen_mask(
    branch: str, pseudo_kind: torch.Tensor | None, kinds: tuple[str, ...], target: torch.Tensor
) -> torch.Tensor:
    """(B,) bool: the clips whose label a signal ``branch`` can judge: REAL clips as read (target 0, no
    pseudo-fake) and the pseudo-fakes of the kinds it sees (SEEN_BY); ``pseudo_kind`` (B,) indexes ``kinds``,
    -1 for none (None: no pseudo-fakes in the batch). A FAKE as read is no branch's: its kind is unknown."""
    applied = torch.zeros_like(target, dtype=torch.long) - 1 if pseudo_kind is None else pseudo_kind  # (B,)
    sees = torch.tensor([k in SEEN_BY[branch] for k in kinds] + [False], dtype=torch.bool, device=target.device)
    return ((target == 0) & (applied < 0)) | sees[applied.clamp_min(0)] & (applied >= 0)


def stand_ins(manipulations: Iterable[str]) -> frozenset[str]:
    """The pseudo-fake kinds standing in for any of ``manipulations`` (a type not in STAND_INS has none)."""
    return frozenset(k for m in manipulations for k in STAND_INS.get(m, ()))


def kinds_drawn(augment: PseudoFakeAugment, held_out: Iterable[str] = ()) -> tuple[str, ...]:
    """The pseudo-fake kinds a run draws: ``augment``'s, less the stand-ins of the ``held_out``
    manipulation types; () when pseudo-fakes are off or no kind is left."""
    if not augment.enabled:
        return ()
    gone = stand_ins(held_out)
    return tuple(k for k in augment.kinds if k not in gone)


def ellipse_mask(
    h: int, w: int, centre: tuple[float, float], radii: tuple[float, float], softness: float = 0.3
) -> torch.Tensor:
    """(H, W) in [0, 1]: 1 inside the ellipse shrunk by ``softness``, 0 on and outside the ellipse.

    ``centre`` and ``radii`` are fractions of (H, W); between the two ellipses the weight falls
    smoothly (smoothstep of the elliptical radius), so a blend has no hard edge.
    """
    y = (torch.arange(h, dtype=torch.float32) + 0.5) / h  # (H,)
    x = (torch.arange(w, dtype=torch.float32) + 0.5) / w  # (W,)
    r = (((y[:, None] - centre[0]) / radii[0]) ** 2 + ((x[None] - centre[1]) / radii[1]) ** 2).sqrt()  # (H, W)
    t = ((1 - r) / softness).clamp(0, 1)
    return t * t * (3 - 2 * t)


def mouth_ellipses(mouth: torch.Tensor | None) -> tuple:
    """The mouth ellipse of each clip: inscribed in its mouth box, (B, 4) (top, bottom, left, right)
    fractions as the batch's ``"mouth"`` holds them, or the template's for every clip when None.
    -> (centres, radii), each a (row, column) pair or (B, 2)."""
    if mouth is None:
        return MOUTH_CENTRE, MOUTH_RADII
    m = mouth.detach().float().cpu()
    centres = torch.stack([(m[:, 0] + m[:, 1]) / 2, (m[:, 2] + m[:, 3]) / 2], dim=1)  # (B, 2)
    radii = torch.stack([(m[:, 1] - m[:, 0]) / 2, (m[:, 3] - m[:, 2]) / 2], dim=1)  # (B, 2)
    return centres, radii


def blend(source: torch.Tensor, other: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """source, other (B, 3, T, H, W), mask (B, 1, 1, H, W) or (H, W) -> ``other`` where mask is 1.

    Exactly ``source`` where the mask is 0 (``torch.lerp`` with weight 0).
    """
    return torch.lerp(source, other, mask.to(source.dtype))


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)  # (n,)


def face_masks(b: int, h: int, w: int, g: torch.Generator, centre=FACE_CENTRE, radii=FACE_RADII) -> torch.Tensor:
    """(B, 1, 1, H, W): one soft ellipse per clip, centre and radii jittered by up to 5 % / 15 %.

    ``centre``, ``radii``: (row, column) fractions, one pair for every clip or a (B, 2) tensor.
    """
    dc = _uniform(2 * b, -0.05, 0.05, g).view(b, 2)
    sr = _uniform(2 * b, 0.85, 1.15, g).view(b, 2)
    c = torch.as_tensor(centre, dtype=torch.float32).expand(b, 2) + dc  # (B, 2)
    r = torch.as_tensor(radii, dtype=torch.float32).expand(b, 2) * sr  # (B, 2)
    masks = [ellipse_mask(h, w, (float(c[i, 0]), float(c[i, 1])), (float(r[i, 0]), float(r[i, 1]))) for i in range(b)]
    return torch.stack(masks)[:, None, None]  # (B, 1, 1, H, W)


def jitter_colour(video: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """video (B, 3, T, H, W), gain and bias (B, 3) per clip and channel -> gain * video + bias."""
    return video * gain[:, :, None, None, None] + bias[:, :, None, None, None]


def warp(video: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """video (B, 3, T, H, W), scale (B,), shift (B, 2) as fractions of the frame -> every frame
    of clip b zoomed by scale[b] and moved by shift[b] (bilinear, border padding)."""
    b, c, t, h, w = video.shape
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -2 * shift  # grid coordinates span [-1, 1]
    theta = theta.to(video.device, video.dtype).repeat_interleave(t, dim=0)  # (B T, 2, 3)
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)  # (B T, 3, H, W)
    grid = F.affine_grid(theta, [b * t, c, h, w], align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, t, c, h, w).transpose(1, 2)  # (B, 3, T, H, W)


@dataclass(frozen=True)
class BlendParams:
    """One self-blend draw per clip (see :func:`draw_blend_params`)."""

    gain: torch.Tensor  # (B, 3) colour gain per channel
    bias: torch.Tensor  # (B, 3) colour offset per channel, normalised units
    zoom: torch.Tensor  # (B,)
    shift: torch.Tensor  # (B, 2) fractions of the frame
    sigma: torch.Tensor  # (B,) blur

    def take(self, i: torch.Tensor) -> BlendParams:
        return BlendParams(self.gain[i], self.bias[i], self.zoom[i], self.shift[i], self.sigma[i])


def draw_blend_params(b: int, g: torch.Generator) -> BlendParams:
    """Colour gain U(0.85, 1.15) and bias U(-0.3, 0.3) per channel (normalised units, about +-7 %
    of the pixel range), zoom U(0.96, 1.04), shift up to 2 % of the frame, blur sigma U(0.5, 1.5)."""
    return BlendParams(
        _uniform(3 * b, 0.85, 1.15, g).view(b, 3), _uniform(3 * b, -0.3, 0.3, g).view(b, 3),
        _uniform(b, 0.96, 1.04, g), _uniform(2 * b, -0.02, 0.02, g).view(b, 2), _uniform(b, 0.5, 1.5, g),
    )  # fmt: skip


def self_blend(video: torch.Tensor, mask: torch.Tensor, params: BlendParams) -> torch.Tensor:
    """video (B, 3, T, H, W), mask (B, 1, 1, H, W) -> each clip blended with a jittered copy of itself
    (colour, then zoom/shift, then blur); outside the mask the clip is unchanged."""
    dev, dt = video.device, video.dtype
    other = warp(jitter_colour(video, params.gain.to(dev, dt), params.bias.to(dev, dt)), params.zoom, params.shift)
    other = torch.stack([gaussian_blur(o, float(s)) for o, s in zip(other, params.sigma)])  # (B, 3, T, H, W)
    return blend(video, other, mask.to(dev))


def face_resample(video: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """video (B, 3, T, H, W), mask (B, 1, 1, H, W) -> the masked face down-up resampled by ``scale``."""
    return blend(video, down_up(video, scale), mask.to(video.device))


def mouth_freeze(video: torch.Tensor, mask: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """video (B, 3, T, H, W), mask (B, 1, 1, H, W), frame (B,) -> the masked mouth of clip b held at frame[b]."""
    idx = frame.to(video.device).view(-1, 1, 1, 1, 1).expand(-1, video.shape[1], 1, *video.shape[-2:])
    held = video.gather(2, idx).expand_as(video)  # (B, 3, T, H, W)
    return blend(video, held, mask.to(video.device))


def mouth_shuffle(video: torch.Tensor, mask: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """video (B, 3, T, H, W), mask (B, 1, 1, H, W), order (B, T) frame permutations -> the masked
    mouth of clip b shown in frame order order[b]."""
    idx = order.to(video.device)[:, None, :, None, None].expand(-1, video.shape[1], -1, *video.shape[-2:])
    return blend(video, video.gather(2, idx), mask.to(video.device))


def shuffled_order(b: int, t: int, g: torch.Generator) -> torch.Tensor:
    """(B, T) random frame orders, none of them the identity (rolled by one if drawn)."""
    order = torch.stack([torch.randperm(t, generator=g) for _ in range(b)])  # (B, T)
    ident = (order == torch.arange(t)).all(dim=1)
    order[ident] = torch.arange(t).roll(1)
    return order


def _reorder_lips(lips: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """lips (n, K, 2) over a clip's span, order (n, T) the frame each frame shows -> the lips the
    re-ordered frames show: step s lies in frame f = s * T // K and takes the step at the same offset
    in frame order[f]. K = T (one lip shape per frame): plain re-indexing; a 25 fps lip track (K > T):
    each frame's stretch of steps moves with it."""
    n, k, _ = lips.shape
    t = order.shape[1]
    pos = (torch.arange(k, dtype=torch.float64) + 0.5) * t / k  # (K,) in frames
    frame = pos.floor().long().clamp(max=t - 1)  # (K,)
    moved = order.cpu().double()[:, frame] + (pos - frame)  # (n, K) positions in the source frames
    steps = (moved * k / t).floor().long().clamp(0, k - 1).to(lips.device)  # (n, K)
    return torch.gather(lips, 1, steps[..., None].expand(-1, -1, lips.shape[-1]))


def shift_audio(audio: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """audio (B, 1, F, Tm), columns (B,) ints -> clip b's mel rolled by columns[b] in time.

    Column t moves to (t + columns[b]) mod Tm: the same sound, out of step with the mouth,
    and no padded silence (which a model could spot instead of the sync).
    """
    return torch.stack([a.roll(int(c), dims=-1) for a, c in zip(audio, columns.tolist())])


def derangement(b: int, g: torch.Generator) -> torch.Tensor:
    """(B,) a permutation of range(B) with no fixed point (B >= 2): a cyclic shift of a random order."""
    order = torch.randperm(b, generator=g)
    out = torch.empty(b, dtype=torch.long)
    out[order] = order.roll(1)
    return out


def pitch_shift(audio: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """audio (B, 1, F, Tm), bins (B,) -> clip b's mel moved bins[b] mel bins up (edges held)."""
    return torch.stack([shift_mel_bins(a[0], float(k))[None] for a, k in zip(audio, bins.tolist())])


def expected_targets(y, p: float) -> np.ndarray:
    """(N,) labels (FAKE = 1) -> (N,) the expected training target of each clip under pseudo-fakes of
    rate ``p``: a FAKE stays 1, a REAL clip is turned FAKE with probability p. Their mean is the FAKE
    fraction the stage-2 objective sees (the class weight's and the prior baseline's prior).

    Exact in expectation for batches of two or more clips (a batch of one cannot swap audio, so its
    draw of ``audio_swap`` leaves the clip REAL).
    """
    y = np.asarray(y, dtype=np.float64)
    return y + p * (1.0 - y)


class PseudoFakes:
    """A batch transform: a fraction ``p`` of the REAL clips of each batch become labelled FAKEs.

    Each chosen clip gets one kind from ``kinds`` at random. Draws happen for every clip of
    every batch whether or not it is chosen, so one batch's content does not move later draws.
    The batch gains ``"pseudo_kind"`` (B,) long: the index in ``kinds`` applied, -1 for none.
    """

    def __init__(self, p: float, kinds: tuple[str, ...] = KINDS, *, generator: torch.Generator,
                 hop_s: float = 0.01, shift_s: tuple[float, float] = (0.1, 1.0)):  # fmt: skip
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ValueError(f"pseudo-fake kinds must be a non-empty subset of {KINDS}, got {kinds}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p is a probability, got {p}")
        self.p, self.kinds, self.g = p, tuple(kinds), generator
        self.columns = (max(1, round(shift_s[0] / hop_s)), max(1, round(shift_s[1] / hop_s)))

    def __call__(self, batch: dict) -> dict:
        video, audio, target = batch["video"], batch["audio"], batch["target"]  # (B, 3, T, H, W), (B, 1, F, Tm), (B,)
        b, _, t, h, w = video.shape
        g = self.g
        chosen = (torch.rand(b, generator=g) < self.p) & (target.cpu() == 0)  # (B,)
        kind = torch.randint(len(self.kinds), (b,), generator=g)  # (B,)
        face, mouth = face_masks(b, h, w, g), face_masks(b, h, w, g, *mouth_ellipses(batch.get("mouth")))
        sign = torch.where(torch.rand(b, generator=g) < 0.5, -1, 1)  # (B,)
        columns = sign * torch.randint(self.columns[0], self.columns[1] + 1, (b,), generator=g)
        bins = sign * _uniform(b, 2.0, 8.0, g)
        blend_params, scale = draw_blend_params(b, g), float(_uniform(1, 0.3, 0.6, g))
        frame, order = torch.randint(t, (b,), generator=g), shuffled_order(b, t, g)
        swap = derangement(b, g) if b > 1 else None
        if swap is None and "audio_swap" in self.kinds:  # a batch of one has no other audio
            chosen &= kind != self.kinds.index("audio_swap")
        new_v, new_a = video.clone(), audio.clone()
        lips = batch.get("lips")  # (B, T, 2): the landmarks' mouth follows the pixels' mouth
        new_l = lips.clone() if lips is not None else None
        for k, name in enumerate(self.kinds):
            sel = chosen & (kind == k)
            if not sel.any():
                continue
            i = sel.nonzero().squeeze(1)
            di = i.to(video.device)
            if name == "self_blend":
                new_v[di] = self_blend(video[di], face[i], blend_params.take(i))
            elif name == "face_resample":
                new_v[di] = face_resample(video[di], face[i], scale)
            elif name == "mouth_freeze":
                new_v[di] = mouth_freeze(video[di], mouth[i], frame[i])
                if new_l is not None:  # the lips at the frozen frame's time, held (a lip track: its middle step)
                    k = lips.shape[1]
                    step = ((frame[i].double() + 0.5) * k / t).floor().long().to(lips.device)  # (n,)
                    new_l[di] = lips[di, step][:, None].expand(-1, k, -1)
            elif name == "mouth_shuffle":
                new_v[di] = mouth_shuffle(video[di], mouth[i], order[i])
                if new_l is not None:
                    new_l[di] = _reorder_lips(lips[di], order[i])
            elif name == "audio_shift":
                new_a[di] = shift_audio(audio[di], columns[i])
            elif name == "audio_swap":
                new_a[di] = audio[swap[i].to(audio.device)]
            elif name == "audio_pitch":
                new_a[di] = pitch_shift(audio[di], bins[i])
        applied = torch.where(chosen, kind, torch.full_like(kind, -1))  # (B,)
        new_t = torch.where(chosen.to(target.device), torch.ones_like(target), target)
        out = {**batch, "video": new_v, "audio": new_a, "target": new_t, "pseudo_kind": applied}
        return out if new_l is None else {**out, "lips": new_l}
