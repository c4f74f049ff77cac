"""Timing of sampled frames and mel windows, on real encoded video (PyAV) and real fbank."""

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tasks.ingest.audio import SILENCE_LOG_MEL, decode_audio, default_mel, log_mel, mel_window
from tasks.ingest.preprocess import PreprocessConfig, clip_starts, face_detector, preprocess_video
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
    spec = default_mel()
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
    path = write_video(
        tmp_path / "a.mp4",
        np.zeros((50, 32, 32, 3), np.uint8),
        25,
        audio=0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32),
        audio_rate=44100,
    )
    wave = decode_audio(str(path))
    assert wave.dtype == np.float32 and abs(len(wave) - 32000) < 2048
    spectrum = np.abs(np.fft.rfft(wave[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 5


def test_clip_starts():
    assert clip_starts(10.0, 3.2, 3) == [0.0, 3.2, 6.4]
    assert clip_starts(3.1, 3.2, 3) == []
    assert clip_starts(100.0, 3.2, 3) == [0.0, 3.2, 6.4]
    assert clip_starts(6.4, 3.2, 3) == [0.0, 3.2]  # a clip ending exactly at the end fits


def test_a_clip_fits_where_its_frames_do():
    """A 16-frame 5 fps clip's last frame is at 3.0 s: a 2.98 s talking-head clip (GRID's length) holds it."""
    cfg = PreprocessConfig()
    assert cfg.spread_fit_seconds == pytest.approx(2.9)
    assert clip_starts(2.98, 3.2, 3, fits=cfg.spread_fit_seconds) == [0.0]
    assert clip_starts(2.8, 3.2, 3, fits=cfg.spread_fit_seconds) == []
    assert clip_starts(10.0, 3.2, 3, fits=cfg.spread_fit_seconds) == [0.0, 3.2, 6.4]  # the stride is unchanged
    assert clip_starts(6.0, 3.2, 3, fits=cfg.spread_fit_seconds) == [0.0]  # 3.2 + 2.9 > 6


def test_a_three_second_video_gives_a_clip_with_its_last_frame_and_silence_after_the_sound(tmp_path, talking_face):
    """Issue 23: realav's 3 s clips (LipNet, lip reading: 17 of 39 test sources) were refused ``too_short``
    because a 3.2 s clip's sound runs 0.2 s past them, though every frame it samples is there."""
    short = tmp_path / "short.mp4"
    with av.open(str(talking_face)) as src, av.open(str(short), "w") as dst:  # the first 2.98 s, packets copied
        streams = {s.index: dst.add_stream_from_template(s) for s in (src.streams.video[0], src.streams.audio[0])}
        for packet in src.demux(src.streams.video[0], src.streams.audio[0]):
            if packet.dts is not None and packet.pts is not None and packet.pts * packet.time_base < 2.98:
                packet.stream = streams[packet.stream_index]
                dst.mux(packet)
    assert 2.9 < probe(str(short)).duration < 3.1
    with face_detector(PreprocessConfig(face_size=64)) as detector:
        out = preprocess_video(str(short), PreprocessConfig(face_size=64), detector)
    (clip,) = out.clips
    assert clip.frames.shape == (16, 64, 64, 3) and clip.mel.shape == (128, 320)
    assert clip.frame_times[-1] == pytest.approx(3.0, abs=0.25) and clip.frame_times[-1] < 3.0  # the video's last
    assert np.all(clip.mel[:, -8:] == SILENCE_LOG_MEL) and not np.all(clip.mel[:, :280] == SILENCE_LOG_MEL)


def test_clip_starts_with_an_offset_and_a_stride():
    assert clip_starts(10.0, 3.2, 10, offset=0.5, stride=1.6) == [0.5, 2.1, 3.7, 5.3]  # 6.9 + 3.2 > 10
    assert clip_starts(10.0, 3.2, 3, offset=0.5, stride=1.6) == [0.5, 2.1, 3.7]  # capped by max_clips
    assert clip_starts(10.0, 3.2, 3, offset=0.5) == [0.5, 3.7]  # back to back from the offset: 6.9 + 3.2 > 10
    assert clip_starts(3.7, 3.2, 3, offset=0.5) == [0.5]
    assert clip_starts(3.6, 3.2, 3, offset=0.5) == []  # one clip fits the video, not after the offset
    assert clip_starts(10.0, 3.2, 3, offset=0.0, stride=None) == clip_starts(10.0, 3.2, 3)


def test_sampling_fields_round_trip_and_default_for_old_configs():
    cfg = PreprocessConfig(clip_offset_s=0.5, clip_stride_s=1.6)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # as saved with a model
    old = {k: v for k, v in PreprocessConfig().to_dict().items() if k not in ("clip_offset_s", "clip_stride_s")}
    assert PreprocessConfig.from_dict(old) == PreprocessConfig()  # a config saved before the fields existed
    # the hash shards were written under before these fields existed: one face (max_faces=1) keeps it
    # valid; every face (the default) writes other shards for videos of several people, so it differs
    assert PreprocessConfig(max_faces=1).hash() == "5229b89333b5808d" != PreprocessConfig().hash()
    assert len({cfg.hash(), PreprocessConfig(clip_offset_s=0.5).hash(), PreprocessConfig().hash()}) == 3
    for bad in (dict(clip_offset_s=-0.1), dict(clip_offset_s=float("nan")), dict(clip_stride_s=0.0)):
        with pytest.raises(ValueError, match="clip_"):
            PreprocessConfig(**bad)


def test_ingest_settings_pass_the_sampling_fields_on(tmp_path):
    from pydantic import ValidationError

    from tasks.ingest.settings import IngestSettings

    base = dict(data=str(tmp_path / "data"), out=str(tmp_path / "out"))
    assert IngestSettings(**base).preprocess == PreprocessConfig()
    pre = IngestSettings(**base, preprocess={"clip_offset_s": 0.5, "clip_stride_s": 1.6}).preprocess
    assert (pre.clip_offset_s, pre.clip_stride_s) == (0.5, 1.6)
    with pytest.raises(ValidationError):
        IngestSettings(**base, preprocess={"clip_stride_s": 0.0})
    assert IngestSettings(**base, preprocess={"clip_mode": "native"}).preprocess.clip_mode == "native"
    with pytest.raises(ValidationError):
        IngestSettings(**base, preprocess={"clip_mode": "dense"})
    assert IngestSettings(**base, preprocess={"crop": "landmarks", "lip_track": True}).preprocess.lip_track
    with pytest.raises(ValidationError, match="lip_track needs crop=landmarks"):
        IngestSettings(**base, preprocess={"lip_track": True})
    with pytest.raises(ValueError, match="lip_track needs crop=landmarks"):
        PreprocessConfig(lip_track=True)
    assert PreprocessConfig(crop="landmarks").hash() == PreprocessConfig(crop="landmarks", lip_track=False).hash()
    assert PreprocessConfig(crop="landmarks").hash() != PreprocessConfig(crop="landmarks", lip_track=True).hash()


@pytest.fixture(scope="module")
def talking_face(tmp_path_factory) -> Path:
    """One REAL 7 s talking-face video with speech (25 fps, 160 px)."""
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    root = make_dfdc_sample(tmp_path_factory.mktemp("face") / "data", n_real=1, parts=0, duration_s=7.0,
                            size=(160, 160), seed=3, manipulations=())  # fmt: skip
    return next(root.glob("*.mp4"))


def test_clips_start_at_the_offset_and_overlap_by_the_stride(talking_face):
    base = PreprocessConfig(face_size=64)
    cfg = PreprocessConfig(face_size=64, clip_offset_s=0.5, clip_stride_s=1.6)
    with face_detector(cfg) as detector:
        default = preprocess_video(str(talking_face), base, detector)
        shifted = preprocess_video(str(talking_face), cfg, detector)
    assert [c.start_s for c in default.clips] == [0.0, 3.2]  # defaults: back to back from t=0, as before
    assert default.clips[0].frame_times[0] == 0.0 and default.clips[0].mel_start_s == 0.0
    assert [c.start_s for c in shifted.clips] == [0.5, 2.1, 3.7]  # 7 s holds three overlapping clips
    for clip in shifted.clips:
        # the frame nearest the start (0.5 s is a tie between two frames at 25 fps)
        assert clip.frame_times[0] == pytest.approx(clip.start_s, abs=0.5 / 25 + 1e-6)
        assert clip.mel_start_s == pytest.approx(round(clip.frame_times[0] / 0.01) * 0.01, abs=1e-6)
        assert clip.frames.shape == (16, 64, 64, 3) and clip.mel.shape == (128, 320)
    first, second = shifted.clips[:2]
    # 1.6 s apart: the second clip's first 8 frames are the first clip's last 8, decoded once, and so is the sound
    assert second.frame_times[:8] == first.frame_times[8:]
    assert np.array_equal(second.frames[:8], first.frames[8:])
    np.testing.assert_array_equal(second.mel[:, :160], first.mel[:, 160:])


def test_native_clips_are_consecutive_frames_and_their_mel_spans_exactly_them(talking_face):
    """clip_mode='native': 16 consecutive frames at the video's 25 fps (0.64 s), the mel over those 0.64 s."""
    cfg = PreprocessConfig(face_size=64, clip_mode="native")
    with face_detector(cfg) as detector:
        native = preprocess_video(str(talking_face), cfg, detector)
    with av.open(str(talking_face)) as c:  # every frame's presentation time, from a full decode
        v = c.streams.video[0]
        shown = sorted(round(float((f.pts - v.start_time) * v.time_base), 6) for f in c.decode(v))
    info = probe(str(talking_face))
    full = log_mel(decode_audio(str(talking_face), 16000, start_time=info.start_time))  # (F, Tm) of the whole video
    assert [c.start_s for c in native.clips] == [0.0, 0.64, 1.28]  # back to back, a native clip's length apart
    for clip in native.clips:
        first = shown.index(clip.frame_times[0])
        assert clip.frame_times == shown[first : first + 16]  # consecutive frames, none skipped or repeated
        assert clip.fps == pytest.approx(25.0) and clip.frames.shape == (16, 64, 64, 3)
        # 16 frames shown for 1/25 s each: 0.64 s = 64 mel columns from the first frame's time
        column = round(clip.mel_start_s / 0.01)
        assert clip.mel_start_s == pytest.approx(clip.frame_times[0], abs=0.005) and clip.mel.shape == (128, 64)
        np.testing.assert_array_equal(clip.mel, full[:, column : column + 64])
    assert PreprocessConfig(clip_mode="native").hash() != PreprocessConfig().hash()
    with pytest.raises(ValueError, match="clip_mode"):
        PreprocessConfig(clip_mode="dense")


def test_native_clips_of_a_variable_rate_stream_are_its_consecutive_frames(footage_vfr):
    """A stream with uneven gaps (30 fps with dropped frames, as phone clips): the frames shown, in order."""
    cfg = PreprocessConfig(face_size=64, clip_mode="native", max_clips=1)
    path, times = footage_vfr
    with face_detector(cfg) as detector:
        (clip,) = preprocess_video(str(path), cfg, detector).clips
    np.testing.assert_allclose(clip.frame_times, times[:16], atol=1e-6)
    span = times[15] - times[0]
    assert clip.fps == pytest.approx(15 / span)
    # T frames of the clip's mean duration, resampled to the 64 columns every native clip has (4 per frame)
    assert clip.mel.shape == (128, 64) and round(16 * span / 15 / 0.01) != 64
    # the same span computed directly with the hop that gives 64 columns: the resampled mel is that sound
    hop_ms = 16 * span / 15 / 64 * 1000
    wave = decode_audio(str(path), 16000, start_time=probe(str(path)).start_time)
    start = int(round(clip.mel_start_s * 16000))
    direct = log_mel(wave[start:], dataclasses.replace(default_mel(), hop_ms=hop_ms))[:, :64]  # (F, 64)
    assert np.corrcoef(direct.ravel(), clip.mel.ravel())[0, 1] > 0.95


@pytest.fixture(scope="module")
def footage_vfr(talking_face, tmp_path_factory):
    """The talking face re-timed onto a 30 fps grid with every third frame dropped, timestamps in ms."""
    with av.open(str(talking_face)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][:60]
    times = np.array([k / 30 for k in range(90) if k % 3 != 2])[: len(frames)]  # gaps of 1/30 and 2/30 s
    times = np.round(times, 3)
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    speech = decode_audio(str(talking_face), 44100)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        aus = out.add_stream("aac", rate=44100, layout="mono")
        for frame, t in zip(frames, times):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = int(round(t * 1000)), Fraction(1, 1000)
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
        af = av.AudioFrame.from_ndarray(speech[None, : int(44100 * times[-1])], format="flt", layout="mono")  # (1, n)
        af.sample_rate, af.pts = 44100, 0
        out.mux(aus.encode(af))
        out.mux(aus.encode())
    return path, times


def test_mel_columns_divide_into_the_masking_slices_and_audio_tokens_do_not():
    """Documents today's alignment of the K=8 masking slices (no check enforces it: uneven slices run).

    A 3.2 s clip has 320 mel columns and 8 video time tokens, one per slice; frame k is shown at
    k / fps from the mel start, so a tubelet (frames 2i, 2i + 1) spans [0.4 i - 0.1, 0.4 i + 0.3) s
    (the first cut to the clip). Its 20 audio time tokens of 16 columns (0.16 s) each join the slice
    they overlap most: 2, 2, 3, 2, 3, 2, 3, 3 tokens, so an audio slice spans up to 0.08 s more or
    less than the video slice it is paired with.
    """
    import torch

    from avff_model.config import AVFFConfig
    from avff_model.fusion import frame_shift, overlap_slices, slice_ids

    pre = PreprocessConfig()
    model = AVFFConfig(img_size=pre.face_size, num_frames=pre.frames_per_clip, n_mels=pre.n_mels,
                       mel_frames=pre.mel_frames)  # fmt: skip
    k = model.num_slices
    assert (pre.mel_frames, k, pre.mel_frames % k) == (320, 8, 0)
    assert model.video_grid[0] == k  # one video time token per slice

    def seconds_per_slice(ids: torch.Tensor, num_time: int, clip_seconds: float) -> list[float]:
        return [round(n * clip_seconds / num_time, 6) for n in torch.bincount(ids, minlength=k).tolist()]

    video_time, audio_time = model.video_grid[0], model.audio_grid[1]
    video = slice_ids(torch.arange(video_time), video_time, k)  # (T',)
    audio = overlap_slices(torch.arange(audio_time), audio_time, k, frame_shift(pre.frames_per_clip))  # (Tm',)
    assert seconds_per_slice(video, video_time, pre.clip_seconds) == [0.4] * 8
    assert seconds_per_slice(audio, audio_time, pre.clip_seconds) == [0.32, 0.32, 0.48, 0.32, 0.48, 0.32, 0.48, 0.48]


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
