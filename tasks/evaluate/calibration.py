"""Calibration: Platt scaling fitted on validation logits, cross-fitted for an honest number,
expected calibration error, reliability diagrams.

Platt scaling (Platt 1999) maps every logit z to ``a·z + b`` with a slope a > 0 and an intercept
b fitted to minimise the validation log loss: rankings (AUC) are unchanged, a > 1 sharpens an
under-confident model, a < 1 softens an over-confident one, and b moves the base rate. The
intercept matters when the training loader's FAKE fraction differs from the evaluation data's
(``extra_train_data``, pseudo-fakes): temperature scaling (``z / T``, i.e. b = 0) cannot undo
such a prior shift, so an uninformative model trained at 41 % FAKE scored a log loss of 0.69 on
an 85 % FAKE val instead of the prior's 0.42. A temperature T is the map ``(1 / T, 0)``.

The fit is Newton's method (never uphill) on the two parameters with a small ridge on a - 1: it
keeps the fit finite on separable data and constant logits identifiable (b alone then carries
the base rate), and, being zero at the identity where the descent starts, the fitted map never
scores its own data worse than the raw logits unless a hits :data:`SLOPE_RANGE`, its bounds. (Platt's smoothed targets were not used: on a val of
a few dozen clips they pull a good model's probabilities towards 0.5 and raise its log loss.)
Pure NumPy and deterministic. A val with fewer than :data:`MIN_PER_CLASS` clips of either class
fits nothing: the identity, with the reason.

:func:`cross_fit` scores val out of fold: the groups are split in two halves, each half's
logits mapped by the fit on the other, so a number computed on them (the registry gate's) was
not fitted on the clips that judge it.

Arrays: ``y`` (N,) in {0, 1} with FAKE = 1; ``logits`` (N,) log-odds of FAKE; ``p`` (N,)
P(FAKE). The reliability diagram is built on ``matplotlib.figure.Figure`` and rendered by Agg
(as :mod:`tasks.evaluate.plots`), never through pyplot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tasks.evaluate.plots import DPI

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before taking log-odds or logs
SLOPE_RANGE = (0.02, 50.0)  # the bounds of a (as a temperature, 1 / a: the old search interval of T)
MIN_PER_CLASS = 2  # clips of each class a fit needs; fewer: the identity
RIDGE = 1e-3  # per clip, on (a - 1)^2: negligible against the log loss, decisive when z is constant


def to_logits(p) -> np.ndarray:
    """(N,) P(FAKE) -> (N,) log-odds, probabilities clipped to [EPS, 1 - EPS]."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass(frozen=True)
class Platt:
    """logit' = slope · logit + intercept; ``Platt()`` is the identity, ``Platt(1 / T)`` a temperature."""

    slope: float = 1.0
    intercept: float = 0.0

    @property
    def identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0

    def logits(self, z) -> np.ndarray:
        """(N,) logits -> (N,) calibrated logits."""
        return self.slope * np.asarray(z, dtype=np.float64) + self.intercept

    def __call__(self, z) -> np.ndarray:
        """(N,) logits -> (N,) calibrated P(FAKE)."""
        return sigmoid(self.logits(z))


def nll(y, logits, platt: Platt = Platt()) -> float:
    """Mean binary log loss (nats) of ``platt(logits)`` against y, computed stably from logits."""
    y, z = np.asarray(y, dtype=np.float64), platt.logits(logits)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _fit_intercept(t: np.ndarray, z: np.ndarray, a: float, b: float, iters: int = 50) -> float:
    """The b minimising the log loss of a·z + b against t for a fixed a (1-D Newton)."""
    for _ in range(iters):
        p = sigmoid(a * z + b)
        g, h = float(np.sum(p - t)), float(np.sum(p * (1 - p))) + 1e-12
        b -= g / h
        if abs(g / h) < 1e-10:
            break
    return b


def fit_platt(y, logits, *, iters: int = 100) -> Platt:
    """The (a, b) minimising the summed log loss of a·logits + b against y plus ``RIDGE · N · (a - 1)^2``;
    a bounded to :data:`SLOPE_RANGE`. Raises ValueError on empty input."""
    y, z = np.asarray(y, dtype=np.float64), np.asarray(logits, dtype=np.float64)
    if y.size == 0 or y.shape != z.shape:
        raise ValueError(f"need matching non-empty y and logits, got shapes {y.shape} and {z.shape}")
    t = y
    lam = RIDGE * y.size

    def loss(a: float, b: float) -> float:
        s = a * z + b
        return float(np.sum(np.logaddexp(0.0, s) - t * s)) + lam * (a - 1) ** 2

    a, b = 1.0, 0.0
    for _ in range(iters):
        p = sigmoid(a * z + b)
        r, w = p - t, p * (1 - p)  # (N,)
        grad = np.array([np.sum(r * z) + 2 * lam * (a - 1), np.sum(r)])
        hess = np.array([[np.sum(w * z * z) + 2 * lam, np.sum(w * z)], [np.sum(w * z), np.sum(w) + 1e-12]])
        step = np.linalg.solve(hess, grad)
        f0, k = loss(a, b), 1.0
        while k > 1e-8 and loss(a - k * step[0], b - k * step[1]) > f0:  # backtracking: never uphill
            k /= 2
        a, b = a - k * step[0], b - k * step[1]
        if np.max(np.abs(k * step)) < 1e-10:
            break
    if not SLOPE_RANGE[0] <= a <= SLOPE_RANGE[1]:
        a = float(np.clip(a, *SLOPE_RANGE))
        b = _fit_intercept(t, z, a, b)
    return Platt(float(a), float(b))


