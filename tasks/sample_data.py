"""Synthetic DFDC-format sample: talking-face videos with known manipulations.

A real clip animates a face photo (the scikit-image astronaut or an upscaled LFW face)
over a textured background: smooth head drift, blinks, and a dark mouth ellipse whose
height follows the amplitude envelope of a synthetic speech track (:mod:`tasks.synth_speech`).
Each real gets one fake per requested manipulation (:data:`MANIPULATIONS`), written beside
it in the same part, as DFDC does.

Shortcut control: leading silence, loudness, noise floor and encoder quality are drawn per
video from ONE distribution, whatever the label, so that container/audio statistics alone
cannot tell REAL from FAKE (``tests/tasks/test_sample_data.py`` checks it). Fakes that keep
the original's audio keep its leading silence, exactly like an edited DFDC video.

Layout (``parts >= 1``)::

    out_dir/dfdc_train_part_0/{abcdefghij.mp4, ..., metadata.json}

``parts == 0`` writes the flat layout of DFDC's ``train_sample_videos/``.
Array letters: N frames, H, W, C channels; audio is mono ``(n,)`` float32 in [-1, 1].
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from scipy import ndimage

from tasks.synth_speech import frame_envelope, render_speech, speech_plan

MANIPULATIONS = (
    "lipsync_offset",  # audio shifted 100-500 ms against the mouth
    "audio_swap",  # audio of another identity's clip; mouth follows the original audio
    "mouth_decorrelated",  # mouth follows an unrelated envelope
    "face_blend",  # another identity's face pasted in with a soft mask and a colour mismatch
    "visual_artifact",  # blur + blockiness inside the face box only
    "audio_pitch",  # pitch and formants jump mid-clip
)
PART_DIR = "dfdc_train_part_{}"
METADATA = "metadata.json"
_PAD_S = 0.6  # speech rendered beyond the clip on both sides, so shifted windows exist


@dataclass(frozen=True)
class ShortcutControls:
    """Per-video nuisance distributions, shared by REAL and FAKE.

    ``planted_fake_lead_s`` adds leading silence to fakes only: a deliberate shortcut that
    exists so a shortcut audit can be shown to fail. Keep it 0 for real use.
    """

    lead_silence_s: tuple[float, float] = (0.0, 0.3)
    loudness_dbfs: tuple[float, float] = (-30.0, -18.0)  # RMS of the whole track
    noise_floor_dbfs: tuple[float, float] = (-72.0, -62.0)
    crf: tuple[int, int] = (20, 28)  # libx264 quality, inclusive range
    planted_fake_lead_s: float = 0.0


# --------------------------------------------------------------------------- video I/O


def write_video(
    path: str | Path,
    frames_rgb: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    audio_rate: int = 44100,
    codec: str = "libx264",
    rotation_deg: int = 0,
    *,
    crf: int = 23,
    audio_bitrate: int = 64000,
) -> Path:
    """Encode ``frames_rgb`` (N, H, W, 3) uint8 and optional mono ``audio`` (n,) float32.

    The container follows the suffix (``.mp4``, ``.mkv``, ``.avi``). ``codec`` is any PyAV
    video encoder (``libx264``, ``libx265``, ``mjpeg``...); H.264/HEVC get ``yuv420p``, MJPEG
    ``yuvj420p``, both of which need even H and W. ``rotation_deg`` (counter-clockwise) is
    written as a display matrix, which readers see as ``VideoFrame.rotation``; the pixels
    are stored unrotated. Audio is AAC, interleaved with the video frame by frame.
    """
    path = Path(path)
    frames_rgb = np.asarray(frames_rgb)
    if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or frames_rgb.dtype != np.uint8:
        raise ValueError(f"frames_rgb must be (N, H, W, 3) uint8, got {frames_rgb.shape} {frames_rgb.dtype}")
    n, h, w, _ = frames_rgb.shape
    if n == 0:
        raise ValueError("frames_rgb holds no frame")
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    if h % 2 or w % 2:
        raise ValueError(f"{pix_fmt} needs an even frame size, got {h}x{w}")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.codec_context.thread_count = 1  # deterministic bytes; parallelism is per video
        if codec in ("libx264", "libx265"):
            vs.options = {"crf": str(crf), "preset": "ultrafast"}
        if codec == "mjpeg":
            vs.codec_context.qmin = vs.codec_context.qmax = 4
        if rotation_deg % 360:
            vs.set_display_rotation(rotation_deg)
        aus = None
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32).reshape(-1)
            aus = out.add_stream("aac", rate=audio_rate, layout="mono")
            aus.bit_rate = audio_bitrate
        sent = 0
        for i in range(n):
            vf = av.VideoFrame.from_ndarray(frames_rgb[i], format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
            if aus is not None:  # audio up to the end of this frame, for interleaving
                upto = len(audio) if i == n - 1 else min(len(audio), round((i + 1) * audio_rate / rate))
                if upto > sent:
                    out.mux(aus.encode(_audio_frame(audio[sent:upto], audio_rate, sent)))
                    sent = upto
        out.mux(vs.encode())
        if aus is not None:
            out.mux(aus.encode())
    return path


def _audio_frame(samples: np.ndarray, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")  # (1, n)
    frame.sample_rate, frame.pts = rate, pts
    return frame


# --------------------------------------------------------------------------- face sources

# Face square of each source in its own pixels, (x0, y0, side): chosen so that every
# source shares the LFW layout below (the astronaut's was measured with mediapipe).
_ASTRONAUT_SQUARE = (173.0, 62.0, 122.0)
# Landmarks in face-square units (mean mediapipe keypoints over the LFW faces).
_EYE_Y, _EYES_X, _MOUTH = 0.345, (0.15, 0.72), (0.42, 0.72)
_MASK_CENTER, _MASK_AXES = (0.46, 0.52), (0.44, 0.58)  # soft ellipse that cuts the face out
# LFW faces (of the 100 in lfw_subset) that mediapipe's full-range model finds reliably.
_LFW_FACES = tuple(range(100))


@lru_cache(maxsize=1)
def _face_sources() -> tuple[tuple[np.ndarray, tuple[float, float, float]], ...]:
    """(image (h, w, C) float32 in [0, 1], face square) per source; C is 3 or 1 (gray)."""
    from skimage import data

    astro = data.astronaut().astype(np.float32) / 255.0
    lfw = data.lfw_subset().astype(np.float32)  # (200, 25, 25): 100 faces, then non-faces
    sources = [(astro, _ASTRONAUT_SQUARE)]
    sources += [(lfw[i][..., None], (0.0, 0.0, 25.0)) for i in _LFW_FACES]
    return tuple(sources)


@dataclass(frozen=True)
class Look:
    """How one identity's face is rendered: source photo, colour and mirroring."""

    source: int
    tone: tuple[float, float, float]  # RGB gain (tints the gray LFW faces)
    hue_deg: float
    flip: bool


