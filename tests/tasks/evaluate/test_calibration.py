import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import log_loss

from tasks.evaluate import calibration as C


def _overconfident(n: int = 4000, factor: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), logits reported as factor * z: over-confident by ``factor``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < C.sigmoid(z)).astype(float)
    return y, factor * z


def test_nll_matches_sklearns_log_loss():
    y, z = _overconfident(500)
    platt = C.Platt(0.5, 0.3)
    assert C.nll(y, z, platt) == pytest.approx(log_loss(y, platt(z)), rel=1e-6)


def test_fitted_platt_undoes_over_and_under_confidence_and_lowers_nll_and_ece():
    for factor in (4.0, 0.3):
        y, z = _overconfident(factor=factor)
        platt = C.fit_platt(y, z)
        assert 1 / platt.slope == pytest.approx(factor, rel=0.15) and abs(platt.intercept) < 0.15
        assert C.nll(y, z, platt) < C.nll(y, z) - 0.02
        assert C.expected_calibration_error(y, platt(z)) < 0.5 * C.expected_calibration_error(y, C.sigmoid(z))


def test_an_uninformative_model_trained_at_41_percent_fake_scores_the_val_prior_after_calibration():
    """Temperature scaling cannot move the base rate: on an 85 % FAKE val a model that learned only
    its 41 % training prior kept a log loss near 0.69; the intercept brings it to the prior's."""
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.85).astype(float)
    z = C.to_logits(0.41) + rng.normal(0, 0.3, y.size)  # noise, no signal
    q = y.mean()
    prior = -(q * np.log(q) + (1 - q) * np.log(1 - q))  # the val prior's own log loss, ~0.42
    platt = C.fit_platt(y, z)
    assert C.nll(y, z, platt) == pytest.approx(prior, abs=0.005) and platt.intercept > 1
    best_temperature = min(C.nll(y, z, C.Platt(1 / t)) for t in np.geomspace(*C.SLOPE_RANGE, 400))
    assert best_temperature > prior + 0.1  # no temperature gets there
    constant = np.full(y.size, C.to_logits(0.41))  # exactly constant logits: the intercept alone carries it
    assert C.nll(y, constant, C.fit_platt(y, constant)) == pytest.approx(prior, abs=0.005)


def test_a_tiny_or_one_class_val_falls_back_to_the_identity_with_a_reason():
    platt, why = C.choose_platt([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4])
    assert platt.identity and "one class only (4 clips, 4 FAKE)" in why
    platt, why = C.choose_platt([0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4])
    assert platt.identity and f"fewer than {C.MIN_PER_CLASS} clips of a class" in why
    platt, why = C.choose_platt([0, 1, 0, 1], [-9.0, 9.0, -8.0, 8.0])  # separable: finite, bounded
    assert why is None and C.SLOPE_RANGE[0] <= platt.slope <= C.SLOPE_RANGE[1] and np.isfinite(platt.intercept)
    for y, z in (([0, 1, 0, 1], [-9.0, 9.0, -8.0, 8.0]), ([0, 0, 1, 1, 1, 0], [-3.0, -2.0, 2.5, 4.0, 0.5, 1.0])):
        assert C.nll(y, z, C.fit_platt(y, z)) <= C.nll(y, z)  # never worse than the raw logits on its own data
    assert C.choose_platt([0, 1, 0, 1], [0.0] * 4, enabled=False)[0].identity


def test_identity_keeps_p_and_a_temperature_is_a_slope():
    y, z = _overconfident(200)
    p = C.sigmoid(z)
    np.testing.assert_allclose(C.Platt()(z), p)
    np.testing.assert_allclose(C.Platt()(C.to_logits(p)), p, rtol=1e-6)
    np.testing.assert_allclose(C.Platt(1 / 3.0)(z), C.sigmoid(z / 3.0))
    assert (np.argsort(C.Platt(0.3, 2.0)(z)) == np.argsort(p)).all()


def test_cross_fit_scores_each_half_with_the_map_of_the_other():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(100), 4)  # (400,): four clips per group
    z = rng.normal(0, 1.5, groups.size)
    y = (rng.random(groups.size) < C.sigmoid(z)).astype(np.int64)
    cf = C.cross_fit(y, 3 * z, groups, seed=0)
    half = C.halves(groups, y, seed=0)
    assert all(len(set(half[groups == g])) == 1 for g in range(100)) and half.sum() == 200  # groups kept whole
    assert abs(y[half == 0].mean() - y[half == 1].mean()) < 0.03  # stratified: both halves near val's base rate
    for h in (0, 1):
        other = half != h
        np.testing.assert_allclose(cf.p[half == h], C.fit_platt(y[other], 3 * z[other])(3 * z[half == h]))
        assert np.all(cf.prior[half == h] == pytest.approx((y[other].sum() + 1) / (other.sum() + 2)))
    assert cf.reasons == (None, None) and C.nll(y, C.to_logits(cf.p)) < C.nll(y, 3 * z)


def test_ece_values():
    assert C.expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0
    assert C.expected_calibration_error([1, 1], [0.0, 0.0]) == 1.0
    assert C.expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0  # p = 1 lands in the last bin
    conf, frac, count = C.reliability_bins([0, 1, 1], [0.05, 0.95, 0.9], n_bins=10)
    assert count.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2] and np.isnan(conf[1])
    assert frac[9] == 1.0 and conf[9] == pytest.approx(0.925)


def test_fit_rejects_empty_input():
    with pytest.raises(ValueError, match="non-empty"):
        C.fit_platt([], [])


def test_reliability_diagram_is_a_png(tmp_path):
    y, z = _overconfident(300)
    path = C.plot_reliability(y, {"uncalibrated": C.sigmoid(z), "calibrated": C.fit_platt(y, z)(z)},
                              tmp_path / "plots" / "reliability.png")  # fmt: skip
    img = imread(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and img.shape[0] > 100 and img.shape[1] > 100
