"""Per-face labels: in a FAKE video with several faces, only the swapped face trains as FAKE.

A face swap changes the pixels of one face and leaves the rest of the frame as it was (up to
re-encoding). So, when a FAKE's original is present, each face track of the fake is cropped from
the original too (same frames, same boxes) and its mean absolute pixel difference measured: the
track that differs most is FAKE, and so is any other differing at least ``ratio`` as much; the
rest are REAL. Without an original, with one face, or when nothing differs (no track reaches
``floor``), every track takes the video's label. Measured differences on real clips: docs/ingest.md.
"""

from __future__ import annotations

import av
import numpy as np

from storage.shard_schema import FAKE, REAL
from tasks.ingest.faces import crop_square
from tasks.ingest.preprocess import Clip, PreprocessConfig
from tasks.ingest.video import VideoError, probe, read_frames

RATIO = 0.5  # a track differing at least this share of the most-differing one is swapped too
FLOOR = 2.5  # mean |difference| (0..255) below which a track is its original re-encoded (measured ~1)


def face_labels(
    video_label: str, diffs: dict[int, float] | None, ratio: float = RATIO, floor: float = FLOOR
) -> dict[int, str]:
    """face -> REAL | FAKE from each face's pixel difference from the original (None: no original).

    >>> face_labels("FAKE", {0: 1.2, 1: 14.0})
    {0: 'REAL', 1: 'FAKE'}
    """
    if video_label != FAKE or not diffs or len(diffs) < 2 or max(diffs.values()) < floor:
        return dict.fromkeys(diffs or {0: 0.0}, video_label)
    top = max(diffs.values())
    return {face: FAKE if d >= ratio * top else REAL for face, d in diffs.items()}


def face_differences(
    clips: list[Clip], original: str, cfg: PreprocessConfig, size: tuple[int, int]
) -> dict[int, float] | None:
    """face -> mean |fake - original| (0..255) over its clips' crops, the original cropped at the
    fake's frame times and boxes; None when the original cannot be compared (unreadable, or
    frames of another size than the fake's ``size`` (width, height)).
    """
    times = sorted({t for c in clips for t in c.frame_times})
    try:
        info = probe(original, cfg.limits)
        frames, got = read_frames(original, times, rotation=info.rotation, skip_nonref=cfg.skip_nonref,
                                  read_seconds=cfg.limits.read_seconds, max_pixels=cfg.limits.max_pixels)  # fmt: skip
    except (VideoError, OSError, ValueError, av.error.FFmpegError):  # the fake is still ingested, by its video label
        return None
    at = {t: f for t, f in zip(times, frames)}
    sums: dict[int, list[float]] = {}
    for c in clips:
        if c.boxes is None:
            return None
        for t, box, fake_crop in zip(c.frame_times, c.boxes, c.frames):  # (T,), (T, 4), (T, S, S, 3)
            if sorted(at[t].shape[:2]) != sorted(size):  # a rescaled original: its pixels are not the fake's
                return None
            crop = crop_square(at[t], box, fake_crop.shape[0], cfg.face_margin)  # (S, S, 3)
            sums.setdefault(c.face, []).append(float(np.abs(crop.astype(np.int16) - fake_crop.astype(np.int16)).mean()))
    return {face: float(np.mean(d)) for face, d in sorted(sums.items())}
