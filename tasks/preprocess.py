"""One video -> aligned (face frames, log-mel) clips. Shared by ingest and `avff predict`.

This is the only preprocessing code path: training shards and served predictions both
come from :func:`preprocess_video`, so what the model sees at serve time is what it saw
in training (a test checks the parity).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tasks.audio import SILENCE_LOG_MEL, MelSpec, decode_audio, log_mel, mel_window
from tasks.faces import FaceDetector, crop_track, track_face
from tasks.video import Limits, VideoError, VideoInfo, probe, sample_frames


@dataclass(frozen=True)
class PreprocessConfig:
    frames_per_clip: int = 16  # T
    clip_fps: float = 5.0  # 16 frames at 5 fps = 3.2 s, the AVFF setting
    max_clips: int = 3
    face_size: int = 224
    face_margin: float = 1.3
    min_face_frac: float = 0.5  # of a clip's frames with a real detection
    smooth_window: int = 5
    detect_side: int = 640
    min_det_score: float = 0.5
    sample_rate: int = 16000
    n_mels: int = 128
    win_ms: float = 25.0
    hop_ms: float = 10.0
    require_audio: bool = True
    min_audio_rms: float = 1e-4  # below: a silent track, refused
    skip_bidir: bool = True
    max_frame_error_s: float = 0.1
    limits: Limits = field(default_factory=Limits)

    @property
    def clip_seconds(self) -> float:
        return self.frames_per_clip / self.clip_fps

    @property
    def mel(self) -> MelSpec:
        return MelSpec(self.sample_rate, self.n_mels, self.win_ms, self.hop_ms)

    @property
    def mel_frames(self) -> int:
        return int(round(self.clip_seconds / self.mel.hop_s))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("limits"), dict):
            d["limits"] = Limits(**d["limits"])
        return cls(**d)

    def hash(self) -> str:
        """Identifies the output: a change here invalidates previously written shards."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Clip:
    index: int
    start_s: float
    frames: np.ndarray  # (T, S, S, 3) uint8 face crops
    mel: np.ndarray  # (F, Tm) float32 log-mel
    face_box: list[float]
    det_score: float
    detected_frac: float


@dataclass
class Preprocessed:
    info: VideoInfo
    clips: list[Clip]
    stage_seconds: dict[str, float]
    face_frac: float  # over all sampled frames


def clip_starts(duration: float, clip_seconds: float, max_clips: int) -> list[float]:
    """Back-to-back clip start times that fit in duration: 10 s at 3.2 s -> [0.0, 3.2, 6.4]."""
    n = int(np.floor((duration + 1e-6) / clip_seconds))
    return [round(i * clip_seconds, 6) for i in range(min(n, max_clips))]


def preprocess_video(path: str, cfg: PreprocessConfig, detector: FaceDetector) -> Preprocessed:
    """Decode, detect/track/crop the face and compute the mel for each clip.

    Raises VideoError with a stable reason for anything that makes the video unusable.
    """
    timer = _Timer()
    with timer("probe"):
        info = probe(path, cfg.limits)
    duration = min(info.duration, cfg.limits.read_seconds) if np.isfinite(info.duration) else cfg.limits.read_seconds
    starts = clip_starts(duration, cfg.clip_seconds, cfg.max_clips)
    if not starts:
        raise VideoError("too_short", f"{path}: {info.duration:.2f}s is shorter than one {cfg.clip_seconds:.1f}s clip")
    times = [s + i / cfg.clip_fps for s in starts for i in range(cfg.frames_per_clip)]

    with timer("audio"):
        if info.has_audio:
            wave = decode_audio(path, cfg.sample_rate, max_seconds=duration + 1.0)
            rms = float(np.sqrt(np.mean(wave**2))) if wave.size else 0.0
            if rms < cfg.min_audio_rms:
                raise VideoError("silent_audio", f"{path}: audio track is silent (RMS {rms:.2e} < {cfg.min_audio_rms})")
        elif cfg.require_audio:
            raise VideoError("no_audio", f"{path}: no audio stream (AVFF needs audio; set require_audio=False to keep)")
        else:
            wave = np.zeros(int(duration * cfg.sample_rate), np.float32)
        mel = log_mel(wave, cfg.mel)  # (F, Tm_total)

    with timer("decode"):
        frames, got = sample_frames(
            path,
            times,
            rotation=info.rotation,
            skip_bidir=cfg.skip_bidir,
            max_error_s=cfg.max_frame_error_s,
            read_seconds=cfg.limits.read_seconds,
        )
    with timer("detect"):
        try:
            track = track_face(frames, detector, cfg.smooth_window)
        except ValueError as e:
            raise VideoError("no_face", f"{path}: {e}") from e
    with timer("crop"):
        crops = crop_track(frames, track, cfg.face_size, cfg.face_margin)  # (N, S, S, 3)

    clips: list[Clip] = []
    T = cfg.frames_per_clip
    error = np.abs(got - np.asarray(sorted(times)))
    for k, start in enumerate(starts):
        sl = slice(k * T, (k + 1) * T)
        if error[sl].max() > max(cfg.max_frame_error_s, 1.0 / max(info.fps, 1.0)) * 1.5:
            continue  # the stream ended early (truncated): this clip's frames are not where they should be
        det = track.detected[sl]
        if det.mean() < cfg.min_face_frac:
            continue
        clips.append(
            Clip(
                index=k,
                start_s=start,
                frames=crops[sl],
                mel=mel_window(mel, start, cfg.mel_frames, cfg.mel.hop_s, pad_value=SILENCE_LOG_MEL),
                face_box=[float(x) for x in track.boxes[sl].mean(axis=0)],
                det_score=float(track.scores[sl][det].mean()) if det.any() else 0.0,
                detected_frac=float(det.mean()),
            )
        )
    if not clips:
        if error.max() > 1.0:
            raise VideoError("truncated", f"{path}: stream ends before the container's duration ({info.duration:.1f}s)")
        raise VideoError(
            "no_face",
            f"{path}: face found in {track.detected.mean():.0%} of sampled frames; no clip reaches min_face_frac={cfg.min_face_frac}",
        )
    return Preprocessed(info=info, clips=clips, stage_seconds=timer.seconds, face_frac=float(track.detected.mean()))


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.perf_counter() - self.t

        return _Ctx()
