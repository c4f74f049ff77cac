"""Formats real footage comes in ingest like DFDC's H.264 + AAC: codecs, containers, rates, orientation, channels.

Each case re-encodes a generated talking face (real PyAV encoders) the way a public clip is stored
(GRID: MPEG-1 + MP2 stereo in .mpg; LRS2: MPEG-4 part 2 + AAC 16 kHz; LatentSync: portrait HEVC;
SadTalker-Video: 50 fps; HelloMeme: 15 fps; V-Express: 30000/1001) and runs the real preprocessing,
spread (5 fps) and native-rate. The folder of real footage, when present, is ingested whole by
``test_every_real_clip_ingests_or_is_refused_for_its_content`` (skipped without it).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tasks.ingest.audio import SILENCE_LOG_MEL, decode_audio
from tasks.ingest.preprocess import PreprocessConfig, face_detector, preprocess_video
from tasks.ingest.scan import scan_dfdc
from tasks.ingest.video import Limits, probe

REALAV = Path(__file__).resolve().parents[4] / "shared" / "data" / "realav"


def _face(root: Path, fps: float, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 4 s generated talking face -> (frames (N, H, W, 3) uint8, mono speech (n,) float32 at 44.1 kHz)."""
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    data = make_dfdc_sample(root, n_real=1, parts=0, duration_s=4.0, size=size, fps=fps, seed=5, manipulations=())
    path = next(data.glob("*.mp4"))
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # (N, H, W, 3)
    return frames, decode_audio(str(path), 44100, max_seconds=60)


def _encode(path: Path, frames: np.ndarray, fps: Fraction, vcodec: str, acodec: str, rate: int, layout: str,
            speech: np.ndarray) -> Path:  # fmt: skip
    """frames (N, H, W, 3) and speech (n,) at 44.1 kHz -> a file in the container its suffix names."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.codec_context.thread_count = 1
        aus = out.add_stream(acodec, rate=rate, layout=layout)
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
        # the encoder converts the mono float speech to its own sample format, layout and rate
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(speech[None, :]), format="flt", layout="mono")  # (1, n)
        af.sample_rate, af.pts = 44100, 0
        out.mux(aus.encode(af))
        out.mux(aus.encode())
    return path


# name, suffix, (fps as generated, as stored), (H, W), video codec, audio codec, audio rate, layout
CASES = [
    ("grid_mpeg1_mp2_stereo", ".mpg", (25, Fraction(25)), (160, 192), "mpeg1video", "mp2", 44100, "stereo"),
    ("lrs2_mpeg4_aac16k", ".mp4", (25, Fraction(25)), (160, 160), "mpeg4", "aac", 16000, "mono"),
    ("portrait_hevc_48k", ".mp4", (25, Fraction(25)), (256, 144), "libx265", "aac", 48000, "stereo"),
    ("h264_50fps", ".mp4", (50, Fraction(50)), (160, 160), "libx264", "aac", 44100, "stereo"),
    ("h264_15fps", ".mp4", (15, Fraction(15)), (160, 160), "libx264", "aac", 44100, "stereo"),
    ("h264_ntsc", ".mp4", (30000 / 1001, Fraction(30000, 1001)), (160, 160), "libx264", "aac", 24000, "mono"),
]


@pytest.fixture(scope="module")
def detector():
    with face_detector(PreprocessConfig()) as d:
        yield d


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_format_ingests_in_both_clip_modes(case, tmp_path, detector):
    name, suffix, (fps, stored), size, vcodec, acodec, rate, layout = case
    frames, speech = _face(tmp_path / "gen", fps, size)
    path = _encode(tmp_path / f"{name}{suffix}", frames, stored, vcodec, acodec, rate, layout, speech)
    info = probe(str(path))
    assert (info.width, info.height) == (size[1], size[0]) and info.fps == pytest.approx(float(stored), rel=1e-3)
    assert info.has_audio and info.audio_rate == rate
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.channels == (2 if layout == "stereo" else 1)
    spread = preprocess_video(str(path), PreprocessConfig(face_size=64), detector)
    assert [c.start_s for c in spread.clips] == [0.0]  # 4 s holds one 3.2 s clip
    native = preprocess_video(str(path), PreprocessConfig(face_size=64, clip_mode="native"), detector)
    assert len(native.clips) == 3  # back to back at the video's own rate: 3 x 16 frames fit in 4 s at 15 fps and up
    for clip in spread.clips + native.clips:
        assert clip.frames.shape == (16, 64, 64, 3) and clip.detected_frac >= 0.5
        assert (clip.mel > SILENCE_LOG_MEL + 1).mean() > 0.5  # the speech survived the codec and the resampling
    for clip in native.clips:
        assert clip.mel.shape == (128, 64)  # 4 columns per frame at any rate: one shape for the model
        np.testing.assert_allclose(np.diff(clip.frame_times), 1 / float(stored), atol=2e-3)
        assert clip.fps == pytest.approx(float(stored), rel=1e-3)


def test_a_part_of_mpg_files_without_metadata_is_listed_and_refused(tmp_path):
    """.mpg (GRID's container) is a video suffix: unlisted files and folders of them are found, not skipped."""
    part = tmp_path / "data" / "grid"
    part.mkdir(parents=True)
    (part / "bbaf2n.mpg").write_bytes(b"\x00\x00\x01\xba" + b"\x00" * 100)
    (tmp_path / "data" / "other").mkdir()
    (tmp_path / "data" / "other" / "metadata.json").write_text(json.dumps({}))
    result = scan_dfdc(str(tmp_path / "data"))
    assert [(r.rel_path, r.reason) for r in result.rejected] == [("grid/bbaf2n.mpg", "missing_metadata")]


# every reason a clip of the real footage may be refused for: what it holds, never how it is stored
CONTENT_REASONS = {"too_short", "silent_audio", "no_face", "duplicate_id", "duplicate_of"}


@pytest.mark.slow  # 147 clips twice, ~1.5 min on 2 busy cores
@pytest.mark.skipif(not (REALAV / "provenance.json").exists(), reason="no real footage in ../shared/data/realav")
@pytest.mark.parametrize("clip_mode", ["spread", "native"])
def test_every_real_clip_ingests_or_is_refused_for_its_content(clip_mode, detector):
    """The real footage's 147 clips: H.264/HEVC/MPEG-4/MPEG-1, 15-50 fps, 16-48 kHz, portrait and square."""
    scan = scan_dfdc(str(REALAV))
    cfg = PreprocessConfig(face_size=64, max_clips=1, clip_mode=clip_mode, limits=Limits(read_seconds=8.0))
    refused = {r.rel_path: r.reason for r in scan.rejected}
    for entry in scan.entries:
        try:
            preprocess_video(str(REALAV / entry.rel_path), cfg, detector)
        except Exception as e:  # noqa: BLE001 - the reason is the assertion below
            refused[entry.rel_path] = getattr(e, "reason", f"{type(e).__name__}: {e}")
    assert len(scan.entries) + len(scan.rejected) == 147
    assert set(refused.values()) <= CONTENT_REASONS, refused
    if clip_mode == "native":  # 16 frames at 15-50 fps fit in the short clips that 3.2 s refuses
        assert "too_short" not in refused.values()
