"""Per-video bounds and timing, on real encoded files: variable frame rate and very long videos."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.faces import FaceDetector
from tasks.preprocess import PreprocessConfig, preprocess_video
from tasks.video import Limits, probe, sample_frames


def _counter_vfr(media, path, times_ms: np.ndarray):
    """Frame k is uniformly grey at level times_ms[k] // 40: its pixels tell which frame it is."""
    frames = np.repeat((times_ms // 40).astype(np.uint8)[:, None, None, None], 64, 1).repeat(64, 2).repeat(3, 3)
    return media.write_av(path, frames, times_s=times_ms / 1000.0)  # (N, 64, 64, 3) at irregular times


@pytest.mark.parametrize("skip_nonref", [True, False])
def test_variable_frame_rate_picks_the_frame_nearest_each_time(media, tmp_path, skip_nonref):
    rng = np.random.default_rng(0)
    gaps = rng.choice([20, 40, 60, 100, 150], size=400)  # 6.7 to 50 fps, shuffled
    times_ms = np.concatenate([[0], np.cumsum(gaps)])
    times_ms = times_ms[times_ms < 9600]
    path = _counter_vfr(media, tmp_path / "vfr.mp4", times_ms)
    info = probe(str(path))
    assert info.duration == pytest.approx(times_ms[-1] / 1000, abs=0.16)
    wanted = [0.2 * k for k in range(48)]  # 3 clips x 16 frames at 5 fps
    frames, got = sample_frames(str(path), wanted, skip_nonref=skip_nonref)
    for w, g in zip(wanted, got):
        nearest = np.min(np.abs(times_ms / 1000 - w))
        assert abs(g - w) <= nearest + 1e-6, (w, g)  # the nearest frame (either one on a tie)
    level = frames.reshape(len(wanted), -1).mean(axis=1)  # what the pixels say the frame is
    np.testing.assert_allclose(level, np.floor(got * 1000 / 40), atol=1.5)


def _read_bytes() -> int:
    """Bytes this thread has read through read(2) so far (Linux /proc/thread-self/io).

    Per thread, not per process: session fixtures (Prefect, Ray, MLflow clients) keep background
    threads reading sockets, which would otherwise count. PyAV demuxes in the calling thread.
    """
    with open("/proc/thread-self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, footage):
    """A 120 s talking-face video whose bytes are spread evenly over time (a noisy band on top)."""
    from tasks.sample_data import write_video

    fps, seconds, rate = 5, 120, 16000
    src = np.arange(fps * seconds) * 25 // fps % len(footage.a)  # 25 fps footage, looped
    frames = footage.a[src].copy()  # (600, 160, 160, 3)
    frames[:, :24] = np.random.default_rng(0).integers(0, 256, (len(frames), 24, 160, 3), dtype=np.uint8)
    speech = footage.audio[:: 44100 // rate][: 7 * rate]  # crude 16 kHz: the content does not matter here
    audio = np.tile(speech, seconds // 7 + 1)[: seconds * rate]
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", frames, fps, audio, rate, crf=18)


def test_a_long_video_is_read_only_as_far_as_read_seconds(long_video):
    """120 s on disk, read_seconds=20: clips come from the start and most of the file is never read."""
    size = long_video.stat().st_size
    with FaceDetector() as detector:
        bounded = PreprocessConfig(face_size=64, limits=Limits(read_seconds=20.0))
        before = _read_bytes()
        result = preprocess_video(str(long_video), bounded, detector)
        read = _read_bytes() - before
        assert result.info.duration == pytest.approx(120.0, abs=0.2)
        assert [c.index for c in result.clips] == [0, 1, 2]
        assert read < 0.35 * size, f"read {read} of {size} bytes"
    # control: the measurement sees whole-file reads (decoding all of the audio reads every chunk)
    from tasks.audio import decode_audio

    before = _read_bytes()
    decode_audio(str(long_video), max_seconds=130.0)
    assert _read_bytes() - before > 0.9 * size
