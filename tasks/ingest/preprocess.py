"""One video -> aligned (face frames, log-mel) clips. Shared by ingest and `avff predict`.

This is the only preprocessing code path: training shards and served predictions both
come from :func:`preprocess_video`, so what the model sees at serve time is what it saw
in training (a test checks the parity).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.ingest.audio import SILENCE_LOG_MEL, decode_audio, log_mel, mel_window, resample_columns
from tasks.ingest.faces import FaceDetector, FaceTrack, crop_track, track_faces
from storage.shard_schema import LIP_TRACK_FPS, lip_track_steps
from tasks.ingest.landmarks import (
    LandmarkFaceDetector,
    LandmarkTrack,
    align,
    crop_landmarks,
    find_landmarks,
    lip_shape,
    lip_track,
    mouth_box,
    pose_of,
)
from tasks.ingest.stages import stage
from tasks.ingest.config import PreprocessConfig
from tasks.ingest.video import (
    VideoError,
    VideoInfo,
    nearest_frames,
    frames_within,
    presented_times,
    probe,
    read_frames,
)


@dataclass
class Clip:
    index: int
    start_s: float
    frames: np.ndarray  # (T, S, S, 3) uint8 face crops
    mel: np.ndarray  # (F, Tm) float32 log-mel
    face_box: list[float]
    det_score: float
    detected_frac: float
    frame_times: list[float] = field(default_factory=list)  # (T,) seconds: what was actually shown
    mel_start_s: float = 0.0  # the mel window starts at the first frame's time (on the hop grid)
    fps: float = 5.0  # the frames' rate: clip_fps (spread), the frames' own (native)
    face: int = 0  # which of the video's face tracks: 0 is the main face
    boxes: np.ndarray | None = None  # (T, 4) the track's box per frame, pixels of the upright frame
    # with crop="landmarks" only (None otherwise, as before landmarks existed):
    crop: str | None = None  # "landmarks" (aligned) or "box_fallback" (too few landmarks: the detector box)
    mouth_box: list[float] | None = None  # [x0, y0, x1, y1] crop pixels holding the lips of every frame
    landmark_frac: float | None = None  # of the clip's frames with their own landmarks
    lip_shape: list[list[float]] | None = None  # (T, 2) the mouth's opening and width per frame (landmarks.lip_shape)
    # with lip_track: (K, 2) the same at LIP_TRACK_FPS over the clip's span, K = T / fps * LIP_TRACK_FPS
    lip_track: list[list[float]] | None = None


@dataclass
class Preprocessed:
    info: VideoInfo
    clips: list[Clip]
    face_frac: float  # over all sampled frames
    faces: int = 1  # face tracks with at least one clip
    crop: str | None = None  # as Clip.crop, for the whole video's main face (the manifest's column)
    landmark_frac: float | None = None  # over the main face's sampled frames

    def by_face(self) -> dict[int, list[Clip]]:
        """face index -> its clips, in clip order."""
        out: dict[int, list[Clip]] = {}
        for c in self.clips:
            out.setdefault(c.face, []).append(c)
        return out


def clip_starts(
    duration: float, clip_seconds: float, max_clips: int, offset: float = 0.0, stride: float | None = None,
    fits: float | None = None,
) -> list[float]:  # fmt: skip
    """Start times of the clips that fit in duration: the first at offset, then one every stride
    seconds (None: clip_seconds, back to back; less: overlapping clips), at most max_clips. A clip fits
    where ``fits`` seconds from its start lie in the video (None: all its clip_seconds).

    10 s at 3.2 s -> [0.0, 3.2, 6.4]; with offset 0.5 and stride 1.6 -> [0.5, 2.1, 3.7, 5.3] (before the cap);
    3 s at 3.2 s -> [] but [0.0] with fits=2.9.
    """
    step = clip_seconds if stride is None else stride
    room = duration - offset - (clip_seconds if fits is None else fits)  # how far past the first start the last may lie
    if room < -1e-6:
        return []
    n = int(np.floor((room + 1e-6) / step)) + 1
    return [round(offset + i * step, 6) for i in range(min(n, max_clips))]


def face_detector(cfg: PreprocessConfig) -> FaceDetector:
    """The detector ``cfg``'s preprocessing runs with (with the face mesh when ``crop="landmarks"``);
    build one per worker and reuse it for every video."""
    if cfg.crop == "landmarks":
        return LandmarkFaceDetector(min_score=cfg.min_det_score, detect_side=cfg.detect_side, mesh_roi=cfg.mesh_roi)
    return FaceDetector(min_score=cfg.min_det_score, detect_side=cfg.detect_side)


def preprocess_video(path: str, cfg: PreprocessConfig, detector: FaceDetector) -> Preprocessed:
    """Decode, detect/track/crop the face and compute the mel for each clip.

    Raises VideoError with a stable reason for anything that makes the video unusable.
    """
    with stage("probe"):
        info = probe(path, cfg.limits)
    duration = min(info.duration, cfg.limits.read_seconds) if np.isfinite(info.duration) else cfg.limits.read_seconds
    plan = (
        _native_plan(path, info, cfg, duration)
        if cfg.clip_mode == "native"
        else _spread_plan(path, info, cfg, duration)
    )
    times, picks = _unique_times(plan.wanted)  # (N,) sorted, (C, T) into times

    with stage("audio"):
        wave = _audio(path, info, cfg, plan.end_s)
    with stage("mel"):
        mel = log_mel(wave, cfg.mel)  # (F, Tm_total)
    frames, got = read_frames(
        path,
        times.tolist(),
        rotation=info.rotation,
        skip_nonref=cfg.skip_nonref,
        read_seconds=cfg.limits.read_seconds,
        max_pixels=cfg.limits.max_pixels,
        hwaccel=cfg.hwaccel,
    )  # N x (H, W, 3), (N,)
    on_time = [np.abs(got[p] - times[p]).max() <= cfg.max_frame_error_s for p in picks]
    if not any(on_time):
        raise _off_stream(path, info, times, got, cfg.max_frame_error_s)
    try:
        tracks = track_faces(
            frames, detector, cfg.smooth_window, cfg.max_faces, cfg.min_track_frac
        )  # stages: detect, refine, faces
    except ValueError as e:
        raise VideoError("no_face", f"{path}: {e}") from e
    track = tracks[0]  # the main face: what a single-face ingest keeps
    clips: list[Clip] = []
    video_crop, video_found = None, None  # the main face's crop kind and landmark frames (the manifest's)
    for t in tracks:  # faces without a clip are dropped; the kept ones are numbered 0, 1, ...
        crops, lm, found = _crop_faces(frames, t, cfg, detector)  # (N, S, S, 3)
        crop_kind = None if cfg.crop == "box" else ("landmarks" if lm is not None else "box_fallback")
        if t is track:
            video_crop, video_found = crop_kind, found
        face_clips = _face_clips(len({c.face for c in clips}), t, crops, plan, picks, got, on_time, mel, cfg,
                                 (crop_kind, lm, found))  # fmt: skip
        if t is track and not face_clips:
            break  # no clip of the main face: the video is refused below, as before
        clips += face_clips
    if cfg.lip_track and clips:
        with stage("lip_track"):
            _add_lip_tracks(path, info, cfg, clips, detector)
    if not clips:
        best = max(float(track.detected[p].mean()) for p, ok in zip(picks, on_time) if ok)
        raise VideoError(
            "no_face",
            f"{path}: the best clip has a face in {best:.0%} of its frames, below min_face_frac={cfg.min_face_frac} "
            f"({track.detected.mean():.0%} of all sampled frames)",
        )
    return Preprocessed(
        info=info, clips=clips, face_frac=float(track.detected.mean()),
        faces=len({c.face for c in clips}), crop=video_crop,
        landmark_frac=None if video_found is None else round(float(video_found.mean()), 4),
    )  # fmt: skip


def _face_clips(
    face: int, track: FaceTrack, crops: np.ndarray, plan: _ClipPlan, picks: np.ndarray, got: np.ndarray,
    on_time: list[bool], mel: np.ndarray, cfg: PreprocessConfig, landmarks: tuple = (None, None, None),
) -> list[Clip]:  # fmt: skip
    """The clips of one face track: those on time with the face detected in min_face_frac of their frames.

    crops (N, S, S, 3) of the N sampled frames; picks (C, T) each clip's frames among them; mel (F, Tm_total).
    """
    crop_kind, lm, found = landmarks  # see _crop_faces / _clip_landmarks
    clips = []
    for k, (start, p) in enumerate(zip(plan.starts, picks)):
        det = track.detected[p]
        if not on_time[k] or det.mean() < cfg.min_face_frac:
            continue
        mel_start = round(float(got[p][0]) / cfg.mel.hop_s) * cfg.mel.hop_s  # aligned to the frame shown
        clips.append(
            Clip(
                index=k,
                start_s=start,
                frames=crops[p],
                mel=_clip_mel(mel, mel_start, plan.mel_frames[k], cfg),
                face_box=[float(x) for x in track.boxes[p].mean(axis=0)],
                det_score=float(track.scores[p][det].mean()) if det.any() else 0.0,
                detected_frac=float(det.mean()),
                frame_times=[round(float(t), 6) for t in got[p]],
                mel_start_s=round(mel_start, 6),
                fps=plan.fps[k],
                face=face,
                boxes=track.boxes[p],
                **_clip_landmarks(crop_kind, lm, found, p, cfg.face_size),
            )
        )
    return clips


def _crop_faces(frames, track, cfg: PreprocessConfig, detector: FaceDetector):
    """N frames + face track -> ((N, S, S, 3) crops, the landmark track or None where the box was used,
    (N,) bool frames with landmarks or None with crop="box")."""
    lm, found = None, None
    if cfg.crop == "landmarks":
        if not isinstance(detector, LandmarkFaceDetector):
            raise TypeError("crop='landmarks' needs the face mesh: build the detector with face_detector(cfg)")
        with stage("landmarks"):
            points = find_landmarks(frames, track, detector)
            found = np.array([p is not None for p in points])  # (N,)
            if found.any() and found.mean() >= cfg.min_landmark_frac:  # else: the box, and the clips say so
                lm = align(points, cfg.face_size, cfg.smooth_window)
    with stage("crop"):
        if lm is not None:
            return crop_landmarks(frames, lm, cfg.face_size), lm, found
        return crop_track(frames, track, cfg.face_size, cfg.face_margin), lm, found


def _clip_landmarks(crop_kind: str | None, lm: LandmarkTrack | None, found: np.ndarray | None, picks: np.ndarray,
                    size: int) -> dict:  # fmt: skip
    """A clip's landmark fields: none with crop="box"; with landmarks, its mouth box from its frames' lips."""
    if crop_kind is None:
        return {}
    fields = {"crop": crop_kind, "mouth_box": None, "landmark_frac": round(float(found[picks].mean()), 4)}
    if lm is None:
        return fields
    return {**fields, "mouth_box": mouth_box(lm.lips[picks], size),
            "lip_shape": [[round(float(v), 4) for v in row] for row in lm.shape[picks]]}  # fmt: skip


def _add_lip_tracks(path: str, info: VideoInfo, cfg: PreprocessConfig, clips: list[Clip], detector) -> None:
    """Each clip's ``lip_track``: for a landmark clip, the face mesh on every frame the video shows within
    its span, its box the clip's track box at that time, resampled to LIP_TRACK_FPS
    (:func:`tasks.ingest.landmarks.lip_track`); zeros where no lips were found (a box fallback, a
    mostly faceless span), so every clip of the ingest has one and batches stack."""
    wanted = [c for c in clips if c.crop == "landmarks"]  # box fallbacks: no mesh to follow
    grids = [c.frame_times[0] + np.arange(lip_track_steps(len(c.frame_times), c.fps)) / LIP_TRACK_FPS for c in wanted]
    seen = _lips_in_spans(path, info, cfg, wanted, [(g[0] - 0.02, g[-1] + 0.02) for g in grids], detector)
    for c, grid, (times, shapes) in zip(wanted, grids, seen):
        track = lip_track(np.array(times), shapes, grid)
        if track is not None:
            c.lip_track = [[round(float(v), 4) for v in row] for row in track]
    for c in clips:
        if c.lip_track is None:
            c.lip_track = [[0.0, 0.0]] * lip_track_steps(len(c.frame_times), c.fps)


def _lips_in_spans(path: str, info: VideoInfo, cfg: PreprocessConfig, clips: list[Clip],
                   spans: list[tuple[float, float]], detector) -> list[tuple[list[float], list]]:  # fmt: skip
    """Per clip: the times of the frames shown within its span and their lip shapes (None: no mesh),
    in one decode pass, a frame at a time."""
    seen: list[tuple[list[float], list]] = [([], []) for _ in clips]
    if not clips:
        return seen
    for t, rgb in frames_within(path, spans, rotation=info.rotation, read_seconds=cfg.limits.read_seconds,
                                max_pixels=cfg.limits.max_pixels, hwaccel=cfg.hwaccel):  # fmt: skip
        for c, (a, b), (times, shapes) in zip(clips, spans, seen):
            if a <= t <= b:
                box = np.array([np.interp(t, c.frame_times, c.boxes[:, j]) for j in range(4)])
                pts = detector.landmarks(rgb, box)
                times.append(t)
                shapes.append(None if pts is None else lip_shape(pts, pose_of(pts)[2]))
    return seen


@dataclass(frozen=True)
class _ClipPlan:
    """Which frames each clip asks for, and what its mel window covers."""

    starts: list[float]  # (C,) clip start times, seconds
    wanted: np.ndarray  # (C, T) requested frame times, seconds
    fps: list[float]  # (C,) the rate of each clip's frames
    mel_frames: list[int]  # (C,) mel frames of each clip's window
    end_s: float  # the audio needed: up to the end of the last clip


def _too_short(path: str, info: VideoInfo, cfg: PreprocessConfig, clip_seconds: float,
               fits: float | None = None) -> VideoError:  # fmt: skip
    """``fits``: the span a clip's frames need where that is less than the clip (a spread clip's)."""
    late = f" starting at {cfg.clip_offset_s:g}s" if cfg.clip_offset_s else ""
    # the planned length is the shorter of the two; an undeclared duration (NaN) leaves read_seconds
    length = (
        f"{info.duration:.2f}s"
        if info.duration <= cfg.limits.read_seconds
        else f"read_seconds={cfg.limits.read_seconds:g}"
    )
    need = f" (its frames need {fits:.3g}s)" if fits is not None else ""
    short = f"{length} is shorter than one {clip_seconds:.3g}s clip{need}{late}"
    return VideoError("too_short", f"{path}: {short}")


def _spread_plan(path: str, info: VideoInfo, cfg: PreprocessConfig, duration: float) -> _ClipPlan:
    """Frames clip_fps apart: frame i of a clip at start + i / clip_fps (the nearest frame is read); a clip
    fits where its frames do (:attr:`PreprocessConfig.spread_fit_seconds`), its sound padded with silence."""
    starts = clip_starts(duration, cfg.clip_seconds, cfg.max_clips, cfg.clip_offset_s, cfg.clip_stride_s,
                         fits=cfg.spread_fit_seconds)  # fmt: skip
    if not starts:
        raise _too_short(path, info, cfg, cfg.clip_seconds, fits=cfg.spread_fit_seconds)
    wanted = np.array([[s + i / cfg.clip_fps for i in range(cfg.frames_per_clip)] for s in starts])  # (C, T)
    n = len(starts)
    return _ClipPlan(starts, wanted, [cfg.clip_fps] * n, [cfg.mel_frames] * n, starts[-1] + cfg.clip_seconds)


def _native_plan(path: str, info: VideoInfo, cfg: PreprocessConfig, duration: float) -> _ClipPlan:
    """Consecutive frames at the video's own rate: the frame nearest each start and the T - 1 after it.

    The requested times are the frames' own presentation times, so :func:`read_frames` returns
    exactly those frames. A clip's mel spans its frames' duration, T / fps (its fps measured over
    its frames, so a variable-rate stream's clip covers the time its frames were shown).
    """
    t = cfg.frames_per_clip
    rate = info.fps if info.fps > 0 else 25.0  # only places the starts; the frames' times are measured
    starts = clip_starts(duration, t / rate, cfg.max_clips, cfg.clip_offset_s, cfg.clip_stride_s)
    if not starts:
        raise _too_short(path, info, cfg, t / rate)
    shown = presented_times(path, starts[-1] + t / rate, cfg.limits.read_seconds)  # (M,)
    first = nearest_frames(shown, np.asarray(starts)) if shown.size else np.zeros(0, int)  # (C,)
    kept = [(s, int(i)) for s, i in zip(starts, first) if i + t <= shown.size]
    if not kept:
        raise VideoError("truncated", f"{path}: {shown.size} frames, fewer than one clip of {t} from {starts[0]:g}s")
    wanted = np.stack([shown[i : i + t] for _, i in kept])  # (C, T)
    fps = [float((t - 1) / (w[-1] - w[0])) for w in wanted]
    mel_frames = [int(round(t / f / cfg.mel.hop_s)) for f in fps]
    end = max(float(w[-1]) + 1.0 / f for w, f in zip(wanted, fps))
    return _ClipPlan([s for s, _ in kept], wanted, fps, mel_frames, end)


def _clip_mel(mel: np.ndarray, start_s: float, frames: int, cfg: PreprocessConfig) -> np.ndarray:
    """(F, frames) columns of ``mel`` from ``start_s``: the clip's own span; a native clip's resampled in
    time to ``cfg.native_mel_frames`` columns (unchanged at 25 fps, where the span already has that many)."""
    window = mel_window(mel, start_s, frames, cfg.mel.hop_s, pad_value=SILENCE_LOG_MEL)  # (F, frames)
    return resample_columns(window, cfg.native_mel_frames) if cfg.clip_mode == "native" else window


def _unique_times(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, T) requested times -> (N,) the distinct ones, sorted, and (C, T) each clip's frames as indices into them.

    Overlapping clips share times: each is decoded, tracked and cropped once (the tracker needs
    the frames in time order). Back-to-back clips: the times in clip order, picks = arange.
    """
    flat = wanted.reshape(-1)  # (C*T,)
    _, first, inverse = np.unique(np.round(flat, 6), return_index=True, return_inverse=True)
    return flat[first], inverse.reshape(wanted.shape)


def _audio(path: str, info: VideoInfo, cfg: PreprocessConfig, duration: float) -> np.ndarray:
    """(n,) float32 wave of the first duration seconds, sample 0 at the video's t=0; silence when allowed."""
    if info.has_audio:
        wave = decode_audio(path, cfg.sample_rate, max_seconds=duration + 0.5, start_time=info.start_time)
        rms = float(np.sqrt(np.mean(wave**2))) if wave.size else 0.0
        if rms < cfg.min_audio_rms:
            raise VideoError("silent_audio", f"{path}: audio track is silent (RMS {rms:.2e} < {cfg.min_audio_rms})")
        return wave
    if cfg.require_audio:
        raise VideoError("no_audio", f"{path}: no audio stream (AVFF needs audio; set require_audio=False to keep)")
    return np.zeros(int(duration * cfg.sample_rate), np.float32)


def _off_stream(path: str, info: VideoInfo, times: np.ndarray, got: np.ndarray, tol: float) -> VideoError:
    """Why no clip has its frames where they should be: the stream ends early, or it has holes."""
    last = float(got.max())
    if last < times.max() - tol and not np.isfinite(info.duration):
        # no declared duration (a streamed mkv): the frames ending is the video ending, not a cut
        return VideoError(
            "too_short",
            f"{path}: the container declares no duration and its video frames end at {last:.2f}s, "
            "too early for any clip's frames",
        )
    if last < times.max() - tol:
        return VideoError(
            "truncated",
            f"{path}: video frames end at {last:.2f}s, so no clip's frames are there "
            f"(the container says {info.duration:.1f}s)",
        )
    worst = int(np.argmax(np.abs(got - times)))
    return VideoError(
        "frame_gap",
        f"{path}: no frame within {tol}s of {times[worst]:.2f}s (nearest at {got[worst]:.2f}s) in every clip",
    )
