"""Synthetic talking faces: a face photo animated over a background, numpy only.

The identities are the scikit-image astronaut and the LFW faces of ``lfw_subset`` (upscaled),
varied by scale, tint, hue, mirroring, background and head roll, plus synthetic identities:
*morphs*, the pixel average of two aligned LFW faces. Sources fall into disjoint pools
(:data:`POOLS`: ``train``, ``pretrain``, ``external``) by a fixed rule that no seed changes;
a morph only mixes photos of its own pool, so no face is shared between pools. A :class:`Scene` fixes one
shot (background, sprite, head drift, blinks); :func:`render` then draws a dark mouth
ellipse whose height follows a per-frame opening in [0, 1]. ``blend_face`` and
``degrade_face`` are the two purely visual manipulations.

Letters: N frames, H, W, P sprite side; a sprite is RGBA ``(P, P, 4)`` float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

# Face square of each source in its own pixels, (x0, y0, side): chosen so that every
# source shares the LFW layout below (the astronaut's was measured with mediapipe).
_ASTRONAUT_SQUARE = (173.0, 62.0, 122.0)
# Landmarks in face-square units (mean mediapipe keypoints over the LFW faces).
_EYE_Y, _EYES_X, _MOUTH = 0.345, (0.15, 0.72), (0.42, 0.72)
_MASK_CENTER, _MASK_AXES = (0.46, 0.52), (0.44, 0.58)  # soft ellipse that cuts the face out
_SKIN = np.array([1.0, 0.78, 0.62], np.float32)  # RGB tint of a gray face, before jitter
# The 100 faces of lfw_subset, less those that mediapipe's full-range model missed in over
# 5% of the frames of random renders (checked once, with and without visual_artifact damage).
_LFW_UNRELIABLE = {4, 9, 13, 16, 20, 22, 23, 30, 45, 47, 52, 54, 56, 59, 82, 89}
_LFW_FACES = tuple(i for i in range(100) if i not in _LFW_UNRELIABLE)


# Photo i belongs to pool _POOL_OF_SLOT[i % 10]: 2/5 train, 3/10 stage-1 pretraining, 3/10 external (25
# photos: enough for each of three seeds to draw its external set from photos no other seed uses,
# see pool_sources' ``pool_slice``).
POOLS = ("train", "pretrain", "external")
_POOL_OF_SLOT = ("train", "pretrain", "train", "external", "train", "pretrain", "external", "external", "train",
                 "pretrain")  # fmt: skip
_MORPHS_PER_POOL = 400


@lru_cache(maxsize=1)
def _photos() -> tuple[tuple[np.ndarray, tuple[float, float, float]], ...]:
    from skimage import data

    astro = data.astronaut().astype(np.float32) / 255.0
    lfw = data.lfw_subset().astype(np.float32)  # (200, 25, 25): 100 faces, then non-faces
    sources = [(astro, _ASTRONAUT_SQUARE)]
    sources += [(lfw[i][..., None], (0.0, 0.0, 25.0)) for i in _LFW_FACES]
    return tuple(sources)


def photo_pool(photo: int) -> str:
    """The pool of photo ``photo`` (an index into the photos, the first entries of :func:`face_sources`)."""
    return _POOL_OF_SLOT[photo % len(_POOL_OF_SLOT)]


@lru_cache(maxsize=1)
def _morph_pairs() -> tuple[tuple[int, int], ...]:
    """(a, b) photo pairs of each pool's LFW faces, in a fixed shuffled order, pool after pool."""
    pairs = []
    for pool in POOLS:
        faces = [i for i in range(1, len(_photos())) if photo_pool(i) == pool]  # LFW only: same layout
        mine = [(a, b) for k, a in enumerate(faces) for b in faces[k + 1 :]]
        order = np.random.default_rng(2026).permutation(len(mine))[:_MORPHS_PER_POOL]
        pairs += [mine[i] for i in order]
    return tuple(pairs)


