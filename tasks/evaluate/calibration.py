"""Calibration: temperature scaling fitted on validation logits, expected calibration error,
reliability diagrams.

Temperature scaling (Guo et al. 2017) divides every logit by one scalar T > 0 fitted to
minimise the validation log loss: rankings (AUC) are unchanged, over-confident models
(T > 1) are softened and under-confident ones (T < 1, e.g. after class-weighted training)
sharpened. The fit is a golden-section search on log T (the NLL is smooth and unimodal in
log T for one scalar), pure NumPy and deterministic.

Arrays: ``y`` (N,) in {0, 1} with FAKE = 1; ``logits`` (N,) log-odds of FAKE; ``p`` (N,)
P(FAKE). The reliability diagram is built on ``matplotlib.figure.Figure`` and rendered by Agg
(as :mod:`tasks.evaluate.plots`), never through pyplot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tasks.evaluate.plots import DPI

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before taking log-odds or logs
T_RANGE = (0.02, 50.0)  # the search interval of the temperature


def to_logits(p) -> np.ndarray:
    """(N,) P(FAKE) -> (N,) log-odds, probabilities clipped to [EPS, 1 - EPS]."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """(N,) logits -> (N,) calibrated P(FAKE) = sigmoid(logits / T)."""
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


def nll(y, logits, temperature: float = 1.0) -> float:
    """Mean binary log loss (nats) of sigmoid(logits / T) against y, computed stably from logits."""
    y, z = np.asarray(y, dtype=np.float64), np.asarray(logits, dtype=np.float64) / temperature
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(y, logits, *, iters: int = 80) -> float:
    """The T in :data:`T_RANGE` minimising :func:`nll` on (y, logits): golden-section on log T.

    Raises ValueError on empty input. With one class only, the optimum runs to an end of the
    range (a constant label is best fitted by an infinitely confident model); that is returned.
    """
    y, z = np.asarray(y, dtype=np.float64), np.asarray(logits, dtype=np.float64)
    if y.size == 0 or y.shape != z.shape:
        raise ValueError(f"need matching non-empty y and logits, got shapes {y.shape} and {z.shape}")
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    inv_phi = (math.sqrt(5) - 1) / 2
    a, b = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
    fa, fb = nll(y, z, math.exp(a)), nll(y, z, math.exp(b))
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - inv_phi * (hi - lo)
            fa = nll(y, z, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + inv_phi * (hi - lo)
            fb = nll(y, z, math.exp(b))
    return math.exp((lo + hi) / 2)


@dataclass(frozen=True)
class SplitCalibration:
    """One split's clip-level log loss (nats) and ECE before and after dividing its logits by T."""

    n: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


@dataclass(frozen=True)
class Calibration:
    """The temperature a run applies to its P(FAKE), why it is 1 when not fitted, and its effect per split."""

    temperature: float
    reason: str | None  # None: fitted on val; else why T = 1 (switched off, one-class val)
    splits: dict[str, SplitCalibration]  # "val", "test" -> before/after


def choose_temperature(y, logits, *, enabled: bool = True) -> tuple[float, str | None]:
    """(T, None) fitted on (y, logits) by :func:`fit_temperature`, or (1.0, why) when off or one-class."""
    y = np.asarray(y)
    if not enabled:
        return 1.0, "calibration is switched off (calibrate = false)"
    n_fake = int(y.sum())
    if y.size == 0 or n_fake in (0, y.size):
        return 1.0, f"val holds one class only ({y.size} clips, {n_fake} FAKE): no temperature can be fitted"
    return fit_temperature(y, logits), None


def split_calibration(y, logits, temperature: float, n_bins: int = 15) -> SplitCalibration:
    """Log loss and ECE of sigmoid(logits) and sigmoid(logits / T) against y (all (N,))."""
    return SplitCalibration(
        n=int(np.asarray(y).size), nll_before=nll(y, logits), nll_after=nll(y, logits, temperature),
        ece_before=expected_calibration_error(y, apply_temperature(logits, 1.0), n_bins),
        ece_after=expected_calibration_error(y, apply_temperature(logits, temperature), n_bins),
    )  # fmt: skip


def reliability_bins(y, p, n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins of P(FAKE) over [0, 1] -> (mean p, fraction FAKE, count) per bin, each (n_bins,).

    Empty bins have count 0 and NaN means. p = 1 falls in the last bin.
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)  # (N,)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=p, minlength=n_bins) / count
        frac = np.bincount(idx, weights=y, minlength=n_bins) / count
    return conf, frac, count


def expected_calibration_error(y, p, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean over equal-width bins of |fraction FAKE - mean P(FAKE)|."""
    conf, frac, count = reliability_bins(y, p, n_bins)
    full = count > 0
    return float(np.sum(count[full] * np.abs(frac[full] - conf[full])) / count.sum())


def plot_reliability(y, curves: dict[str, np.ndarray], path: str | Path, n_bins: int = 15) -> Path:
    """A reliability diagram PNG: per named P(FAKE) array in ``curves`` (e.g. "raw", "T = 1.8"),
    the fraction FAKE against the mean P(FAKE) of each bin, ECE in the legend; the diagonal is
    perfect calibration. Returns ``path``."""
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    for name, p in curves.items():
        conf, frac, count = reliability_bins(y, p, n_bins)
        full = count > 0
        ece = expected_calibration_error(y, p, n_bins)
        ax.plot(conf[full], frac[full], marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean P(FAKE) in bin", ylabel="fraction FAKE in bin",
           title="Reliability")  # fmt: skip
    ax.legend(loc="upper left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path
