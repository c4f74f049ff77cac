"""Speech synthesis: pitch in the voice range, a mid-clip pitch jump that leaves the
amplitude envelope (and so the mouth) unchanged, and determinism."""

from __future__ import annotations

import numpy as np

from tasks.synthetic.speech import F0_RANGE, frame_envelope, render_speech, speech_plan

RATE = 16000


def _f0(x: np.ndarray) -> float:
    """Autocorrelation pitch of a voiced stretch, searched over 70-400 Hz."""
    x = x - x.mean()
    ac = np.correlate(x, x, "full")[len(x) - 1 :]
    lo, hi = RATE // 400, RATE // 70
    return RATE / (lo + int(np.argmax(ac[lo:hi])))


def _syllable_f0s(audio: np.ndarray, plan, after: float = 0.0) -> np.ndarray:
    """Pitch at the middle 60 ms of each syllable starting after ``after`` seconds."""
    out = []
    for start, dur, *_ in plan.syllables:
        mid = int((start + dur / 2) * RATE)
        if start > after and mid + 480 < len(audio):
            out.append(_f0(audio[mid - 480 : mid + 480]))
    return np.array(out)


def test_plan_fills_the_clip_with_pitch_in_the_voice_range():
    plan = speech_plan(np.random.default_rng(0), 4.0)
    assert F0_RANGE[0] <= plan.f0_knots.min() and plan.f0_knots.max() <= F0_RANGE[1]
    starts, durs = plan.syllables[:, 0], plan.syllables[:, 1]
    assert starts.min() < 0.5 and (starts + durs).max() > 3.5  # speech throughout
    audio = render_speech(plan, RATE)
    assert audio.dtype == np.float32 and audio.shape == (4 * RATE,) and 0.1 < np.abs(audio).max() <= 1.0
    f0 = _syllable_f0s(audio, plan)
    assert len(f0) >= 8 and np.median(f0) > 85 and np.median(f0) < 230
    env = frame_envelope(audio, RATE, 25, 100)
    assert (env < 0.05 * env.max()).mean() > 0.1  # pauses exist


def test_pitch_change_moves_pitch_after_the_change_only_and_keeps_the_envelope():
    plan = speech_plan(np.random.default_rng(1), 4.0, f0_mean=120.0)
    plain = render_speech(plan, RATE)
    changed = render_speech(plan, RATE, change_at_s=2.0, f0_factor=1.5, formant_factor=1.15)
    start, dur, burst = plan.syllables[:, 0], plan.syllables[:, 1], plan.syllables[:, 6]
    untouched = (start - burst)[start + dur > 2.0].min()  # syllables ending before the change
    assert np.array_equal(plain[: int(untouched * RATE)], changed[: int(untouched * RATE)])
    ratio = np.median(_syllable_f0s(changed, plan, after=2.1) / _syllable_f0s(plain, plan, after=2.1))
    assert abs(ratio - 1.5) < 0.1
    e0, e1 = frame_envelope(plain, RATE, 25, 100), frame_envelope(changed, RATE, 25, 100)
    assert np.corrcoef(e0, e1)[0, 1] > 0.95


def test_same_generator_state_same_audio():
    a = render_speech(speech_plan(np.random.default_rng(5), 1.0), RATE)
    b = render_speech(speech_plan(np.random.default_rng(5), 1.0), RATE)
    c = render_speech(speech_plan(np.random.default_rng(6), 1.0), RATE)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
