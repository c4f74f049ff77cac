"""The model's input contract (avff_model/inputs.py): frames and log-mel -> normalised tensors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avff_model.inputs import (
    AUDIO_MEAN,
    AUDIO_STD,
    AUDIOSET_FBANK,
    IMAGENET_MEAN,
    IMAGENET_STD,
    clip_to_tensors,
    resize_frames,
)

REALAV = Path(__file__).resolve().parents[3] / "shared" / "data" / "realav"


def test_resize_frames_is_antialiased_and_matches_a_float_resize():
    flat = torch.full((2, 32, 32, 3), 77, dtype=torch.uint8)
    assert torch.equal(resize_frames(flat, 16), torch.full((2, 16, 16, 3), 77, dtype=torch.uint8))
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 255).to(torch.uint8)  # (32, 32)
    small = resize_frames(checker[None, :, :, None].expand(1, 32, 32, 3).contiguous(), 16)
    assert small.dtype == torch.uint8 and small.shape == (1, 16, 16, 3)
    assert small.min() >= 100 and small.max() <= 155  # averaged, not aliased to 0 or 255 (point sampling would)
    frames = torch.randint(0, 256, (3, 48, 48, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ref = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).double(), size=(16, 16), mode="bilinear",
                                          antialias=True, align_corners=False)  # fmt: skip
    got = resize_frames(frames, 16).permute(0, 3, 1, 2).double()
    assert (got - ref).abs().max() <= 1.0  # within one grey level of the float computation


def _clip(frames: np.ndarray, mel: np.ndarray):
    meta = SimpleNamespace(target=1, video_id="v", clip=3, face=0, mouth_box=None)
    return SimpleNamespace(frames=frames, mel=mel, meta=meta)


def test_clip_to_tensors_normalises_video_and_audio_and_keeps_the_labels():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 0, 128
    mel = np.full((4, 6), AUDIO_MEAN + 2 * AUDIO_STD, np.float16)
    sample = clip_to_tensors(_clip(frames, mel))
    assert sample["video"].shape == (3, 2, 8, 8) and sample["audio"].shape == (1, 4, 6)
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(sample["video"][:, 0, 0, 0], torch.tensor(expected), atol=1e-6)
    assert torch.allclose(sample["audio"], torch.ones(1, 4, 6), atol=1e-2)  # float16 mel: one mean + 2 std -> 1
    assert (sample["target"], sample["video_id"], sample["clip"]) == (1.0, "v", 3)


def test_clip_to_tensors_resizes_to_the_models_size_and_transforms_before_normalising():
    frames = np.full((2, 16, 16, 3), 200, np.uint8)
    mel = np.zeros((4, 6), np.float32)
    small = clip_to_tensors(_clip(frames, mel), img_size=8)
    assert small["video"].shape == (3, 2, 8, 8)
    black = clip_to_tensors(_clip(frames, mel), transform=lambda v, m, mo: (v * 0, m + AUDIO_MEAN, mo))
    assert torch.allclose(black["video"][:, 0, 0, 0], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))
    assert torch.allclose(black["audio"], torch.zeros(1, 4, 6))


def test_the_audio_statistics_hold_for_the_features_ingest_writes():
    from tasks.ingest.audio import default_mel

    assert AUDIOSET_FBANK.holds_for(default_mel())  # change ingest's default mel, revisit AUDIO_MEAN / AUDIO_STD
    assert (AUDIO_MEAN, AUDIO_STD) == (AUDIOSET_FBANK.mean, AUDIOSET_FBANK.std)
    assert not AUDIOSET_FBANK.holds_for(replace(default_mel(), n_mels=64)) and not AUDIOSET_FBANK.holds_for(
        replace(default_mel(), hop_ms=20.0)
    )


def test_shards_made_with_other_mel_settings_are_refused_naming_them_and_the_setting():
    import dataclasses

    from avff_model.inputs import mel_stats_for
    from tasks.ingest.config import PreprocessConfig

    default = dataclasses.asdict(PreprocessConfig())  # what ingest records in ingest_config.json
    assert mel_stats_for(default, "shards /d") is AUDIOSET_FBANK
    assert mel_stats_for(None, "shards /d") is AUDIOSET_FBANK  # nothing recorded: ingest's defaults
    with pytest.raises(ValueError, match=r"shards /d: its log-mels were made with n_mels=64 \(not 128\)") as err:
        mel_stats_for({**default, "n_mels": 64}, "shards /d")
    assert "\n" not in str(err.value)


def test_the_audio_statistics_put_real_speech_on_the_audioset_scale():
    """Real talking-face clips through ingest's own decode and log-mel, then normalised: about mean 0 and std 0.5
    (AST's target); the same speech at int16 scale, features the statistics do not hold for, lands far off."""
    from tasks.ingest.audio import decode_audio, log_mel

    clips = sorted(REALAV.rglob("*.mp4"))[::20][:6]
    if not clips:
        pytest.skip(f"{REALAV} is absent (real footage lives in ../shared/data/realav)")
    waves = [decode_audio(str(p), 16000, max_seconds=8) for p in clips]
    norm = np.concatenate([log_mel(w).ravel() for w in waves])
    norm = (norm - AUDIO_MEAN) / (2 * AUDIO_STD)
    assert abs(norm.mean()) < 0.6 and 0.3 < norm.std() < 0.8, (norm.mean(), norm.std())
    loud = np.concatenate([log_mel(w * 32768).ravel() for w in waves])
    assert ((loud - AUDIO_MEAN) / (2 * AUDIO_STD)).mean() > 1.0  # 1.9 on these clips


def test_mel_band_picks_the_bins_whose_centre_kaldis_fbank_puts_in_the_band():
    """The speech band the sync peak hears is chosen from the fbank ingest computes (Kaldi's, 20 Hz to
    Nyquist): its bin centres, read from torchaudio's own mel banks, decide the bins."""
    import torchaudio

    from avff_model.inputs import mel_band

    _, centres = torchaudio.compliance.kaldi.get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    centres = centres.flatten()  # (F,) Hz
    want = ((centres >= 500) & (centres <= 2000)).numpy()
    got = mel_band(128, 500.0, 2000.0)
    assert got.dtype == bool and got.sum() > 20 and (got == want).all()


def test_clip_lips_is_the_lip_track_where_the_clip_has_one():
    from types import SimpleNamespace

    from avff_model.inputs import clip_lips

    frames = np.zeros((16, 8, 8, 3), np.uint8)
    shape, track = [[0.1, 1.0]] * 16, [[0.2, 0.9]] * 80
    assert clip_lips(SimpleNamespace(frames=frames, meta=SimpleNamespace(lip_shape=None))).shape == (16, 2)
    assert clip_lips(SimpleNamespace(frames=frames, meta=SimpleNamespace(lip_shape=shape, lip_track=None)))[0, 0] == 0.1
    both = clip_lips(SimpleNamespace(frames=frames, meta=SimpleNamespace(lip_shape=shape, lip_track=track)))
    assert both.shape == (80, 2) and float(both[0, 0]) == pytest.approx(0.2)
