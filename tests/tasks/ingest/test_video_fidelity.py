"""Every sampled frame is the frame a full decode gives at the nearest timestamp, bit for bit.

The reference is written here, the obvious way: decode every frame with PyAV (no skipping),
pick the frame nearest each requested time, convert it to RGB. It is run against the real
clips in ../shared/data (skipped when absent) and against generated streams whose B-frames
are references (x264 B-pyramid, x265), where skipping B-frames is visibly wrong.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tasks.ingest.faces import FaceDetector
from tasks.ingest.preprocess import PreprocessConfig, preprocess_video
from tasks.ingest.video import RGBConverter, nearest_frames, sample_frames

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
REAL_CLIPS = sorted(SHARED.glob("*/*.mp4"))
INGEST_TIMES = [s + i / 5 for s in (0.0, 3.2, 6.4) for i in range(16)]  # 3 clips x 16 frames at 5 fps


def reference_frames(path: Path, times: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Decode everything twice: once for the timestamps, once for the nearest frames' pixels."""
    with av.open(str(path)) as c:
        stamps = [f.time for f in c.decode(video=0)]
    start = stamps[0]
    rel = np.asarray(stamps) - start
    want = [int(np.argmin(np.abs(rel - t))) for t in times]  # first of equals: the earlier frame
    keep = {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                keep[i] = f.to_ndarray(format="rgb24")
            if i > max(want):
                break
    return np.stack([keep[i] for i in want]), rel[want]


def _assert_exact(path: Path, times: list[float], **kw) -> None:
    ref, ref_t = reference_frames(path, times)
    got, got_t = sample_frames(str(path), times, **kw)
    np.testing.assert_allclose(got_t, ref_t, atol=1e-9)
    for i, (a, b) in enumerate(zip(got, ref)):
        assert np.array_equal(a, b), f"{path.name}: frame {i} at {got_t[i]:.3f}s differs from a full decode"


@pytest.mark.skipif(not REAL_CLIPS, reason="no real clips in ../shared/data")
@pytest.mark.parametrize("path", REAL_CLIPS, ids=lambda p: p.name)
def test_real_clips_sample_exactly_the_full_decode(path):
    _assert_exact(path, INGEST_TIMES)


def _moving_frames(n: int, size: int = 96) -> np.ndarray:
    """Textured content that moves every frame, so a broken reference smears what follows it."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (size * 2, size * 2, 3), dtype=np.uint8)
    return np.stack([np.roll(texture, (3 * i, 2 * i), axis=(0, 1))[:size, :size] for i in range(n)])  # (n, S, S, 3)


def _encode(path: Path, codec: str, options: dict, n: int = 90, fps: int = 30) -> Path:
    frames = _moving_frames(n)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=Fraction(fps))
        vs.width = vs.height = frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = options
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
    return path


STREAMS = {
    "h264_bpyramid": (
        "libx264",
        {"preset": "medium", "bf": "3", "refs": "4", "x264-params": "b-pyramid=normal", "crf": "30"},
    ),
    "h264_open_gop": (
        "libx264",
        {"preset": "medium", "bf": "3", "g": "24", "x264-params": "b-pyramid=normal:open-gop=1", "crf": "30"},
    ),
    "h264_no_b": ("libx264", {"preset": "medium", "bf": "0", "crf": "30"}),
    "hevc_b": (
        "libx265",
        {"preset": "medium", "crf": "30", "x265-params": "log-level=error:bframes=4:b-pyramid=1:keyint=30"},
    ),
}


def _bidir_psnr(path: Path) -> float:
    """The worst PSNR of a B-frame-skipping decode against the full decode: proof the stream has reference B-frames."""
    full = {}
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            full[f.pts] = f.to_ndarray(format="gray").astype(float)
    worst = np.inf
    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.skip_frame = "BIDIR"
        for f in c.decode(video=0):
            mse = np.mean((f.to_ndarray(format="gray") - full[f.pts]) ** 2)
            worst = min(worst, 10 * np.log10(255**2 / mse) if mse else np.inf)
    return worst


@pytest.mark.parametrize("name", STREAMS)
def test_generated_streams_sample_exactly_the_full_decode(tmp_path, name):
    codec, options = STREAMS[name]
    path = _encode(tmp_path / f"{name}.{'mkv' if codec == 'libx265' else 'mp4'}", codec, options)
    if name == "h264_bpyramid":
        assert _bidir_psnr(path) < 30, "the stream must have B-frames that are references"
    times = [k / 7 for k in range(20)]  # off the frame grid: nearest, not exact times
    _assert_exact(path, times)
    _assert_exact(path, [k / 30 for k in range(90)])  # every frame, B-frames included


def test_nearest_frames_picks_the_nearest_and_the_earlier_on_a_tie():
    stamps = np.array([0.0, 0.1, 0.2, 0.5, 1.0])
    got = nearest_frames(stamps, np.array([-1.0, 0.04, 0.05, 0.34, 0.36, 0.75, 5.0]))
    np.testing.assert_array_equal(got, [0, 0, 0, 2, 3, 3, 4])


def _all_intra_copy(src: Path, dst: Path, seconds: float) -> Path:
    """A lossless (qp 0) all-intra H.264 copy of the first seconds: same pixels, same timestamps."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v = inp.streams.video[0]
        vs = out.add_stream("libx264", rate=v.average_rate)
        vs.width, vs.height, vs.pix_fmt = v.codec_context.width, v.codec_context.height, "yuv420p"
        vs.codec_context.time_base = v.time_base
        vs.options = {"qp": "0", "g": "1", "bf": "0", "preset": "ultrafast"}
        a = inp.streams.audio[0] if inp.streams.audio else None
        aus = out.add_stream("pcm_s16le" if dst.suffix == ".mkv" else "aac", rate=a.rate, layout="mono") if a else None
        for frame in inp.decode(v):
            if frame.time > seconds:
                break
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        if a is not None:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=a.rate)
            inp.seek(0)
            for frame in inp.decode(a):
                if frame.time > seconds + 0.5:
                    break
                for f in resampler.resample(frame):
                    out.mux(aus.encode(f))
            out.mux(aus.encode())
    return dst