@lru_cache(maxsize=1)
def face_sources() -> tuple[tuple[np.ndarray, tuple[float, float, float]], ...]:
    """(image (h, w, C) float32 in [0, 1], face square) per source; C is 3 or 1 (gray).

    The photos come first (index 0 the astronaut, then the LFW faces), then the morphs of
    :func:`_morph_pairs` (synthetic identities: the mean of two aligned LFW faces of one pool).
    """
    photos = _photos()
    morphs = [((photos[a][0] + photos[b][0]) / 2, photos[a][1]) for a, b in _morph_pairs()]
    return photos + tuple(morphs)


def source_pool(source: int) -> str:
    """The pool of any source (photo or morph)."""
    n = len(_photos())
    return photo_pool(source) if source < n else photo_pool(_morph_pairs()[source - n][0])


def source_name(source: int) -> str:
    """A stable name of the face: ``photo17`` or ``morph17+42`` (the photos it mixes)."""
    n = len(_photos())
    if source < n:
        return f"photo{source}"
    a, b = _morph_pairs()[source - n]
    return f"morph{a}+{b}"


def pool_sources(pool: str, pool_slice: tuple[int, int] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(photos, morphs) of ``pool``: source indices, disjoint from every other pool's.

    ``pool_slice=(i, n)``: only the i-th of n disjoint slices of the pool (every n-th of its photos,
    from the i-th, and the morphs of two photos of that slice), so evaluation sets drawn from
    different slices share no face, not even half a morph.
    """
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {POOLS}")
    n = len(_photos())
    photos = tuple(i for i in range(n) if photo_pool(i) == pool)
    pairs = {n + k: pair for k, pair in enumerate(_morph_pairs()) if photo_pool(pair[0]) == pool}
    if pool_slice is not None:
        i, parts = pool_slice
        if not 0 <= i < parts:
            raise ValueError(f"pool_slice (i, n) needs 0 <= i < n, got {pool_slice}")
        photos = photos[i::parts]
        pairs = {m: (a, b) for m, (a, b) in pairs.items() if a in photos and b in photos}
    return photos, tuple(pairs)


@dataclass(frozen=True)
class Look:
    """How one identity's face is rendered: source photo, colour and mirroring."""

    source: int
    tone: tuple[float, float, float]  # RGB gain (tints the gray LFW faces)
    hue_deg: float
    flip: bool


def draw_look(rng: np.random.Generator, source: int) -> Look:
    """A skin tint (brightness and per-channel jitter), a small hue turn and a coin-flip mirror."""
    skin = _SKIN * rng.uniform(0.75, 1.1) * (1.0 + rng.uniform(-0.08, 0.08, 3))
    return Look(source, tuple(skin.tolist()), rng.uniform(-8, 8), bool(rng.random() < 0.5))


def face_sprite(look: Look, face_px: int) -> np.ndarray:
    """RGBA sprite (P, P, 4) float32 with the face square (face_px wide) at its centre."""
    img, (x0, y0, side) = face_sources()[look.source]
    p = _sprite_size(face_px)
    u = (np.arange(p, dtype=np.float32) - (p - face_px) / 2 + 0.5) / face_px  # face units
    ys, xs = np.meshgrid(y0 + u * side - 0.5, x0 + u * side - 0.5, indexing="ij")  # (P, P)
    ratio = side / face_px
    order = 3 if ratio < 1 else 1
    chans = []
    for c in range(img.shape[-1]):
        ch = ndimage.gaussian_filter(img[..., c], 0.45 * ratio) if ratio > 1.2 else img[..., c]
        chans.append(ndimage.map_coordinates(ch, [ys, xs], order=order, mode="nearest"))
    # Gray LFW faces take the tint as their colour; a colour photo only its deviation from _SKIN.
    gain = np.asarray(look.tone, np.float32) / (1.0 if img.shape[-1] == 1 else _SKIN)
    rgb = np.stack(chans, -1) * gain.astype(np.float32)  # (P, P, C) -> (P, P, 3)
    rgb = _hue_rotate(rgb, look.hue_deg)
    uy, ux = np.meshgrid(u, u, indexing="ij")
    r2 = ((ux - _MASK_CENTER[0]) / _MASK_AXES[0]) ** 2 + ((uy - _MASK_CENTER[1]) / _MASK_AXES[1]) ** 2
    alpha = np.clip((1.0 - r2) / 0.18, 0.0, 1.0)
    sprite = np.concatenate([np.clip(rgb, 0, 1), alpha[..., None]], -1).astype(np.float32)
    return sprite[:, ::-1].copy() if look.flip else sprite


def _sprite_size(face_px: int) -> int:
    return int(np.ceil(face_px * 1.35 / 2) * 2)


def _hue_rotate(rgb: np.ndarray, deg: float) -> np.ndarray:
    """Rotate hue by ``deg`` in YIQ space; rgb (..., 3)."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    m = np.linalg.inv(to_yiq) @ rot @ to_yiq
    return (rgb @ m.T.astype(np.float32)).astype(np.float32)


def _landmarks(face_px: int, flip: bool) -> dict[str, float]:
    """Eye band and mouth centre in sprite pixels."""
    off = (_sprite_size(face_px) - face_px) / 2
    fx = (lambda x: 1.0 - x) if flip else (lambda x: x)
    ex = sorted((fx(_EYES_X[0]), fx(_EYES_X[1])))
    return {
        "eye_y": off + _EYE_Y * face_px,
        "eye_x0": off + ex[0] * face_px,
        "eye_x1": off + ex[1] * face_px,
        "mouth_x": off + fx(_MOUTH[0]) * face_px,
        "mouth_y": off + _MOUTH[1] * face_px,
    }


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class Scene:
    """Everything about one identity's shot except the mouth: (N,) arrays per frame."""

    background: np.ndarray  # (H, W, 3) float32 in [0, 1]
    sprite: np.ndarray  # (P, P, 4) float32 RGBA face
    landmarks: dict[str, float]  # sprite pixels
    face_px: int
    cx: np.ndarray  # (N,) face centre, frame pixels
    cy: np.ndarray
    scale: np.ndarray  # (N,) sprite -> frame
    angle: np.ndarray  # (N,) radians
    blink: np.ndarray  # (N,) 0 open .. 1 closed


def draw_scene(rng: np.random.Generator, look: Look, size: tuple[int, int], n_frames: int, fps: float) -> Scene:
    """Draw face size, background, head motion and blinks for one identity."""
    h, w = size
    face_px = int(round(min(h, w) * rng.uniform(0.22, 0.29)))
    t = np.arange(n_frames) / fps

    def wobble(amp: float) -> np.ndarray:  # smooth drift: two slow sinusoids
        f, ph, a = rng.uniform(0.1, 0.6, 2), rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.4, 1.0, 2) * amp
        return (a[:, None] * np.sin(2 * np.pi * f[:, None] * t + ph[:, None])).sum(0)

    blink = np.zeros(n_frames)
    tb = rng.uniform(0.3, 2.5)
    while tb < t[-1] + 0.1:
        blink = np.maximum(blink, np.clip(1.0 - np.abs(t - tb) / 0.08, 0.0, 1.0))
        tb += rng.uniform(2.0, 5.0)
    return Scene(
        background=_background(rng, h, w),
        sprite=face_sprite(look, face_px),
        landmarks=_landmarks(face_px, look.flip),
        face_px=face_px,
        cx=w / 2 + rng.uniform(-0.1, 0.1) * w + wobble(0.025 * w),
        cy=h / 2 + rng.uniform(-0.06, 0.06) * h + wobble(0.025 * h),
        scale=1.0 + wobble(0.04),
        angle=np.radians(rng.uniform(-8, 8) + wobble(3.0)),
        blink=blink,
    )


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Two-colour gradient plus low-frequency blotches and faint stripes: (H, W, 3)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang), 0, 1)
    # Muted colours, like rooms: saturated clutter around a small face costs mediapipe recall.
    c0, c1 = rng.uniform(0.25, 0.8, (2, 1)) + rng.uniform(-0.12, 0.12, (2, 3))
    grid = rng.uniform(-1, 1, (3, 5, 5))
    blotch = np.stack([ndimage.zoom(g, (h / 5, w / 5), order=3, mode="nearest")[:h, :w] for g in grid], -1)  # (H, W, 3)
    sang, sfreq = rng.uniform(0, np.pi), rng.uniform(3, 10)
    stripes = np.sin(2 * np.pi * sfreq * (xx * np.cos(sang) + yy * np.sin(sang)))
    bg = c0 + (c1 - c0) * ramp[..., None] + 0.08 * blotch + rng.uniform(0, 0.03) * stripes[..., None]
    return np.clip(bg, 0, 1).astype(np.float32)