def choose_platt(y, logits, *, enabled: bool = True) -> tuple[Platt, str | None]:
    """(map, None) fitted by :func:`fit_platt`, or (identity, why) when off or a class has too few clips."""
    y = np.asarray(y)
    if not enabled:
        return Platt(), "calibration is switched off (calibrate = false)"
    n_fake = int(y.sum())
    if min(n_fake, y.size - n_fake) < MIN_PER_CLASS:
        what = "one class only" if n_fake in (0, y.size) else f"fewer than {MIN_PER_CLASS} clips of a class"
        return Platt(), f"val holds {what} ({y.size} clips, {n_fake} FAKE): no calibration can be fitted"
    return fit_platt(y, logits), None


def halves(groups: Sequence, y, seed: int = 0) -> np.ndarray:
    """(N,) 0/1: which half each item's group falls in. Stratified: the groups, shuffled by ``seed``, are
    ordered by their FAKE fraction (of ``y`` (N,)) and dealt alternately, so both halves hold about val's
    base rate and one half's prior is a fair prior for the other."""
    keys = np.asarray([str(g) for g in groups])
    uniq, inv = np.unique(keys, return_inverse=True)
    fake = np.bincount(inv, weights=np.asarray(y, dtype=np.float64), minlength=len(uniq)) / np.bincount(inv)
    shuffled = np.random.default_rng(seed).permutation(len(uniq))
    order = shuffled[np.argsort(fake[shuffled], kind="stable")]  # by FAKE fraction, ties in random order
    half = np.zeros(len(uniq), dtype=np.int64)
    half[order[1::2]] = 1
    return half[inv]


@dataclass(frozen=True)
class CrossFit:
    """Val scored out of fold: each half's P(FAKE) under the map fitted on the other half, and the
    prior the same way (the other half's FAKE fraction), so model and prior see the same information."""

    p: np.ndarray  # (N,) calibrated P(FAKE), out of fold
    prior: np.ndarray  # (N,) the other half's clip FAKE fraction, smoothed towards a prior: (n_fake + 2π) / (n + 2)
    maps: tuple[Platt, Platt]  # the map applied to half 0 (fitted on half 1), and to half 1
    reasons: tuple[str | None, str | None]  # why a half's map is the identity (None: fitted)


def cross_fit(y, logits, groups: Sequence, *, enabled: bool = True, seed: int = 0, prior: float = 0.5) -> CrossFit:
    """2-fold cross-fitted calibration of val clips, split by ``groups`` (a REAL video and its fakes together),
    stratified by label (:func:`halves`). Each half's prior is the other half's FAKE fraction shrunk towards
    ``prior`` π (the training prior; 0.5 is Laplace's rule) with the weight of two clips: a large half speaks
    for itself, an empty one (val of one group) gives π, never a coin flip."""
    y, z = np.asarray(y, dtype=np.int64), np.asarray(logits, dtype=np.float64)
    half = halves(groups, y, seed)
    p, out_prior = np.empty(y.size), np.empty(y.size)
    maps, reasons = [], []
    for h in (0, 1):
        fit_on, score = half != h, half == h
        platt, why = choose_platt(y[fit_on], z[fit_on], enabled=enabled)
        p[score] = platt(z[score])
        out_prior[score] = (y[fit_on].sum() + 2 * prior) / (fit_on.sum() + 2)  # a one-class half is no certainty
        maps.append(platt)
        reasons.append(why)
    return CrossFit(p, out_prior, (maps[0], maps[1]), (reasons[0], reasons[1]))


@dataclass(frozen=True)
class SplitCalibration:
    """One split's clip-level log loss (nats) and ECE before and after the calibration map."""

    n: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


@dataclass(frozen=True)
class Calibration:
    """The map a run applies to its logits, why it is the identity when not fitted, and its effect per split."""

    platt: Platt
    reason: str | None  # None: fitted on val; else why the identity (switched off, one-class or tiny val)
    splits: dict[str, SplitCalibration]  # "val", "test" -> before/after


def split_calibration(y, logits, platt: Platt, n_bins: int = 15) -> SplitCalibration:
    """Log loss and ECE of sigmoid(logits) and platt(logits) against y (all (N,))."""
    return SplitCalibration(
        n=int(np.asarray(y).size), nll_before=nll(y, logits), nll_after=nll(y, logits, platt),
        ece_before=expected_calibration_error(y, sigmoid(logits), n_bins),
        ece_after=expected_calibration_error(y, platt(logits), n_bins),
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
    """A reliability diagram PNG: per named P(FAKE) array in ``curves`` (e.g. "uncalibrated", "calibrated"),
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