@pytest.mark.skipif(not REAL_CLIPS, reason="no real clips in ../shared/data")
def test_crops_equal_between_a_real_clip_and_its_lossless_all_intra_copy(tmp_path):
    src = next(p for p in REAL_CLIPS if "dfdc" in p.parent.name)
    copy = _all_intra_copy(src, tmp_path / "intra.mp4", seconds=3.4)
    cfg = PreprocessConfig(face_size=96, max_clips=1)
    with FaceDetector() as det:
        a = preprocess_video(str(src), cfg, det)
        b = preprocess_video(str(copy), cfg, det)
    assert len(a.clips) == len(b.clips) == 1
    assert a.clips[0].frame_times == b.clips[0].frame_times
    assert np.array_equal(a.clips[0].frames, b.clips[0].frames), (
        "the crops must not depend on how the pixels were coded"
    )


def test_an_edit_list_cut_samples_the_presented_frames_exactly(tmp_path):
    """`ffmpeg -ss 0.5 -c copy` keeps the GOP's leading frames as references and hides them with an
    edit list (packets flagged discard): they are decoded but never picked, and t=0 is the cut."""
    import subprocess

    import imageio_ffmpeg

    src = _encode(tmp_path / "src.mp4", *STREAMS["h264_bpyramid"], n=120)
    cut = tmp_path / "cut.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-ss", "0.5", "-i", str(src), "-t", "2.5",
                    "-c", "copy", str(cut)], check=True)  # fmt: skip
    with av.open(str(cut)) as c:
        assert any(p.is_discard for p in c.demux(video=0)), "the copy must carry an edit list"
    _assert_exact(cut, [k / 7 for k in range(15)])


def _frames_of(path: Path, n: int) -> list:
    with av.open(str(path)) as c:
        return [f for _, f in zip(range(n), c.decode(video=0))]


BT709, FULL_RANGE = 1, 2  # AVCOL_SPC_BT709, AVCOL_RANGE_JPEG: tags as a decoder sets them on a frame


def _synthetic_frame(w: int, h: int, fmt: str, seed: int, colorspace: int = 0, color_range: int = 0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
    frame.colorspace, frame.color_range = colorspace, color_range
    return frame


def test_one_converter_gives_to_ndarray_pixels_whatever_each_frame_s_size_format_and_colour_tags():
    """RGBConverter keeps one swscale context for many frames (issue 26: a new one per frame cost
    more than the conversion); a frame unlike the last (size, pixel format, colour matrix) must
    reconfigure it, never be converted with the last frame's settings."""
    frames = [
        _synthetic_frame(64, 48, "yuv420p", 0),
        _synthetic_frame(64, 48, "yuv420p", 1, colorspace=BT709),  # same size, another colour matrix
        _synthetic_frame(64, 48, "yuv420p", 2, color_range=FULL_RANGE),  # same size, full range
        _synthetic_frame(96, 34, "yuv444p", 3),  # another size and chroma layout
        _synthetic_frame(64, 48, "yuv420p", 4),  # back to the first kind
    ]
    for path in REAL_CLIPS[:1] + [p for p in REAL_CLIPS if "ffpp" in p.parent.name][:1]:
        frames += _frames_of(path, 3)  # real 1080p 4:2:0 and 720p 4:4:4, when present
    to_rgb = RGBConverter()
    for i, frame in enumerate(frames):
        want = frame.to_ndarray(format="rgb24")  # (H, W, 3): the conversion before issue 26
        got = to_rgb(frame)
        assert got.shape == (frame.height, frame.width, 3) and got.dtype == np.uint8
        assert np.array_equal(got, want), f"frame {i} ({frame.format.name} {frame.width}x{frame.height}) differs"
    assert np.array_equal(to_rgb(frames[3], rotation=90), np.rot90(frames[3].to_ndarray(format="rgb24")))
