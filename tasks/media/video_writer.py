"""The project's one video writer: RGB frames and an optional mono sound -> a video file (PyAV).

The generated sample (:mod:`tasks.synthetic.dfdc_sample`), the shortcut probes' edited copies
(:mod:`tasks.evaluate.probes`) and the real-footage benchmark's re-encodes (``bench/real.py``) all
write through :func:`write_video`. It lives in its own concern, importing nothing else of the
project, so every concern may use it (tests/test_layering.py: media imports no other concern).
Reading is :mod:`tasks.ingest.video` and :func:`tasks.ingest.audio.decode_audio`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(
    path: str | Path,
    frames_rgb: np.ndarray | Iterable[np.ndarray],
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    audio_rate: int = 44100,
    codec: str = "libx264",
    rotation_deg: int = 0,
    *,
    crf: int = 23,
    preset: str = "ultrafast",
    threads: int | None = 1,
    audio_bitrate: int | None = 64000,
    aac_coder: str | None = "fast",
    trim_audio: bool = False,
) -> Path:
    """Encode ``frames_rgb`` ((N, H, W, 3) uint8, or an iterable of (H, W, 3) uint8 frames, which is
    consumed one frame at a time: a long video is never all in memory) at ``fps`` (a float is read
    as the nearest fraction with a denominator up to 1001, so 30000 / 1001 comes back exact; a Fraction is kept)
    and optional mono ``audio`` (n,) float32 in [-1, 1] at ``audio_rate``.

    The container follows the suffix (``.mp4``, ``.mkv``, ``.avi``). ``codec`` is any PyAV
    video encoder (``libx264``, ``libx265``, ``mjpeg``...); H.264/HEVC get ``yuv420p``, MJPEG
    ``yuvj420p``, both of which need even H and W. ``rotation_deg`` (counter-clockwise) is
    written as a display matrix, which readers see as ``VideoFrame.rotation`` (in (-180, 180],
    so 270 reads back as -90); the pixels are stored unrotated. ``crf`` and ``preset`` apply to
    x264/x265; ``threads`` is the encoder's thread count (1: the same bytes on every machine; None:
    the codec's default). Audio is AAC at ``audio_bitrate`` with ``aac_coder`` (None: the encoder's
    defaults), interleaved with the video frame by frame; all of it is written, or with
    ``trim_audio`` only up to the end of the last frame. Returns ``path``.
    """
    path = Path(path)
    first, rest = _first_frame(path, frames_rgb)
    h, w, _ = first.shape
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    if h % 2 or w % 2:
        raise ValueError(f"{path}: {pix_fmt} needs an even frame size, got {h}x{w}")
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        vs = _video_stream(out, codec, rate, w, h, pix_fmt, crf=crf, preset=preset, threads=threads)
        if rotation_deg % 360:
            vs.set_display_rotation(rotation_deg)
        aus = None
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32).reshape(-1)
            aus = out.add_stream("aac", rate=audio_rate, layout="mono")
            if audio_bitrate is not None:
                aus.bit_rate = audio_bitrate
            if aac_coder is not None:  # "fast": ~3x faster than the default (twoloop)
                aus.options = {"aac_coder": aac_coder}
        sent = 0
        for i, frame, last in _with_last(first, rest):
            vf = av.VideoFrame.from_ndarray(_frame_of(path, frame, (h, w)), format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
            if aus is not None:  # audio up to the end of this frame, for interleaving
                end = min(len(audio), round((i + 1) * audio_rate / rate))
                upto = end if not last or trim_audio else len(audio)
                if upto > sent:
                    out.mux(aus.encode(_audio_frame(audio[sent:upto], audio_rate, sent)))
                    sent = upto
        out.mux(vs.encode())
        if aus is not None:
            out.mux(aus.encode())
    return path


def _video_stream(out, codec: str, rate: Fraction, w: int, h: int, pix_fmt: str, *, crf: int, preset: str,
                  threads: int | None):  # fmt: skip
    vs = out.add_stream(codec, rate=rate)
    vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
    if threads is not None:
        vs.codec_context.thread_count = threads
    if codec == "libx264":
        vs.options = {"crf": str(crf), "preset": preset}
    if codec == "libx265":
        vs.options = {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    if codec == "mjpeg":
        vs.codec_context.qmin = vs.codec_context.qmax = 4
    return vs


def _first_frame(path: Path, frames_rgb) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """(the first frame, an iterator over the others); an empty input or an array of the wrong shape is refused."""
    if isinstance(frames_rgb, np.ndarray):
        if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or frames_rgb.dtype != np.uint8:
            raise ValueError(
                f"{path}: frames_rgb must be (N, H, W, 3) uint8, got {frames_rgb.shape} {frames_rgb.dtype}"
            )
    frames = iter(frames_rgb)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: frames_rgb holds no frame")
    return first, frames


def _with_last(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[tuple[int, np.ndarray, bool]]:
    """(index, frame, whether it is the last) for each frame, looking one frame ahead."""
    i, current = 0, first
    for nxt in rest:
        yield i, current, False
        i, current = i + 1, nxt
    yield i, current, True


def _frame_of(path: Path, frame: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.shape != (*hw, 3):
        raise ValueError(f"{path}: every frame must be ({hw[0]}, {hw[1]}, 3) uint8 like the first, "
                         f"got {frame.shape} {frame.dtype}")  # fmt: skip
    return frame


def _audio_frame(samples: np.ndarray, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, :]), format="flt", layout="mono")  # (1, n)
    frame.sample_rate, frame.pts = rate, pts
    return frame
