"""Speech-like audio from numpy alone, for the synthetic talking-face sample.

Voiced syllables are a glottal pulse train at a slowly varying pitch (90-220 Hz) shaped by
three formant resonances; some syllables open with an unvoiced noise burst; words are
separated by pauses. A :class:`SpeechPlan` fixes the timing, so the same plan can be
rendered again with another pitch and timbre (the ``audio_pitch`` manipulation) while the
amplitude envelope, and hence the mouth, stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

F0_RANGE = (90.0, 220.0)
# (F1, F2, F3) in Hz of a few vowels: a, i, u, e, o, schwa, ae.
_VOWELS = np.array(
    [
        [730, 1090, 2440],
        [270, 2290, 3010],
        [300, 870, 2240],
        [530, 1840, 2480],
        [570, 840, 2410],
        [500, 1500, 2500],
        [660, 1720, 2410],
    ],
    dtype=np.float64,
)
_BANDWIDTHS = (80.0, 100.0, 140.0)
_KNOT_DT = 0.25  # seconds between pitch knots


@dataclass(frozen=True)
class SpeechPlan:
    """Timing and prosody of an utterance; rendering it is deterministic."""

    duration_s: float
    f0_knots: np.ndarray  # (K,) Hz, one every _KNOT_DT seconds
    syllables: np.ndarray  # (S, 7): start_s, dur_s, F1, F2, F3, amplitude, burst_s
    noise_seed: int


def speech_plan(rng: np.random.Generator, duration_s: float, f0_mean: float | None = None) -> SpeechPlan:
    """Draw words of 1-4 syllables separated by pauses, filling ``duration_s``."""
    f0_mean = rng.uniform(100.0, 200.0) if f0_mean is None else f0_mean
    n_knots = int(np.ceil(duration_s / _KNOT_DT)) + 2
    f0 = f0_mean * 2.0 ** rng.normal(0.0, 0.15, n_knots)  # intonation, +-0.15 octave
    syllables, t = [], rng.uniform(0.0, 0.3)
    while t < duration_s:
        for _ in range(rng.integers(1, 5)):
            burst = rng.uniform(0.04, 0.11) if rng.random() < 0.35 else 0.0
            dur = rng.uniform(0.12, 0.28)
            formants = _VOWELS[rng.integers(len(_VOWELS))] * rng.uniform(0.92, 1.08, 3)
            syllables.append([t + burst, dur, *formants, rng.uniform(0.5, 1.0), burst])
            t += burst + dur + rng.uniform(0.02, 0.06)
        t += rng.uniform(0.5, 0.9) if rng.random() < 0.15 else rng.uniform(0.12, 0.45)
    return SpeechPlan(duration_s, np.clip(f0, *F0_RANGE), np.array(syllables), int(rng.integers(2**31)))


def render_speech(
    plan: SpeechPlan,
    rate: int,
    *,
    change_at_s: float | None = None,
    f0_factor: float = 1.0,
    formant_factor: float = 1.0,
) -> np.ndarray:
    """Render ``plan`` to (n,) float32, peak around 0.5.

    From ``change_at_s`` on, pitch is multiplied by ``f0_factor`` (a 40 ms glide) and the
    formants of syllables starting after it by ``formant_factor``; the per-syllable
    loudness is unchanged, so the envelope matches the unchanged rendering.
    """
    n = int(round(plan.duration_s * rate))
    t = np.arange(n) / rate
    f0 = np.interp(t, np.arange(len(plan.f0_knots)) * _KNOT_DT, plan.f0_knots)
    if change_at_s is not None:
        f0 = f0 * (1.0 + (f0_factor - 1.0) * np.clip((t - change_at_s) / 0.04, 0.0, 1.0))
    phase = np.cumsum(f0 / rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # 1 at each glottal closure
    # Glottal flow (double pole) times lip radiation (difference): about -6 dB/octave.
    source = lfilter([1.0, -1.0], [1.0, -1.94, 0.9409], pulses)
    noise = np.random.default_rng(plan.noise_seed).standard_normal(n)
    out = np.zeros(n)
    for start, dur, f1, f2, f3, amp, burst in plan.syllables:
        i0, i1 = int(start * rate), min(n, int((start + dur) * rate))
        if i1 - i0 < 16:
            continue
        scale = formant_factor if change_at_s is not None and start >= change_at_s else 1.0
        seg = source[i0:i1]
        for f, bw in zip((f1, f2, f3), _BANDWIDTHS):
            seg = _resonate(seg, f * scale, bw, rate)
        out[i0:i1] += amp * _unit_rms(seg) * _envelope(i1 - i0, rate, 0.03, 0.06)
        if burst > 0:
            j0 = max(0, i0 - int(burst * rate))
            hiss = _resonate(noise[j0:i0], 4500.0 * scale, 2500.0, rate)
            out[j0:i0] += 0.3 * amp * _unit_rms(hiss) * _envelope(i0 - j0, rate, 0.01, 0.02)
    return (0.15 * out).astype(np.float32)


def frame_envelope(audio: np.ndarray, rate: int, fps: float, n_frames: int) -> np.ndarray:
    """RMS of ``audio`` (n,) in a two-frame window centred on each frame time: (n_frames,)."""
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(audio, np.float64) ** 2)])
    centre = np.arange(n_frames) * rate / fps
    half = rate / fps
    lo = np.clip(np.round(centre - half), 0, len(audio)).astype(int)
    hi = np.clip(np.round(centre + half), 0, len(audio)).astype(int)
    return np.sqrt((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1))


def _resonate(x: np.ndarray, freq: float, bandwidth: float, rate: int) -> np.ndarray:
    """Two-pole resonator (one formant)."""
    r = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * min(freq, 0.45 * rate) / rate
    return lfilter([1.0 - r], [1.0, -2 * r * np.cos(theta), r * r], x)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-9)


def _envelope(n: int, rate: int, attack_s: float, release_s: float) -> np.ndarray:
    a, r = min(n // 2, int(attack_s * rate)), min(n // 2, int(release_s * rate))
    env = np.ones(n)
    env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    env[n - r :] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return env
