"""log_mel runs torch on one thread (issue 26: the pool spun more CPU than the mel costs), and that
changes no bit: the reference is the same Kaldi fbank computed the obvious way, with several threads,
on the real clips in ../shared/data (skipped when absent) and on generated noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from tasks.ingest.audio import MelSpec, decode_audio, default_mel, log_mel, torch_threads

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
REAL_CLIPS = sorted(SHARED.glob("dfdc_sample/*.mp4"))


def reference_mel(wave: np.ndarray, spec: MelSpec, threads: int) -> np.ndarray:
    """(n,) wave -> (F, Tm) log-mel as log_mel computed it before, with ``threads`` intra-op threads."""
    with torch.no_grad(), torch_threads(threads):
        fbank = torchaudio.compliance.kaldi.fbank(
            torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None],  # (1, n)
            sample_frequency=spec.sample_rate, num_mel_bins=spec.n_mels, frame_length=spec.win_ms,
            frame_shift=spec.hop_ms, htk_compat=True, use_energy=False, window_type="hanning", dither=0.0,
        )  # fmt: skip  # (Tm, F)
    return fbank.T.contiguous().numpy()


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(before + 1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", [2, 4])
def test_log_mel_on_one_thread_equals_the_multithreaded_fbank_on_noise(threads):
    wave = np.random.default_rng(0).standard_normal(16000 * 10).astype(np.float32) * 0.1  # (n,) 10 s
    spec = default_mel()
    assert np.array_equal(log_mel(wave, spec), reference_mel(wave, spec, threads))


@pytest.mark.skipif(not REAL_CLIPS, reason="no real clips in ../shared/data")
@pytest.mark.parametrize("clip", REAL_CLIPS, ids=lambda p: p.stem)
def test_log_mel_on_one_thread_equals_the_multithreaded_fbank_on_real_clips(clip):
    wave = decode_audio(str(clip), 16000)
    spec = default_mel()
    assert np.array_equal(log_mel(wave, spec), reference_mel(wave, spec, 2))
    assert torch.get_num_threads() == 1  # conftest's setting, restored
