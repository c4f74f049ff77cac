"""Score videos with a trained AVFF: the ingest preprocessing, the shard round trip, the model.

Train/serve parity by construction: each clip goes through ``preprocess_video`` (ingest's
code path, with the PreprocessConfig the model was trained on), then through the shard
encoding and decoding (``encode_sample`` -> ``decode_sample``: the same JPEG and float16 the
training data went through), then ``clip_to_tensors`` (the model's input contract, :mod:`avff_model.inputs`, the one the
training loader applies).
"""

from __future__ import annotations

import base64
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from storage.shard_schema import REAL, ClipMeta, DecodedClip, decode_sample, encode_jpeg, encode_sample
from tasks.ingest.faces import FaceDetector
from tasks.ingest.preprocess import PreprocessConfig, preprocess_video
from tasks.ingest.video import VideoError
from tasks.serve.decision import verdict


@dataclass
class VideoScore:
    video: str
    p_fake: float | None  # max over its faces of each face's mean clip probability; None when not scored
    clips: int
    face_frac: float
    clip_p_fake: list[float]
    reason: str | None = None  # stable code (no_face, no_audio, ...) when not scored
    error: str | None = None
    face_p_fake: list[float] = field(default_factory=list)  # (faces,) each face's mean clip probability
    clip_face: list[int] = field(default_factory=list)  # (clips,) which face each clip shows
    clip_start_s: list[float] = field(default_factory=list)  # where each scored clip starts in the video
    faces: list[str] = field(default_factory=list)  # per clip, the face the model saw (middle frame), base64 JPEG


def video_p_fake(p: np.ndarray, faces: np.ndarray) -> tuple[float, list[float]]:
    """Clip probabilities (N,) and their faces (N,) -> (the video's P(FAKE), each face's).

    A face's P(FAKE) is the mean over its clips; the video's is the max over its faces: a video
    is as fake as its most fake face (one swapped face among real ones makes a FAKE).
    """
    per_face = [float(np.mean(p[faces == f])) for f in np.unique(faces)]
    return max(per_face), per_face


