"""Model-level shortcut probes: how a trained model's score moves under label-preserving edits.

A detector that keys on lip sync must move when a REAL clip's audio is shifted against the
video (±0.2/0.5/1 s); one that keys on leading silence or on the encoder must move when
silence is added or cut, or when the file is re-encoded at another quality. Each probe writes
an edited copy of the video (PyAV, streaming: frames are never all in memory) and scores it
with the same ``score`` function as the original.

``score``: any ``path -> P(FAKE) or None`` (e.g. ``tasks.serve.predict.score_video`` bound to a
scorer, its preprocessing and a face detector).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tasks.ingest.audio import decode_audio
from tasks.media.video_writer import write_video

PROBE_RATE = 16000  # the edited copies' sound: the rate ingest and `avff predict` resample every track to
MAX_PROBE_S = 3600.0  # the sound read from a source (the model reads at most its first minute)

SHIFTS_S = (-1.0, -0.5, -0.2, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class Edit:
    """One probe: audio shifted by ``shift_s`` (> 0: later), the first ``zero_s`` seconds of audio
    silenced, the first ``cut_s`` seconds of both streams cut, video re-encoded at ``crf``."""

    name: str
    shift_s: float = 0.0
    zero_s: float = 0.0
    cut_s: float = 0.0
    crf: int = 23


@dataclass(frozen=True)
class ProbeResult:
    probe: str
    p_fake: float | None
    delta: float | None  # p_fake(edited) - p_fake(re-encoded control); None if either is unscored


def default_edits(shifts: Sequence[float] = SHIFTS_S, silence_s: float = 0.5, crf_low: int = 35) -> list[Edit]:
    """The control (re-encoded as-is), the audio shifts, silence added and cut, a low-quality re-encode."""
    return [
        Edit("control"),
        *(Edit(f"audio_shift_{s:+g}s", shift_s=s) for s in shifts),
        Edit(f"silence_added_{silence_s:g}s", zero_s=silence_s),
        Edit("leading_silence_cut", cut_s=-1.0),  # -1: cut the measured leading silence
        Edit(f"reencoded_crf{crf_low}", crf=crf_low),
    ]


def leading_silence_s(audio: np.ndarray, rate: int, threshold_dbfs: float = -50.0) -> float:
    """Seconds before the first 10 ms window whose RMS exceeds ``threshold_dbfs``; audio (n,)."""
    win = max(1, rate // 100)
    n = len(audio) // win
    rms = np.sqrt(np.mean(audio[: n * win].reshape(n, win).astype(np.float64) ** 2, axis=1))  # (n,)
    loud = np.flatnonzero(rms > 10 ** (threshold_dbfs / 20))
    return float(loud[0] * win / rate) if len(loud) else float(len(audio) / rate)


def _edit_audio(audio: np.ndarray, rate: int, edit: Edit, cut_s: float) -> np.ndarray:
    """The edited mono track, same length as the video it will sit under."""
    x = audio[int(round(cut_s * rate)) :].copy()
    k = int(round(abs(edit.shift_s) * rate))
    if edit.shift_s > 0:
        x = np.concatenate([np.zeros(k, x.dtype), x[: len(x) - k]])
    elif edit.shift_s < 0:
        x = np.concatenate([x[k:], np.zeros(min(k, len(x)), x.dtype)])
    x[: int(round(edit.zero_s * rate))] = 0.0
    return x


def write_edit(src: str | Path, dst: str | Path, edit: Edit) -> Path:
    """Write ``src`` with ``edit`` applied to ``dst`` (.mp4, H.264 + AAC mono); returns ``dst``."""
    rate = PROBE_RATE
    audio = decode_audio(str(src), rate, max_seconds=MAX_PROBE_S)  # the project's one audio reader (PyAV)
    cut_s = leading_silence_s(audio, rate) if edit.cut_s < 0 else edit.cut_s
    audio = _edit_audio(audio, rate, edit, cut_s)
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        fps = Fraction(vin.average_rate or 25).limit_denominator(1001)
        h, w = vin.codec_context.height // 2 * 2, vin.codec_context.width // 2 * 2  # yuv420p: even
        frames = (
            f.to_ndarray(format="rgb24")[:h, :w]  # (H, W, 3)
            for f in inp.decode(vin)
            if f.time is None or f.time >= cut_s
        )
        write_video(
            dst,
            frames,
            fps,
            audio,
            rate,
            crf=edit.crf,
            threads=None,
            audio_bitrate=None,
            aac_coder=None,
            trim_audio=True,
        )
    return Path(dst)


def shortcut_probes(
    src: str | Path, score: Callable[[str], float | None], work_dir: str | Path, edits: Sequence[Edit] | None = None
) -> list[ProbeResult]:
    """Score ``src`` under each edit; deltas are against the re-encoded control (first edit), so
    the re-encode itself does not count as a shortcut. Edited copies are written to ``work_dir``."""
    edits = list(edits or default_edits())
    if edits[0].name != "control":
        edits.insert(0, Edit("control"))
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    results, base = [], None
    for edit in edits:
        p = score(str(write_edit(src, work / f"{Path(src).stem}.{edit.name}.mp4", edit)))
        base = p if edit.name == "control" else base
        delta = None if p is None or base is None else p - base
        results.append(ProbeResult(edit.name, p, delta))
    return results
