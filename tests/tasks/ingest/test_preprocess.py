"""Timing of sampled frames and mel windows, on real encoded video (PyAV) and real fbank."""

from fractions import Fraction

import av
import numpy as np
import pytest

from tasks.ingest.audio import MelSpec, decode_audio, log_mel, mel_window
from tasks.ingest.preprocess import clip_starts
from tasks.ingest.video import VideoError, probe, sample_frames


def _counter_video(path, n=100, fps=25, bframes=True):
    """Frame i is uniformly grey level 2*i: the decoded value tells which frame we got."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "medium", "bf": "3" if bframes else "0", "crf": "10"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 2 * i, np.uint8), format="rgb24")
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode())
    return path


@pytest.mark.parametrize("skip_nonref", [True, False])
def test_sampled_frames_are_the_requested_ones(tmp_path, skip_nonref):
    path = _counter_video(tmp_path / "c.mp4")
    times = [0.2 * k for k in range(16)]  # 5 fps: every 5th frame, B-frames among them
    frames, got = sample_frames(str(path), times, skip_nonref=skip_nonref)
    assert frames.shape == (16, 64, 64, 3)
    np.testing.assert_allclose(got, times, atol=1e-6)  # the frame at exactly that time, skipping or not
    index_from_pixels = np.round(frames.reshape(16, -1).mean(axis=1) / 2)
    np.testing.assert_allclose(index_from_pixels, np.round(got * 25), atol=1)


def test_rotation_metadata_is_honoured(tmp_path):
    from tasks.synthetic.dfdc_sample import write_video

    frames = np.zeros((10, 48, 64, 3), np.uint8)
    frames[:, :, :32] = 255  # left half white in storage order
    path = write_video(tmp_path / "r.mp4", frames, 10, rotation_deg=90)
    info = probe(str(path))
    assert info.rotation == 90 and (info.width, info.height) == (48, 64)
    out, _ = sample_frames(str(path), [0.0], rotation=info.rotation)
    assert out.shape == (1, 64, 48, 3)  # upright: portrait


def test_mel_window_is_aligned_with_the_audio(tmp_path):
    spec = MelSpec()
    wave = np.zeros(16000 * 6, np.float32)
    wave[32000:32160] = 0.8 * np.sin(np.arange(160) * 0.5)  # a 10 ms burst at 2.0 s
    mel = log_mel(wave, spec)
    assert mel.shape == (128, 1 + (len(wave) - spec.win) // spec.hop)
    window = mel_window(mel, start_s=1.6, frames=320, hop_s=spec.hop_s, pad_value=-16.0)
    energy = window.mean(axis=0)
    assert abs(int(np.argmax(energy)) - 40) <= 2  # 2.0 s - 1.6 s = 40 hops of 10 ms
    tail = mel_window(mel, start_s=5.0, frames=320, hop_s=spec.hop_s, pad_value=-16.0)
    assert tail.shape == (128, 320) and np.all(tail[:, 120:] == -16.0)


def test_decode_audio_resamples_to_16k_mono(tmp_path):
    from tasks.synthetic.dfdc_sample import write_video

    t = np.arange(44100 * 2) / 44100
    path = write_video(tmp_path / "a.mp4", np.zeros((50, 32, 32, 3), np.uint8), 25,
                       audio=0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32), audio_rate=44100)
    wave = decode_audio(str(path))
    assert wave.dtype == np.float32 and abs(len(wave) - 32000) < 2048
    spectrum = np.abs(np.fft.rfft(wave[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 5


def test_clip_starts():
    assert clip_starts(10.0, 3.2, 3) == [0.0, 3.2, 6.4]
    assert clip_starts(3.1, 3.2, 3) == []
    assert clip_starts(100.0, 3.2, 3) == [0.0, 3.2, 6.4]


def test_garbage_and_empty_files_raise_with_reasons(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(VideoError) as e:
        probe(str(empty))
    assert e.value.reason == "empty_file" and "empty.mp4" in str(e.value)
    with pytest.raises(VideoError) as e:
        probe(str(junk))
    assert e.value.reason == "undecodable" and "junk.mp4" in str(e.value)
