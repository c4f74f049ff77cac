"""The one video writer: what it writes decodes (real PyAV) to the frames and sound it was given."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from tasks.ingest.audio import decode_audio
from tasks.media.video_writer import write_video

RATE = 16000


def _frames(n: int = 20, h: int = 64, w: int = 96) -> np.ndarray:
    """(n, h, w, 3) uint8 smooth moving gradients: what a lossy codec keeps well."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.arange(n, dtype=np.float32)[:, None, None]
    r = 128 + 80 * np.sin((x[None] + 2 * t) / 15)
    g = 128 + 80 * np.cos((y[None] - t) / 11)
    b = np.broadcast_to(64 + y[None] + 0 * t, r.shape)
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def _tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _decoded(path) -> tuple[np.ndarray, Fraction]:
    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]), rate


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_written_frames_and_sound_decode_to_the_input(tmp_path, suffix):
    frames, tone = _frames(), _tone(0.8)  # 20 frames at 25 fps: 0.8 s
    path = write_video(tmp_path / f"v{suffix}", frames, 25, tone, RATE, crf=18)
    got, rate = _decoded(path)
    assert rate == 25 and got.shape == frames.shape
    assert np.abs(got.astype(np.int16) - frames).mean() < 3.0  # H.264 at CRF 18 on smooth gradients
    sound = decode_audio(str(path), RATE, max_seconds=10.0)
    n = min(len(sound), len(tone))
    assert abs(len(sound) - len(tone)) < 0.05 * RATE
    corr = np.corrcoef(sound[:n], tone[:n])[0, 1]
    assert corr > 0.95  # AAC keeps a tone, aligned with the video's start


def test_an_iterable_of_frames_writes_the_same_file_as_the_array(tmp_path):
    frames, tone = _frames(), _tone(0.8)
    a = write_video(tmp_path / "array.mp4", frames, 25, tone, RATE)
    b = write_video(tmp_path / "stream.mp4", (f for f in frames), 25, tone, RATE)
    assert a.read_bytes() == b.read_bytes()


def test_trim_audio_cuts_the_sound_at_the_last_frame(tmp_path):
    frames, tone = _frames(n=10), _tone(1.5)  # 0.4 s of video, 1.5 s of sound
    whole = decode_audio(str(write_video(tmp_path / "w.mp4", frames, 25, tone, RATE)), RATE, max_seconds=10.0)
    cut = decode_audio(str(write_video(tmp_path / "c.mp4", frames, 25, tone, RATE, trim_audio=True)), RATE,
                       max_seconds=10.0)  # fmt: skip
    assert abs(len(whole) - 1.5 * RATE) < 0.05 * RATE and abs(len(cut) - 0.4 * RATE) < 0.05 * RATE


def test_a_fractional_rate_is_kept_and_a_float_read_as_ntsc(tmp_path):
    frames = _frames(n=6)
    assert _decoded(write_video(tmp_path / "f.mp4", frames, Fraction(30000, 1001)))[1] == Fraction(30000, 1001)
    assert _decoded(write_video(tmp_path / "n.mp4", frames, 30000 / 1001))[1] == Fraction(30000, 1001)


def test_bad_frames_are_refused_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"odd\.mp4: yuv420p needs an even frame size"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 63, 64, 3), np.uint8), 25)
    with pytest.raises(ValueError, match=r"none\.mp4: frames_rgb holds no frame"):
        write_video(tmp_path / "none.mp4", iter([]), 25)
    with pytest.raises(ValueError, match=r"gray\.mp4: frames_rgb must be \(N, H, W, 3\) uint8"):
        write_video(tmp_path / "gray.mp4", np.zeros((2, 64, 64), np.uint8), 25)
    with pytest.raises(ValueError, match=r"mixed\.mp4: every frame must be \(64, 64, 3\) uint8"):
        write_video(tmp_path / "mixed.mp4", [np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)], 25)
