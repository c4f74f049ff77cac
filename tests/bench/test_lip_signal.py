"""bench/lip_signal.py: which mouth signal follows the sound, on a real talking face and on series built to show it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import lip_signal as L

REALAV = Path(__file__).resolve().parents[3] / "shared" / "data" / "realav"


def _series(loud: np.ndarray, noise: np.ndarray) -> dict[str, np.ndarray]:
    """Mouth signals of a face whose lips part and narrow with ``loud``; its pixels only carry noise."""
    shape = np.stack([0.1 + 0.2 * loud, 1.2 - 0.1 * loud], axis=1)  # (N, 2)
    return {"dark": noise, "op": shape[:, 0], "shape": shape}


def test_the_lips_correlate_with_their_own_sound_in_every_sampling_and_the_table_pairs_sources():
    rng = np.random.default_rng(0)
    n = 250  # 10 s at 25 fps
    own, other = rng.random(n), rng.random(n)
    sig = _series(own, rng.random(n))
    real, fake = L.correlations(sig, own, 25.0), L.correlations(sig, other, 25.0)
    for key in ("op / 3 clips 5 fps", "op-wid / 10 s 5 fps", "op-wid / 10 s native"):
        assert real[key] > 0.99 and abs(fake[key]) < 0.5, key
    assert abs(real["dark / 10 s native"]) < 0.3, "pixels that do not follow the sound do not correlate"
    rows = [{"source": f"s{i}", "kind": k, **(real if k == "control" else fake)} for i in range(3)
            for k in ("control", "shift", "swap")]  # fmt: skip
    table = L.auc_table(rows)
    assert table["op-wid / 10 s native"] == {"shift": 1.0, "swap": 1.0, "pairs": 3}


def test_a_real_talking_face_gives_its_lip_shape_on_most_frames():
    clips = sorted(REALAV.glob("*/*.mp4")) if REALAV.is_dir() else []
    if not clips:
        pytest.skip(f"{REALAV} is absent (real footage lives in ../shared/data/realav)")
    frames, times = L.frames_of(str(clips[0]))
    assert len(frames) >= 20 and np.all(np.diff(times) > 0)
    from tasks.ingest.landmarks import LandmarkFaceDetector

    with LandmarkFaceDetector() as det:
        sig = L.mouth_signals(frames[:50], det)
    assert sig is not None and np.isfinite(sig["shape"]).all(1).mean() > 0.8
    ok = np.isfinite(sig["op"])
    assert (sig["op"][ok] < sig["shape"][ok, 1]).all(), "the lips' gap is narrower than the mouth"


def test_the_lip_track_measures_peak_with_their_own_sound_and_not_with_it_moved():
    """Lips at 25 fps over 10 s and a 1 kHz voice whose loudness follows their opening: in the 3 clips'
    spans the opening correlates with its own sound at lag 0 and peaks there (the hand-made sync peak,
    > 0); the same voice 0.6 s later peaks away from lag 0 (< 0)."""
    rng = np.random.default_rng(1)
    times = np.arange(250) / 25.0
    opening = np.convolve(rng.random(254), np.ones(5) / 5, mode="valid")  # (250,) speech-like, ~0.1 s smooth
    shape = np.stack([0.05 + 0.2 * opening, 1.2 - 0.1 * opening], axis=1)  # (250, 2)
    t = np.arange(int(10.0 * L.RATE)) / L.RATE
    voice = (np.interp(t, times, opening) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    moved = np.concatenate([np.zeros(int(0.6 * L.RATE), np.float32), voice])[: voice.size]
    own, late = L.track_measures(shape, times, voice), L.track_measures(shape, times, moved)
    assert own["op-wid / 3 clips 25 fps"] > 0.8 > 0.3 > late["op-wid / 3 clips 25 fps"]
    assert own["op-wid peak / 3 clips 25 fps"] > 0.3 and late["op-wid peak / 3 clips 25 fps"] < 0
