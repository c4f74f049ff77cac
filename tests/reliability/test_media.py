"""Per-video bounds and timing, on real encoded files: variable frame rate and very long videos."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.ingest.faces import FaceDetector
from tasks.ingest.preprocess import PreprocessConfig, preprocess_video
from tasks.ingest.video import Limits, probe, sample_frames
from tasks.synthetic.dfdc_sample import write_video


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
    from tasks.ingest.audio import decode_audio

    before = _read_bytes()
    decode_audio(str(long_video), max_seconds=130.0)
    assert _read_bytes() - before > 0.9 * size


def _write_offset(path, frames: np.ndarray, audio: np.ndarray, offset_s: float, fps: int = 25, rate: int = 44100):
    """frames + audio whose timestamps both start at offset_s (as MPEG-TS and offset mkv files do)."""
    import av
    from fractions import Fraction

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = {"preset": "ultrafast", "crf": "18"}
        aus = out.add_stream("aac", rate=rate, layout="mono")
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = int(round(offset_s * fps)) + i, Fraction(1, fps)
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
        af = av.AudioFrame.from_ndarray(np.asarray(audio, np.float32)[None, :], format="flt", layout="mono")  # (1, n)
        af.sample_rate, af.pts, af.time_base = rate, int(round(offset_s * rate)), Fraction(1, rate)
        out.mux(aus.encode(af))
        out.mux(aus.encode())
    return path


@pytest.mark.parametrize("suffix", [".ts", ".mkv"])
def test_a_stream_that_starts_at_100_s_ingests_like_one_that_starts_at_0(footage, tmp_path, suffix):
    """Times are seconds from the stream's start: an offset is not a truncation, and sound stays on its frame."""
    frames, audio = footage.a[:175], footage.audio[: 7 * 44100]
    at0 = _write_offset(tmp_path / f"zero{suffix}", frames, audio, 0.0)
    at100 = _write_offset(tmp_path / f"late{suffix}", frames, audio, 100.0)
    assert probe(str(at100)).start_time == pytest.approx(100.0, abs=0.1)
    cfg = PreprocessConfig(face_size=64, max_clips=2)
    with FaceDetector() as detector:
        a = preprocess_video(str(at0), cfg, detector)
        b = preprocess_video(str(at100), cfg, detector)
    assert [c.index for c in b.clips] == [c.index for c in a.clips] == [0, 1]
    for ca, cb in zip(a.clips, b.clips):
        np.testing.assert_allclose(cb.frame_times, ca.frame_times, atol=1e-3)
        assert np.array_equal(ca.frames, cb.frames)
        # the same sound under the same frames: AAC in another container, so close, not equal
        assert np.corrcoef(ca.mel.ravel(), cb.mel.ravel())[0, 1] > 0.99