def render(scene: Scene, mouth: np.ndarray, sprite: np.ndarray | None = None) -> np.ndarray:
    """Frames (N, H, W, 3) uint8; ``mouth`` (N,) in [0, 1] is the opening per frame."""
    sprite = scene.sprite if sprite is None else sprite
    bg = scene.background
    frames = np.empty((len(mouth), *bg.shape), np.uint8)  # (N, H, W, 3)
    frames[:] = np.round(bg * 255).astype(np.uint8)
    yy, xx = np.nonzero(sprite[..., 3] > 0)
    radius = float(np.hypot(yy + 0.5 - sprite.shape[0] / 2, xx + 0.5 - sprite.shape[1] / 2).max()) + 1.5
    for i in range(len(mouth)):
        spr = sprite.copy()
        _draw_blink(spr, scene.landmarks, scene.blink[i], scene.face_px)
        _draw_mouth(spr, scene.landmarks, mouth[i] * 0.07 * scene.face_px, scene.face_px)
        _paste(frames[i], bg, spr, scene.cx[i], scene.cy[i], scene.scale[i], scene.angle[i], radius)
    return frames


def _draw_blink(spr: np.ndarray, lm: dict[str, float], strength: float, face_px: int) -> None:
    if strength <= 0:
        return
    half = 0.07 * face_px
    y0, y1 = int(lm["eye_y"] - half), int(np.ceil(lm["eye_y"] + half)) + 1
    x0, x1 = int(lm["eye_x0"]), int(np.ceil(lm["eye_x1"])) + 1
    profile = np.clip(1.0 - np.abs(np.arange(y0, y1) - lm["eye_y"]) / half, 0, 1)  # (h,)
    spr[y0:y1, x0:x1, :3] *= (1.0 - 0.55 * strength * profile)[:, None, None]


