"""The curriculum's order and pacing, and the progressive-resizing ramp (pure, ms)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.train.curriculum import clip_difficulty, easiest_clips, linear_ramp


def test_the_ramp_rises_linearly_to_one_and_stays():
    values = [linear_ramp(e, start=0.25, epochs=3) for e in range(6)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert linear_ramp(0, start=0.5, epochs=0) == 1.0  # 0 epochs: off
    with pytest.raises(ValueError):
        linear_ramp(0, start=0.0, epochs=3)


def test_difficulty_is_the_clip_bce_of_the_current_model():
    d = clip_difficulty([1, 1, 0, 0], [0.9, 0.2, 0.1, 0.6])
    assert d == pytest.approx([-np.log(0.9), -np.log(0.2), -np.log(0.9), -np.log(0.4)])


def test_the_kept_clips_are_the_easiest_of_each_class_and_grow_with_the_fraction():
    rng = np.random.default_rng(0)
    keys = [(f"v{i:02d}", c) for i in range(30) for c in range(2)]
    y = np.array([i % 3 == 0 for i in range(30) for _ in range(2)], dtype=np.int64)  # 1/3 FAKE
    d = clip_difficulty(y, rng.uniform(0.01, 0.99, len(keys)))
    previous: frozenset = frozenset()
    for fraction in (0.25, 0.5, 0.75, 1.0):
        kept = easiest_clips(keys, y, d, fraction)
        for label in (0, 1):
            mine = [i for i in range(len(keys)) if y[i] == label]
            inside = [d[i] for i in mine if keys[i] in kept]
            outside = [d[i] for i in mine if keys[i] not in kept]
            assert len(inside) == int(np.ceil(fraction * len(mine)))  # the class prior is kept
            assert not outside or max(inside) <= min(outside)  # monotone in difficulty
        assert previous <= kept  # same model, larger fraction: a superset
        previous = kept
    assert kept == frozenset(keys)
    with pytest.raises(ValueError, match="length"):
        easiest_clips(keys[:3], y, d, 0.5)
