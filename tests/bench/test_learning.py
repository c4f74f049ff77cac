"""bench/learning.py: the pooled sync margin's interval carries the variance between stage-1 runs."""

import numpy as np

from bench.learning import pooled_margin


def test_the_pooled_interval_excludes_zero_only_when_every_run_agrees():
    rng = np.random.default_rng(0)
    agree = [rng.normal(1.0, 1.0, 150) for _ in range(3)]  # three runs that all use the audio
    disagree = [rng.normal(m, 1.0, 150) for m in (3.0, -1.0, 1.0)]  # same mean, runs far apart
    a, d = pooled_margin(agree), pooled_margin(disagree)
    assert a["lo"] > 0 and abs(a["margin"] - 1.0) < 0.2
    assert d["lo"] < 0 < d["hi"]  # the clips alone would exclude 0; the runs' spread does not
    assert d["hi"] - d["lo"] > 3 * (a["hi"] - a["lo"])


def test_a_margin_of_noise_is_not_called_positive():
    rng = np.random.default_rng(1)
    m = pooled_margin([rng.normal(0.0, 1.0, 150) for _ in range(3)])
    assert m["lo"] < 0 < m["hi"]