def _draw_look(rng: np.random.Generator, source: int) -> Look:
    skin = np.array([1.0, 0.78, 0.62]) * rng.uniform(0.75, 1.15)
    skin *= 1.0 + rng.uniform(-0.08, 0.08, 3)
    return Look(source, tuple(skin.tolist()), rng.uniform(-15, 15), bool(rng.random() < 0.5))


def _face_sprite(look: Look, face_px: int) -> np.ndarray:
    """RGBA sprite (P, P, 4) float32 with the face square (face_px wide) at its centre."""
    img, (x0, y0, side) = _face_sources()[look.source]
    p = _sprite_size(face_px)
    u = (np.arange(p, dtype=np.float32) - (p - face_px) / 2 + 0.5) / face_px  # face units
    ys, xs = np.meshgrid(y0 + u * side - 0.5, x0 + u * side - 0.5, indexing="ij")  # (P, P)
    ratio = side / face_px
    order = 3 if ratio < 1 else 1
    chans = []
    for c in range(img.shape[-1]):
        ch = ndimage.gaussian_filter(img[..., c], 0.45 * ratio) if ratio > 1.2 else img[..., c]
        chans.append(ndimage.map_coordinates(ch, [ys, xs], order=order, mode="nearest"))
    rgb = np.stack(chans, -1) * np.asarray(look.tone, np.float32)  # (P, P, C) -> (P, P, 3)
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
