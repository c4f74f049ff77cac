"""Two-person videos: two clips side by side, one of them manipulated, with a matching original.

A FAKE beside a REAL makes a two-person video in which one face is swapped; the same REAL beside
the FAKE's original makes that video's original (the same pixels except the swapped face). This
is how the every-face ingest (per-face tracks and labels) and the video score (max over faces)
are tested on real footage and on :mod:`tasks.synthetic.dfdc_sample` clips alike.

Array letters: N frames, H, W, C channels; audio is mono ``(n,)`` float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np

from storage.shard_schema import FAKE, REAL
from tasks.media.video_writer import write_video


def side_by_side(left: str | Path, right: str | Path, out: str | Path, *, height: int = 360, seconds: float = 4.0,
                 crf: int = 18) -> Path:  # fmt: skip
    """``left`` and ``right``, each resized to ``height`` rows, side by side in one video at the
    left's frame rate (frames paired by index), ``seconds`` long at most; the left's audio, if any."""
    a, fps = _frames(left, seconds)
    b, _ = _frames(right, seconds)
    n = min(len(a), len(b))
    frames = np.concatenate([_resize(a[:n], height), _resize(b[:n], height)], axis=2)  # (N, H, Wl + Wr, C)
    audio, rate = _audio(left, n / fps)
    return write_video(out, frames, fps, audio, rate if audio is not None else 44100, crf=crf)


def two_face_pair(fake: str | Path, original: str | Path, other: str | Path, out_dir: str | Path, *,
                  fake_left: bool = True, **kwargs) -> tuple[Path, Path]:  # fmt: skip
    """(two-person FAKE, its original): ``fake`` (or ``original``) beside the REAL ``other``, the
    manipulated clip on the left when ``fake_left``; written into ``out_dir`` with a DFDC
    ``metadata.json`` naming the original. ``kwargs``: :func:`side_by_side`'s."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    side = "left" if fake_left else "right"
    fake_out, orig_out = out_dir / f"two_fake_{side}.mp4", out_dir / f"two_original_{side}.mp4"
    for src, dst in ((fake, fake_out), (original, orig_out)):
        pair = (src, other) if fake_left else (other, src)
        side_by_side(*pair, dst, **kwargs)
    meta_path = out_dir / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta[fake_out.name] = {"label": FAKE, "split": "train", "original": orig_out.name}
    meta[orig_out.name] = {"label": REAL, "split": "train", "original": None}
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return fake_out, orig_out


def _frames(path: str | Path, seconds: float) -> tuple[np.ndarray, float]:
    """(N, H, W, C) uint8 RGB frames of the first ``seconds`` (display order) and the stream's rate."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        fps = float(v.average_rate or 25)
        frames = []
        for frame in c.decode(v):
            if frame.time is not None and frame.time >= seconds:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames), fps


def _resize(frames: np.ndarray, height: int) -> np.ndarray:
    """(N, H, W, C) -> (N, height, W', C), W' the even width that keeps the aspect ratio."""
    h, w = frames.shape[1:3]
    width = int(round(w * height / h / 2)) * 2
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def _audio(path: str | Path, seconds: float) -> tuple[np.ndarray | None, int]:
    """The first ``seconds`` of the audio as mono float32 (n,) and its rate; (None, 0) without audio."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None, 0
        stream = c.streams.audio[0]
        rate = stream.rate or 44100
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [r.to_ndarray().reshape(-1) for f in c.decode(stream) for r in resampler.resample(f)]
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return wave[: int(seconds * rate)].astype(np.float32), rate
