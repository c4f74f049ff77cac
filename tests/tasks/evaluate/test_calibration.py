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
    assert C.nll(y, z, 2.0) == pytest.approx(log_loss(y, C.apply_temperature(z, 2.0)), rel=1e-6)


def test_fitted_temperature_undoes_over_and_under_confidence_and_lowers_nll_and_ece():
    for factor in (4.0, 0.3):
        y, z = _overconfident(factor=factor)
        t = C.fit_temperature(y, z)
        assert t == pytest.approx(factor, rel=0.15)
        raw, cal = C.apply_temperature(z, 1.0), C.apply_temperature(z, t)
        assert C.nll(y, z, t) < C.nll(y, z) - 0.02
        assert C.expected_calibration_error(y, cal) < 0.5 * C.expected_calibration_error(y, raw)


def test_temperature_one_is_the_identity_and_keeps_the_ranking():
    y, z = _overconfident(200)
    p = C.sigmoid(z)
    np.testing.assert_allclose(C.apply_temperature(z, 1.0), p)
    np.testing.assert_allclose(C.apply_temperature(C.to_logits(p), 1.0), p, rtol=1e-6)
    assert (np.argsort(C.apply_temperature(z, 3.0)) == np.argsort(p)).all()


def test_ece_values():
    assert C.expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0
    assert C.expected_calibration_error([1, 1], [0.0, 0.0]) == 1.0
    assert C.expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0  # p = 1 lands in the last bin
    conf, frac, count = C.reliability_bins([0, 1, 1], [0.05, 0.95, 0.9], n_bins=10)
    assert count.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2] and np.isnan(conf[1])
    assert frac[9] == 1.0 and conf[9] == pytest.approx(0.925)


def test_fit_rejects_empty_input():
    with pytest.raises(ValueError, match="non-empty"):
        C.fit_temperature([], [])


def test_reliability_diagram_is_a_png(tmp_path):
    y, z = _overconfident(300)
    t = C.fit_temperature(y, z)
    path = C.plot_reliability(y, {"raw": C.sigmoid(z), f"T = {t:.2f}": C.apply_temperature(z, t)},
                              tmp_path / "plots" / "reliability.png")  # fmt: skip
    img = imread(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and img.shape[0] > 100 and img.shape[1] > 100
