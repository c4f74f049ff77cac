"""The model's input contract: a decoded clip -> the tensors :class:`~avff_model.AVFF` takes.

Training (the loader, :mod:`tasks.train.data`) and serving (:mod:`tasks.serve.predict`) both
turn clips into inputs here, so the two cannot drift apart:

    frames (T, H, W, 3) uint8   -> [resized to the model's img_size] -> video (3, T, H, W) float32,
                                   ImageNet-normalised
    mel    (F, Tm) log-mel      -> audio (1, F, Tm) float32, (mel - AUDIO_MEAN) / (2 * AUDIO_STD)

A clip is anything shaped like ``storage.shard_schema.DecodedClip`` (``frames``, ``mel`` and a
``meta`` with ``target``, ``video_id``, ``clip``, ``face``, ``mouth_box``, ``lip_shape``); this module imports nothing from
the project outside ``avff_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from avff_model.crop_geometry import mouth_fractions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


MEL_FIELDS = ("sample_rate", "n_mels", "win_ms", "hop_ms")  # the log-mel settings statistics hold for


@dataclass(frozen=True)
class MelStats:
    """Mean and std of log-mel values, and the features they were measured on: Kaldi fbank
    (``torchaudio.compliance.kaldi.fbank``, Hann window, no dither) of a waveform in [-1, 1]."""

    mean: float
    std: float
    sample_rate: int
    n_mels: int
    win_ms: float
    hop_ms: float

    def holds_for(self, spec) -> bool:
        """Whether ``spec`` (sample_rate, n_mels, win_ms, hop_ms: ``tasks.ingest.audio.MelSpec``) makes those features."""
        return all(getattr(spec, k) == getattr(self, k) for k in MEL_FIELDS)


# AudioSet statistics of Kaldi fbanks, normalised as AST/AudioMAE do: (x - mean) / (2 * std). Ingest's
# default MelSpec (tasks.ingest.audio.log_mel) makes these features; tests/avff_model/test_inputs.py checks
# both that and what the normalisation does to real speech.
AUDIOSET_FBANK = MelStats(mean=-4.2677393, std=4.5689974, sample_rate=16000, n_mels=128, win_ms=25.0, hop_ms=10.0)
AUDIO_MEAN, AUDIO_STD = AUDIOSET_FBANK.mean, AUDIOSET_FBANK.std


def mel_stats_for(preprocess: dict | None, where: str) -> MelStats:
    """The statistics that normalise the log-mels of shards ingested with ``preprocess`` (the ``preprocess``
    block of their ingest_config.json; None: not recorded, taken as ingest's defaults). Raises, naming
    ``where``, when the shards' mel settings are not the ones the statistics were measured on: their audio
    would reach the model off scale."""
    if preprocess is None:
        return AUDIOSET_FBANK
    theirs = {k: preprocess.get(k, getattr(AUDIOSET_FBANK, k)) for k in MEL_FIELDS}
    if not AUDIOSET_FBANK.holds_for(SimpleNamespace(**theirs)):
        ours = {k: getattr(AUDIOSET_FBANK, k) for k in MEL_FIELDS}
        diff = ", ".join(f"{k}={theirs[k]} (not {ours[k]})" for k in MEL_FIELDS if theirs[k] != ours[k])
        raise ValueError(f"{where}: its log-mels were made with {diff}; the model's audio normalisation "
                         f"(AUDIO_MEAN / AUDIO_STD) was measured on {ours}: re-ingest with the default mel settings")  # fmt: skip
    return AUDIOSET_FBANK


# (video (3, T, H, W) in [0, 1], raw log-mel (F, Tm), mouth box (4,) fractions) -> the same, transformed
# (training's augmentation: a flip moves the mouth box too)
Transform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8, antialiased bilinear; the same tensor if already that size.

    A face crop ingested larger than the model's image size (224 px shards, the 112 px ``laptop``
    preset) is shrunk once per clip, in uint8, before any float work.
    """
    if frames.shape[1:3] == (size, size):
        return frames
    chw = frames.permute(0, 3, 1, 2)  # (T, 3, H, W), a channels-last view: uint8 interpolation's fast path
    out = F.interpolate(chw, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.permute(0, 2, 3, 1).contiguous()  # (T, size, size, 3)


def clip_to_tensors(
    clip, audio_mean: float = AUDIO_MEAN, audio_std: float = AUDIO_STD, img_size: int | None = None,
    transform: Transform | None = None,
) -> dict:  # fmt: skip
    """A decoded clip -> one sample of model inputs (see the module docstring).

    ``img_size``: the model's frame size; frames of another size are resized to it (:func:`resize_frames`).
    ``transform`` runs before normalisation, on frames in [0, 1], the raw log-mel and the mouth box.
    Returns ``{"video": (3, T, H, W), "audio": (1, F, Tm), "target": float, "video_id": str, "clip": int,
    "face": int, "mouth": (4,), "lips": (T, 2)}``; ``mouth`` is the clip's mouth box as (top, bottom, left,
    right) fractions of its crop (its stored box, or the template's: :mod:`avff_model.crop_geometry`);
    ``lips`` its mouth's opening and width per frame (:func:`clip_lips`).
    """
    frames = torch.from_numpy(clip.frames)  # (T, H, W, 3) uint8
    mouth = torch.tensor(mouth_fractions(clip.meta.mouth_box, frames.shape[1]), dtype=torch.float32)  # (4,)
    if img_size is not None:
        frames = resize_frames(frames, img_size)  # (T, img_size, img_size, 3)
    video = frames.permute(3, 0, 1, 2).float().div_(255.0)  # (3, T, H, W)
    mel = torch.from_numpy(clip.mel.astype(np.float32))  # (F, Tm)
    if transform is not None:
        video, mel, mouth = transform(video, mel, mouth)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    video = (video - mean) / std
    audio = ((mel - audio_mean) / (2.0 * audio_std)).unsqueeze(0)  # (1, F, Tm)
    return {
        "video": video,
        "audio": audio,
        "target": float(clip.meta.target),
        "video_id": clip.meta.video_id,
        "clip": int(clip.meta.clip),
        "face": int(clip.meta.face),
        "mouth": mouth,
        "lips": clip_lips(clip),
    }


def mel_band(n_mels: int, lo_hz: float, hi_hz: float, sample_rate: int = 16000, low_hz: float = 20.0) -> np.ndarray:
    """(F,) bool: the mel bins whose centre lies in [lo_hz, hi_hz], for the Kaldi fbank ingest computes
    (tasks/ingest/audio.log_mel: HTK mel scale, bins evenly spaced in mel from ``low_hz`` to Nyquist)."""
    mel = lambda f: 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)  # noqa: E731
    lo, hi = mel(low_hz), mel(sample_rate / 2)
    centres = 700.0 * np.expm1((lo + (np.arange(n_mels) + 1) * (hi - lo) / (n_mels + 1)) / 1127.0)  # (F,) Hz
    return (centres >= lo_hz) & (centres <= hi_hz)


def clip_lips(clip) -> torch.Tensor:
    """A clip's lips: its (K, 2) lip track at 25 fps over its span where ingest made one
    (``meta.lip_track``), else its (T, 2) mouth opening and width per frame from its landmarks
    (``meta.lip_shape``); zeros (T, 2) for a clip without landmarks (box crops, older shards), which
    the sync branch reads as no lip motion (:class:`avff_model.signals.SyncBranch`)."""
    track = getattr(clip.meta, "lip_track", None)
    if track is not None:
        return torch.tensor(track, dtype=torch.float32)  # (K, 2)
    shape = getattr(clip.meta, "lip_shape", None)
    if shape is None:
        return torch.zeros(clip.frames.shape[0], 2)
    return torch.tensor(shape, dtype=torch.float32)  # (T, 2)