def _draw_mouth(spr: np.ndarray, lm: dict[str, float], half_h: float, face_px: int) -> None:
    """Dark anti-aliased ellipse, ``half_h`` pixels tall above and below the mouth line."""
    if half_h < 0.25:
        return
    half_w, mx, my = 0.15 * face_px, lm["mouth_x"], lm["mouth_y"]
    y0, x0 = int(my - half_h) - 2, int(mx - half_w) - 2
    yy, xx = np.ogrid[y0 : int(my + half_h) + 3, x0 : int(mx + half_w) + 3]
    r = np.sqrt(((xx - mx) / half_w) ** 2 + ((yy - my) / half_h) ** 2)
    cover = 0.92 * np.clip((1.0 - r) * half_h + 0.5, 0, 1)[..., None]  # (h, w, 1)
    region = spr[y0 : y0 + cover.shape[0], x0 : x0 + cover.shape[1], :3]
    region[:] = region * (1 - cover) + np.array([0.18, 0.06, 0.07], np.float32) * cover


def _paste(
    frame: np.ndarray, bg: np.ndarray, spr: np.ndarray, cx: float, cy: float, s: float, ang: float, radius: float
) -> None:
    """Alpha-composite ``spr`` rotated by ``ang`` and scaled by ``s`` at (cx, cy), bilinear;
    ``radius`` (sprite pixels) bounds the opaque part around the sprite centre."""
    h, w = frame.shape[:2]
    p = spr.shape[0]
    ext = radius * s + 1
    y0, y1 = max(0, int(cy - ext)), min(h, int(np.ceil(cy + ext)))
    x0, x1 = max(0, int(cx - ext)), min(w, int(np.ceil(cx + ext)))
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]  # (h, 1)
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]  # (1, w)
    c, sn = np.float32(np.cos(ang) / s), np.float32(np.sin(ang) / s)
    sx = np.clip(c * dx + sn * dy + (p / 2 - 0.5), 0, p - 1.001)  # (h, w) sprite pixels
    sy = np.clip(c * dy - sn * dx + (p / 2 - 0.5), 0, p - 1.001)
    ix, iy = sx.astype(np.int32), sy.astype(np.int32)
    fx, fy = (sx - ix)[..., None], (sy - iy)[..., None]
    flat, idx = spr.reshape(-1, 4), iy * p + ix  # (P*P, 4), (h, w)
    top = np.take(flat, idx, 0)
    top += (np.take(flat, idx + 1, 0) - top) * fx  # (h, w, 4)
    bot = np.take(flat, idx + p, 0)
    bot += (np.take(flat, idx + p + 1, 0) - bot) * fx
    top += (bot - top) * fy
    a = top[..., 3:]
    out = bg[y0:y1, x0:x1] + (top[..., :3] - bg[y0:y1, x0:x1]) * a
    frame[y0:y1, x0:x1] = (out * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- manipulations


def blend_face(sprite: np.ndarray, donor: np.ndarray, face_px: int, gain: np.ndarray) -> np.ndarray:
    """Paste ``donor``'s inner face (same sprite layout) over ``sprite`` with a soft ellipse,
    tinted by ``gain`` (3,) so the seam shows a colour mismatch, as a face swap does."""
    p = sprite.shape[0]
    u = (np.arange(p, dtype=np.float32) + 0.5 - p / 2) / face_px  # face units from the centre
    ux = float((sprite[..., 3].sum(0) * u).sum() / sprite[..., 3].sum())  # face centre, flip-proof
    # Eyes, nose and mouth come wholly from the donor (no ghosting); the seam is on the cheeks.
    r2 = ((u[None, :] - ux) / 0.38) ** 2 + ((u[:, None] - 0.05) / 0.48) ** 2  # (P, P)
    m = (np.clip((1.0 - r2) / 0.2, 0, 1) * sprite[..., 3])[..., None]  # (P, P, 1)
    out = sprite.copy()
    out[..., :3] = sprite[..., :3] * (1 - m) + np.clip(donor[..., :3] * gain, 0, 1) * m
    return out


def degrade_face(frames: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Blur and blockiness inside each frame's face box only: (N, H, W, 3) uint8.

    Both scale with the face (8-pixel blocks on a 72-pixel face), so the damage is the same
    for a detector whatever the frame size.
    """
    out = frames.copy()
    sigma = rng.uniform(0.7, 1.3) * scene.face_px / 64
    beta, block = rng.uniform(0.15, 0.3), int(np.clip(round(scene.face_px / 9), 3, 8))
    h, w = frames.shape[1:3]
    for i in range(len(frames)):
        half = 0.55 * scene.face_px * scene.scale[i]
        y0, y1 = max(0, int(scene.cy[i] - half)), min(h, int(scene.cy[i] + half))
        x0, x1 = max(0, int(scene.cx[i] - half)), min(w, int(scene.cx[i] + half))
        y0, x0 = y0 - y0 % block, x0 - x0 % block  # blocks on a fixed frame grid
        y1, x1 = y0 + (y1 - y0) // block * block, x0 + (x1 - x0) // block * block
        region = ndimage.gaussian_filter(frames[i, y0:y1, x0:x1].astype(np.float32), (sigma, sigma, 0))
        hb, wb = (y1 - y0) // block, (x1 - x0) // block
        means = region.reshape(hb, block, wb, block, 3).mean((1, 3), keepdims=True)  # (hb, 1, wb, 1, 3)
        region = region.reshape(hb, block, wb, block, 3) * (1 - beta) + means * beta
        out[i, y0:y1, x0:x1] = np.clip(region.reshape(y1 - y0, x1 - x0, 3) + 0.5, 0, 255).astype(np.uint8)
    return out
