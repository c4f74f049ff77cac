"""16 kHz mono audio with PyAV, log-mel features with torchaudio.

``torchaudio.load`` now needs torchcodec, so decoding stays in PyAV (already our video
decoder) and torchaudio only computes the mel filterbank.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import av
import numpy as np
import torch
import torchaudio

from tasks.ingest.video import VideoError


SILENCE_LOG_MEL = float(np.log(np.finfo(np.float32).eps))  # Kaldi's floor: log-mel of silence


@dataclass(frozen=True)
class MelSpec:
    """The log-mel settings. Their defaults live once, in :class:`tasks.ingest.config.PreprocessConfig`
    (:func:`default_mel` is its ``.mel``): the model's audio normalisation holds for those."""

    sample_rate: int
    n_mels: int
    win_ms: float
    hop_ms: float

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate


def decode_audio(
    path: str, sample_rate: int = 16000, max_seconds: float = 60.0, start_time: float | None = None
) -> np.ndarray:
    """The first audio stream as (n,) float32 mono at sample_rate; raises VideoError.

    With ``start_time`` (seconds, the video stream's start: ``VideoInfo.start_time``), sample 0
    is the sound at the video's t=0: audio that starts later is preceded by silence, audio that
    starts earlier is trimmed. Reasons: 'no_audio' (no stream), 'undecodable' (a stream that
    gives no samples, e.g. chunk offsets past the end of the file).
    """
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError("undecodable", f"{path}: cannot open ({e})") from e
    with container as c:
        if not c.streams.audio:
            raise VideoError("no_audio", f"{path}: no audio stream")
        stream = c.streams.audio[0]
        index = stream.index  # read while the container is open: after it closes the stream's fields are freed
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        limit = int(max_seconds * sample_rate)
        got = 0
        first_time: float | None = None
        try:
            for frame in c.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    got += chunks[-1].size
                if got >= limit:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            if not chunks:
                raise VideoError("undecodable", f"{path}: audio stream does not decode ({e})") from e
    if not chunks:
        raise VideoError("undecodable", f"{path}: audio stream #{index} gives no samples (damaged or cut off)")
    wave = np.concatenate(chunks)
    if start_time is not None and first_time is not None:
        wave = _align(wave, int(round((first_time - start_time) * sample_rate)))
    return wave[:limit].astype(np.float32)


def _align(wave: np.ndarray, offset: int) -> np.ndarray:
    """Shift (n,) wave by offset samples: > 0 prepends silence, < 0 drops leading samples."""
    if offset > 0:
        return np.concatenate([np.zeros(offset, wave.dtype), wave])
    return wave[-offset:]


@cache
def default_mel() -> MelSpec:
    """Ingest's default log-mel settings (``PreprocessConfig().mel``)."""
    from tasks.ingest.config import PreprocessConfig  # imports this module's MelSpec lazily: no cycle at import

    return PreprocessConfig().mel


def log_mel(wave: np.ndarray, spec: MelSpec | None = None) -> np.ndarray:
    """(n,) float32 wave -> (F, Tm) float32 log-mel, F = n_mels, Tm = 1 + (n - win) // hop; ``spec``: by
    default :func:`default_mel`.

    Kaldi-compatible fbank, as AudioMAE (AVFF's audio branch) computes it: frame i covers
    samples [i*hop, i*hop + win), so mel frame i <-> time i * hop_s.
    """
    spec = spec or default_mel()
    if wave.size < spec.win:
        wave = np.pad(wave, (0, spec.win - wave.size))
    with torch.no_grad(), torch_threads(1):
        fbank = torchaudio.compliance.kaldi.fbank(
            torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None],  # (1, n)
            sample_frequency=spec.sample_rate,
            num_mel_bins=spec.n_mels,
            frame_length=spec.win_ms,
            frame_shift=spec.hop_ms,
            htk_compat=True,
            use_energy=False,
            window_type="hanning",
            dither=0.0,
        )  # (Tm, F)
    return fbank.T.contiguous().numpy()  # (F, Tm)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch's intra-op threads set to ``n``, then restore them.

    Why one thread for the mel: a video's fbank is a few small ops (~1,000 frames of 400
    samples), and torch's thread pool spins more CPU than it saves. On the 4 DFDC clips log_mel
    cost 0.07-0.12 CPU-s per video with 2 threads and 0.007 with one, the same bits
    (docs/performance.md, "Mel"; tests/tasks/ingest/test_audio_threads.py). Ingest runs one video
    per core anyway. torch's setting is process-wide: not for a block other threads share.
    """
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resample_columns(mel: np.ndarray, n: int) -> np.ndarray:
    """(F, m) -> (F, n): linear interpolation in time between column centres, the span kept (column j of
    the result sits at (j + 1/2) / n of it); the same array when m == n."""
    m = mel.shape[1]
    if m == n:
        return mel
    x = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1)  # (n,) source positions, in columns
    lo = np.floor(x).astype(int)
    hi, w = np.minimum(lo + 1, m - 1), (x - lo).astype(mel.dtype)
    return mel[:, lo] * (1 - w) + mel[:, hi] * w  # (F, n)


def mel_window(mel: np.ndarray, start_s: float, frames: int, hop_s: float, pad_value: float) -> np.ndarray:
    """The (F, frames) slice of mel starting at start_s; padded with pad_value past the end."""
    start = int(round(start_s / hop_s))
    window = mel[:, start : start + frames]
    if window.shape[1] < frames:
        pad = np.full((mel.shape[0], frames - window.shape[1]), pad_value, dtype=mel.dtype)
        window = np.concatenate([window, pad], axis=1)  # (F, frames)
    return window