def face_jpeg_b64(frames: np.ndarray) -> str:
    """A clip's face crops (T, H, W, 3) uint8 -> its middle frame as a base64 JPEG (what the page shows)."""
    return base64.b64encode(encode_jpeg(frames[len(frames) // 2], quality=85)).decode("ascii")


def decoded_clips(path: str, pre: PreprocessConfig, detector: FaceDetector, jpeg_quality: int = 90):
    """A video -> (its clips as training reads them from a shard, face_frac): the ingest
    preprocessing and the shard encode/decode round trip (JPEG frames included)."""
    result = preprocess_video(path, pre, detector)
    clips = []
    for clip in result.clips:
        meta = ClipMeta(
            video_id="predict", clip=clip.index, label=REAL, split="test", group="predict", original=None,
            start_s=clip.start_s, fps=clip.fps, num_frames=pre.frames_per_clip, face_box=clip.face_box,
            det_score=clip.det_score, detected_frac=clip.detected_frac, mel_hop_s=pre.mel.hop_s,
            frame_times=clip.frame_times, mel_start_s=clip.mel_start_s, face=clip.face,
            crop=clip.crop, mouth_box=clip.mouth_box, landmark_frac=clip.landmark_frac, lip_shape=clip.lip_shape,
            lip_track=clip.lip_track,
        )  # fmt: skip
        clips.append(decode_sample(encode_sample(clip.frames, clip.mel, meta, jpeg_quality)))
    return clips, result.face_frac


def model_inputs(clips, img_size: int | None = None) -> dict:
    """Decoded clips -> the model's inputs for them, stacked as the loader batches them, keyed by
    :meth:`tasks.serve.scorer.Scorer.predict_proba`'s argument names (``predict_proba(**inputs)``):

    ``video`` (N, 3, T, H, W) and ``audio`` (N, 1, F, Tm) float tensors (frames resized to ``img_size``,
    the model's, where the preprocessing crops another size); ``mouth`` (N, 4) each clip's mouth box as
    (top, bottom, left, right) fractions and ``lips`` (N, T, 2) its mouth's opening and width per frame
    (zeros without landmarks), as :func:`avff_model.inputs.clip_to_tensors` makes them for training.
    """
    import torch

    from avff_model.inputs import clip_to_tensors

    samples = [clip_to_tensors(c, img_size=img_size) for c in clips]
    return {k: torch.stack([s[k] for s in samples]) for k in ("video", "audio", "mouth", "lips")}


def clip_inputs(path: str, pre: PreprocessConfig, detector: FaceDetector, jpeg_quality: int = 90,
                img_size: int | None = None) -> tuple[dict, float]:  # fmt: skip
    """A video -> (its :func:`model_inputs`, face_frac), exactly as training sees its clips."""
    clips, face_frac = decoded_clips(path, pre, detector, jpeg_quality)
    return model_inputs(clips, img_size), face_frac


def score_video(path: str, scorer, pre: PreprocessConfig, detector: FaceDetector, faces: bool = False,
                on_clips: Callable[[list[DecodedClip]], None] | None = None) -> VideoScore:  # fmt: skip
    """P(FAKE) of one video (:func:`video_p_fake`: max over faces of the mean over clips), or the
    reason it cannot be scored; with ``faces``, each clip's face crop as the model saw it (after the
    shard JPEG round trip). ``on_clips`` is handed the decoded clips the model scores (evaluate measures
    the hand-made statistics on them: one decode for both).

    Never raises for one bad video: a missing path, a symlink loop, a directory or a decoder
    failure is this video's ``reason``, and the videos after it are still scored.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return VideoScore(path, None, 0, 0.0, [], "unreadable", f"{path}: not a regular file")
        clips, face_frac = decoded_clips(path, pre, detector)
        inputs = model_inputs(clips, img_size=scorer.config.img_size)
    except VideoError as e:
        error = str(e)
        if e.reason == "no_audio" and pre.require_audio:
            error = (f"{path}: no audio stream, and this model was trained on videos with audio; a model trained on "
                     f"shards ingested with --no-require-audio (a silent log-mel) scores such videos")  # fmt: skip
        return VideoScore(path, None, 0, 0.0, [], e.reason, error)
    except FileNotFoundError:
        return VideoScore(path, None, 0, 0.0, [], "missing_file", f"{path}: no such file")
    except OSError as e:  # a symlink loop, no permission, an I/O error
        return VideoScore(path, None, 0, 0.0, [], "unreadable", f"{path}: {e.strerror or e}")
    except Exception as e:  # an unexpected library error: this video's, not the batch's
        return VideoScore(path, None, 0, 0.0, [], "error", f"{path}: {type(e).__name__}: {e}")
    p = scorer.predict_proba(**inputs)
    if on_clips is not None:
        on_clips(clips)
    face_ids = np.array([c.meta.face for c in clips])
    p_video, per_face = video_p_fake(p, face_ids)
    return VideoScore(path, p_video, len(p), face_frac, [float(x) for x in p], face_p_fake=per_face,
                      clip_face=face_ids.tolist(), clip_start_s=[float(c.meta.start_s) for c in clips],
                      faces=[face_jpeg_b64(c.frames) for c in clips] if faces else [])  # fmt: skip


def score_bytes(data: bytes, name: str, scorer, pre: PreprocessConfig, detector: FaceDetector,
                faces: bool = False) -> VideoScore:  # fmt: skip
    """:func:`score_video` of a video held in memory (an upload, a served request), reported under ``name``.

    The bytes go to a private temporary file (the decoder reads files), removed afterwards; a refusal's
    message names ``name``, not that file.
    """
    suffix = os.path.splitext(name)[1][:16] if "." in name else ".bin"
    with tempfile.TemporaryDirectory(prefix="avff-score-") as tmp:
        path = os.path.join(tmp, f"upload{suffix}")
        with open(path, "wb") as f:
            f.write(data)
        s = score_video(path, scorer, pre, detector, faces=faces)
    return VideoScore(**{**asdict(s), "video": name, "error": s.error and s.error.replace(path, name)})


def result(score: VideoScore, threshold: float | None) -> dict:
    """One scored video as the JSON record ``avff predict --json``, the pyfunc and the web page return:
    the score's fields plus its verdict under the model's rule (:func:`tasks.serve.decision.verdict`)."""
    return {**asdict(score), **verdict(score.p_fake, threshold)}


def preprocess_for(scorer) -> PreprocessConfig:
    """The PreprocessConfig a model was trained on; defaults matched to its input shape otherwise."""
    if scorer.preprocess:
        return PreprocessConfig.from_dict(scorer.preprocess)
    cfg = scorer.config
    return PreprocessConfig(face_size=cfg.img_size, frames_per_clip=cfg.num_frames, n_mels=cfg.n_mels)