def test_audio_that_starts_after_the_video_is_preceded_by_silence(footage, tmp_path):
    """Audio timestamps 0.5 s after the video's: sample 0 of the wave is the video's t=0."""
    import av
    from fractions import Fraction

    from tasks.ingest.audio import decode_audio

    path = tmp_path / "late_audio.mkv"
    rate = 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)).astype(np.float32)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(25))
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        for i in range(75):
            vf = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
        af = av.AudioFrame.from_ndarray(np.round(tone * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        af.sample_rate, af.pts, af.time_base = rate, rate // 2, Fraction(1, rate)
        out.mux(aus.encode(af))
        out.mux(aus.encode())
    wave = decode_audio(str(path), rate, start_time=probe(str(path)).start_time)
    assert np.abs(wave[: rate // 2 - 10]).max() < 1e-3  # 0.5 s of silence, then the tone, to the sample
    np.testing.assert_allclose(wave[rate // 2 + 100 : rate // 2 + 1100], tone[100:1100], atol=2e-3)


def test_a_resolution_change_mid_stream_is_refused_with_a_stable_reason(media, tmp_path):
    """Two H.264 segments of different sizes in one MPEG-TS stream (TS is concatenable)."""
    from tasks.ingest.video import VideoError

    parts = []
    for k, side in enumerate((64, 128)):  # the second segment's timestamps follow the first's
        frames = np.full((50, side, side, 3), 100, np.uint8)
        parts.append(media.write_av(tmp_path / f"p{k}.ts", frames, times_s=2.0 * k + np.arange(50) / 25))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with pytest.raises(VideoError) as err:
        sample_frames(str(joined), [0.5, 1.0, 2.5, 3.5])
    assert err.value.reason == "resolution_change" and "64x64 -> 128x128" in str(err.value)
    with pytest.raises(VideoError) as err:  # a frame past max_pixels is refused, not converted
        sample_frames(str(parts[1]), [0.5], max_pixels=64 * 64)
    assert err.value.reason == "too_large"


def _patch_audio_chunk_offsets(path, past: int) -> None:
    """Point every chunk offset of the mp4's sound track past the end of the file (stco boxes)."""
    import struct

    data = bytearray(path.read_bytes())

    def boxes(start, end):
        while start + 8 <= end:
            size, kind = struct.unpack(">I4s", data[start : start + 8])
            yield kind, start, start + size
            start += size

    moov = next((s, e) for k, s, e in boxes(0, len(data)) if k == b"moov")
    for kind, s, e in boxes(moov[0] + 8, moov[1]):
        if kind != b"trak" or b"soun" not in data[s:e]:
            continue
        stack = [(s + 8, e)]
        while stack:
            a, b = stack.pop()
            for k, bs, be in boxes(a, b):
                if k in (b"mdia", b"minf", b"stbl"):
                    stack.append((bs + 8, be))
                elif k == b"stco":
                    n = struct.unpack(">I", data[bs + 12 : bs + 16])[0]
                    for i in range(n):
                        struct.pack_into(">I", data, bs + 16 + 4 * i, len(data) + past + i)
    path.write_bytes(bytes(data))


def test_audio_whose_chunks_lie_past_the_end_of_the_file_is_undecodable_not_missing(footage, tmp_path):
    from tasks.ingest.audio import decode_audio
    from tasks.ingest.video import VideoError

    path = write_video(tmp_path / "v.mp4", footage.a[:50], 25, footage.audio[: 2 * 44100], 44100)
    _patch_audio_chunk_offsets(path, past=1000)
    with pytest.raises(VideoError) as err:
        decode_audio(str(path))
    assert err.value.reason == "undecodable" and "v.mp4" in str(err.value)


def _vfr_copy(media, path, footage, max_gap: int, hole: tuple[int, int] | None = None):
    """footage.a with frames dropped irregularly (gaps up to max_gap frames, like mpdecimate), timestamps kept."""
    n = len(footage.a)  # 7 s at 25 fps
    rng = np.random.default_rng(1)
    keep = [0]
    for i in range(1, n):
        if hole and hole[0] <= i < hole[1]:
            continue
        if rng.random() < 0.3 or i - keep[-1] >= max_gap or i == n - 1:
            keep.append(i)
    keep = np.asarray(keep)
    return media.write_av(path, footage.a[keep], times_s=keep / 25.0, audio=footage.audio[: n * 44100 // 25])


def test_a_variable_frame_rate_copy_ingests_like_the_constant_rate_original(footage, media, tmp_path):
    """Gaps up to 0.48 s between frames: the same clips, every face found (it was refused 'no_face' with
    'face found in 100% of sampled frames', because a frame 0.2 s off its time dropped the clip)."""
    cfr = media.write_av(tmp_path / "cfr.mp4", footage.a, audio=footage.audio[: len(footage.a) * 44100 // 25])
    vfr = _vfr_copy(media, tmp_path / "vfr.mp4", footage, max_gap=12)
    cfg = PreprocessConfig(face_size=64)
    with FaceDetector() as detector:
        a = preprocess_video(str(cfr), cfg, detector)
        b = preprocess_video(str(vfr), cfg, detector)
    assert [c.index for c in b.clips] == [c.index for c in a.clips] == [0, 1]
    for clip in b.clips:
        assert clip.detected_frac == 1.0
        assert max(abs(t - (clip.start_s + i / 5)) for i, t in enumerate(clip.frame_times)) <= 0.25


def test_a_hole_in_the_stream_is_a_frame_gap_not_a_missing_face(footage, media, tmp_path):
    from tasks.ingest.video import VideoError

    holed = _vfr_copy(media, tmp_path / "hole.mp4", footage, max_gap=3, hole=(25, 140))  # nothing in 1.0-5.6 s
    with FaceDetector() as detector, pytest.raises(VideoError) as err:
        preprocess_video(str(holed), PreprocessConfig(face_size=64), detector)
    assert err.value.reason == "frame_gap" and "hole.mp4" in str(err.value)


_DECODE_AUDIO = """
import sys
from tasks.ingest.audio import decode_audio
from tasks.ingest.video import VideoError
try:
    decode_audio(sys.argv[1])
except VideoError as e:
    print(e.reason, e)
"""


def test_the_audio_stream_that_gives_no_samples_is_named_by_its_real_index(footage, tmp_path):
    """Issue 27: the error read the stream's index after its container had closed and named
    'audio stream #177755824'; the audio of this file is stream #1 (video #0). glibc's
    MALLOC_PERTURB_ fills freed memory with one byte, so a read after the close is caught every
    time, not only when the allocator happens to have reused the memory."""
    import os
    import subprocess
    import sys

    path = write_video(tmp_path / "v.mp4", footage.a[:50], 25, footage.audio[: 2 * 44100], 44100)
    _patch_audio_chunk_offsets(path, past=1000)
    done = subprocess.run([sys.executable, "-c", _DECODE_AUDIO, str(path)], capture_output=True, text=True,
                          env={**os.environ, "MALLOC_PERTURB_": "165"}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"undecodable {path}: audio stream #1 gives no samples" in done.stdout, done.stdout


def _plain(n: int, side: int = 64) -> np.ndarray:
    return np.stack([np.full((side, side, 3), 40 + (i * 7) % 180, np.uint8) for i in range(n)])  # (N, S, S, 3)


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_a_stream_that_starts_late_is_as_long_as_it_lasts_end_minus_start(tmp_path, suffix):
    """Issue 27: an mkv whose 10 s start at 595 s was recorded 605 s long (FFmpeg gives the
    Matroska duration as the end time), so under max_duration_s=600 it was refused ``too_long``.
    Duration is end minus start, as for MPEG-TS and for the same content starting at 0."""
    audio = (0.2 * np.sin(np.arange(10 * 44100) * 2 * np.pi * 440 / 44100)).astype(np.float32)
    frames = _plain(250)
    at0 = probe(str(_write_offset(tmp_path / f"zero{suffix}", frames, audio, 0.0)))
    late = probe(str(_write_offset(tmp_path / f"late{suffix}", frames, audio, 595.0)), Limits(max_duration_s=600))
    assert late.start_time == pytest.approx(595.0, abs=0.1)
    assert late.duration == pytest.approx(at0.duration, abs=0.05) and late.duration == pytest.approx(10.0, abs=0.1)


def _streamed_mkv(path, frames: np.ndarray, fps: int = 25):
    """An mkv written to a pipe-like sink that cannot seek: no duration in its header (like ``ffmpeg … -f matroska -``)."""
    import io
    from fractions import Fraction

    import av

    class Pipe(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            return self.f.write(b)

    with open(path, "wb") as f, av.open(Pipe(f), "w", format="matroska") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.codec_context.thread_count = 1
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
    return path


def test_a_stream_without_a_duration_is_not_called_truncated(tmp_path):
    """Issue 27: a streamed mkv declares no duration, so clips are planned up to read_seconds and
    its frames ending was reported ``truncated`` ("the container says nans"). It is no cut: the
    video is that long. Too short for a clip: ``too_short``, saying the duration is undeclared."""
    from tasks.ingest.video import VideoError

    path = _streamed_mkv(tmp_path / "streamed.mkv", _plain(50))  # 2 s, shorter than one 3.2 s clip
    assert np.isnan(probe(str(path)).duration)
    with FaceDetector() as detector, pytest.raises(VideoError) as err:
        preprocess_video(str(path), PreprocessConfig(face_size=64, require_audio=False), detector)
    assert err.value.reason == "too_short", err.value
    assert "declares no duration" in str(err.value) and "nan" not in str(err.value).replace(str(tmp_path), "").lower()


def test_a_read_window_shorter_than_a_clip_is_named_not_a_nan_duration(tmp_path):
    """With ``read_seconds`` below one clip, no clip is planned: the refusal names read_seconds,
    where it printed the undeclared duration ("nans is shorter than one 3.2s clip")."""
    from tasks.ingest.video import VideoError

    path = _streamed_mkv(tmp_path / "streamed.mkv", _plain(50))
    cfg = PreprocessConfig(face_size=64, require_audio=False, limits=Limits(read_seconds=2.0))
    with FaceDetector() as detector, pytest.raises(VideoError) as err:
        preprocess_video(str(path), cfg, detector)
    assert (
        err.value.reason == "too_short"
        and "read_seconds=2 is shorter than one 3.2s clip (its frames need 2.9s)" in str(err.value)
    )
