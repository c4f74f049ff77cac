"""Binary-classification metrics for FAKE (1) vs REAL (0) predictions, clip and video level.

Everything here is a pure function of label and probability arrays, computed with
scikit-learn so that the numbers match what anyone re-scoring our predictions would get.

Conventions, fixed for the whole project:

- ``y_true``: int array ``[N]`` in ``{0, 1}``, 1 is FAKE (``storage.shard_schema.LABELS``).
- ``p_fake``: float array ``[N]`` in ``[0, 1]``, the predicted probability of FAKE.
- A sample is predicted FAKE when ``p_fake >= threshold`` (the same ``>=`` that
  ``sklearn.metrics.roc_curve`` uses, so a threshold read off a curve reproduces its point).
- Metric names are the suffixes of our MLflow keys: ``flatten("val_video", m)["val_video_auc"]``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from tasks.evaluate.metric_names import RANK_METRICS

# DFDC's public scoring clips probabilities before the log loss, so that one confident
# mistake costs ~16 nats instead of infinity.
PROB_EPS = 1e-7
CRITERIA = ("f1", "youden", "eer")
AGGREGATIONS = ("mean", "max", "logit_mean")


def _check(y_true, p_fake) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(p_fake, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true and p_fake must be 1-D of equal length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("no samples to score")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 (REAL) and 1 (FAKE), got {np.unique(y)[:5]}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_fake must be finite probabilities in [0, 1]")
    return y.astype(np.int64), p


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def equal_error_rate(y_true, p_fake) -> float:
    """EER: the error where false-positive and false-negative rates are equal.

    Linearly interpolated between the two ROC points whose ``fpr - fnr`` changes sign.
    NaN when only one class is present.
    """
    y, p = _check(y_true, p_fake)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # -1 at the first point (nothing positive), +1 at the last: monotone
    i = int(np.argmax(diff >= 0))
    if diff[i] == 0 or i == 0:
        return float(fpr[i])
    t = diff[i - 1] / (diff[i - 1] - diff[i])  # fraction of the segment (i-1, i) to the crossing
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def binary_metrics(y_true, p_fake, threshold: float = 0.5) -> dict[str, float]:
    """Threshold-free and thresholded metrics of FAKE probabilities.

    Keys: auc, average_precision, log_loss, accuracy, balanced_accuracy, precision, recall,
    f1, eer, n, n_pos, threshold. auc/average_precision/eer are NaN with one class present.
    """
    y, p = _check(y_true, p_fake)
    pred = (p >= threshold).astype(np.int64)
    both = _both_classes(y)
    with warnings.catch_warnings():
        # One-class input: balanced accuracy warns about the missing class; its value is still
        # the recall of the classes present, which is what we want.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        balanced = balanced_accuracy_score(y, pred)
    return {
        "auc": float(roc_auc_score(y, p)) if both else math.nan,
        "average_precision": float(average_precision_score(y, p)) if both else math.nan,
        "log_loss": float(log_loss(y, np.clip(p, PROB_EPS, 1 - PROB_EPS), labels=[0, 1])),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced),
        "precision": float(precision_score(y, pred, labels=[0, 1], zero_division=0)),
        "recall": float(recall_score(y, pred, labels=[0, 1], zero_division=0)),
        "f1": float(f1_score(y, pred, labels=[0, 1], zero_division=0)),
        "eer": equal_error_rate(y, p),
        "n": float(len(y)),
        "n_pos": float(y.sum()),
        "threshold": float(threshold),
    }


def all_fake_f1(n: float, n_pos: float) -> float:
    """F1 of the predictor that calls everything FAKE: precision n_pos/n, recall 1."""
    return 2.0 * n_pos / (n + n_pos) if n_pos > 0 else 0.0


def binary_entropy(prior: float, y_true) -> float:
    """Mean log loss (nats) of the constant prediction ``prior`` on labels ``y_true``."""
    y = np.asarray(y_true, dtype=np.float64)
    q = min(max(prior, PROB_EPS), 1 - PROB_EPS)
    frac = float(y.mean())
    return -(frac * math.log(q) + (1 - frac) * math.log(1 - q))


def choose_threshold(y_true, p_fake, criterion: str = "f1") -> float:
    """Pick a decision threshold on validation predictions.

    ``f1``: maximise F1; ``youden``: maximise TPR - FPR; ``eer``: the ROC point where FPR
    and FNR are closest. Only thresholds that call at least one sample FAKE are considered.
    Raises ValueError for an unknown criterion or one-class labels.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {CRITERIA}")
    y, p = _check(y_true, p_fake)
    if not _both_classes(y):
        raise ValueError("choosing a threshold needs both classes in y_true")
    if criterion == "f1":
        precision, recall, thresholds = precision_recall_curve(y, p)
        precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        return float(thresholds[int(np.argmax(f1))])
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # drop the +inf "nothing FAKE" point
    if criterion == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    return float(thresholds[int(np.argmin(np.abs(fpr - (1.0 - tpr))))])


def aggregate_by_video(
    video_ids: Sequence[str], y_true, p_fake, how: str = "mean", faces=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip -> video: one label and one probability per video, ids sorted.

    ``how``: ``mean`` of probabilities, ``max`` (a video is as fake as its most fake clip) or
    ``logit_mean`` (mean in logit space, so confident clips weigh more). Raises ValueError when
    a video's clips disagree on the label.

    ``faces`` (N,): which face of its video each clip shows. Then each face is aggregated over
    its clips as above, and a video is as fake as its most fake face: its probability is the max
    over its faces, its label FAKE when any face is (faces of one video may differ in label).
    """
    if faces is not None and np.any(np.asarray(faces)):
        return _max_over_faces(video_ids, y_true, p_fake, how, np.asarray(faces))
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose one of {AGGREGATIONS}")
    y, p = _check(y_true, p_fake)
    ids = np.asarray(video_ids)
    if ids.shape != y.shape:
        raise ValueError(f"video_ids {ids.shape} and labels {y.shape} differ in length")
    uniq, inv = np.unique(ids, return_inverse=True)
    counts = np.bincount(inv, minlength=len(uniq))
    y_min = np.full(len(uniq), 1, dtype=np.int64)
    y_max = np.zeros(len(uniq), dtype=np.int64)
    np.minimum.at(y_min, inv, y)
    np.maximum.at(y_max, inv, y)
    if (y_min != y_max).any():
        bad = uniq[y_min != y_max]
        raise ValueError(f"{len(bad)} video(s) with clips of both labels, e.g. {bad[:3].tolist()}")
    if how == "mean":
        agg = np.bincount(inv, weights=p, minlength=len(uniq)) / counts
    elif how == "max":
        agg = np.zeros(len(uniq))
        np.maximum.at(agg, inv, p)
    else:
        q = np.clip(p, PROB_EPS, 1 - PROB_EPS)
        z = np.bincount(inv, weights=np.log(q) - np.log1p(-q), minlength=len(uniq)) / counts
        agg = 1.0 / (1.0 + np.exp(-z))
    return uniq, y_max, agg


def _max_over_faces(video_ids: Sequence[str], y_true, p_fake, how: str, faces: np.ndarray):
    """aggregate_by_video per (video, face), then the max over each video's faces (label and probability)."""
    ids = np.asarray(video_ids)
    if faces.shape != ids.shape:
        raise ValueError(f"faces {faces.shape} and video_ids {ids.shape} differ in length")
    uniq, video_of = np.unique(ids, return_inverse=True)  # (V,), (N,)
    per = int(faces.max()) + 1
    face_keys, y_face, p_face = aggregate_by_video(
        video_of * per + faces, y_true, p_fake, how
    )  # one key per (video, face)
    inv = face_keys // per  # (K,) each face's video, an index into uniq
    y_vid, p_vid = np.zeros(len(uniq), np.int64), np.zeros(len(uniq))
    np.maximum.at(y_vid, inv, y_face)
    np.maximum.at(p_vid, inv, p_face)
    return uniq, y_vid, p_vid


def baselines(y_train, y_eval) -> dict[str, dict[str, float]]:
    """Metrics of two trivial predictors on ``y_eval``, fitted on ``y_train``.

    ``majority``: the train majority class with (almost) certainty (ties go to FAKE), so its
    log loss shows the cost of confident mistakes. ``prior``: the train FAKE fraction for every
    sample; AUC 0.5, log loss = the cross-entropy of the train prior on the eval labels.
    """
    y_tr = np.asarray(y_train)
    if len(y_tr) == 0:
        raise ValueError("y_train is empty")
    prior = float(np.mean(y_tr))
    majority_p = 1 - PROB_EPS if prior >= 0.5 else PROB_EPS
    n = len(np.asarray(y_eval))
    return {
        "majority": binary_metrics(y_eval, np.full(n, majority_p)),
        "prior": binary_metrics(y_eval, np.full(n, prior)),
    }


def group_bootstrap(
    stat: Callable[[np.ndarray], float], groups: Sequence, *, n_resamples: int = 1000, seed: int = 0
) -> np.ndarray:
    """``stat(idx)`` over resamples of whole groups: (n_resamples,) values, NaN where ``stat`` is NaN.

    Each resample draws as many groups as there are, with replacement, and passes the
    concatenated indices of their members, so a REAL video and its fakes (or one person's
    videos) enter or leave a resample together: resampling videos independently would treat
    correlated videos as independent evidence and give too narrow an interval.
    """
    keys = np.asarray(groups)
    _, inv = np.unique(keys, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inv))]
    members = [order[bounds[g] : bounds[g + 1]] for g in range(len(bounds) - 1)]
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    for i in range(n_resamples):
        drawn = rng.integers(0, len(members), len(members))
        out[i] = stat(np.concatenate([members[g] for g in drawn]))
    return out


def percentile_interval(values: np.ndarray, alpha: float = 0.05, min_valid: float = 0.5) -> tuple[float, float]:
    """(lo, hi) percentiles of the finite ``values``; (NaN, NaN) when fewer than ``min_valid`` are finite."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0 or len(v) < min_valid * len(values):
        return math.nan, math.nan
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def auc_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of int labels ``y`` [N] and scores ``p`` [N], NaN when only one class is present.

    The Mann-Whitney form (tied scores count one half), equal to ``sklearn.metrics.roc_auc_score``
    (tested) and ~50x cheaper on small arrays: the bootstraps call it 10^4-10^5 times.
    """
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(p)  # average ranks of ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc_ci(
    y_true, p_fake, *, groups: Sequence | None = None, n_resamples: int = 200, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of ROC AUC with a seeded RNG, resampling ``groups`` (default: samples).

    Pass the group of each sample (e.g. the manifest's ``group``: a REAL and its fakes) whenever
    samples share a source. Resamples holding one class are skipped; (NaN, NaN) when fewer than
    half are usable.
    """
    y, p = _check(y_true, p_fake)
    if not _both_classes(y):
        return math.nan, math.nan
    keys = np.arange(len(y)) if groups is None else np.asarray(groups)
    if len(keys) != len(y):
        raise ValueError(f"groups ({len(keys)}) and labels ({len(y)}) differ in length")
    aucs = group_bootstrap(lambda idx: auc_or_nan(y[idx], p[idx]), keys, n_resamples=n_resamples, seed=seed)
    return percentile_interval(aucs, alpha)


def paired_auc_difference(
    y_true, p_a, p_b, groups: Sequence, *, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float]:
    """AUC(a) - AUC(b) on the same samples, with a paired group-bootstrap interval.

    Both models are scored on the same resampled groups, so what they share (hard videos,
    easy identities) cancels. Keys: diff, lo, hi, and p_le_0, the share of resamples where a
    does not beat b (a one-sided bootstrap p-value); "a beats b beyond noise" is ``lo > 0``.
    """
    y, pa = _check(y_true, p_a)
    _, pb = _check(y_true, p_b)

    def diff(idx: np.ndarray) -> float:
        return auc_or_nan(y[idx], pa[idx]) - auc_or_nan(y[idx], pb[idx])

    values = group_bootstrap(diff, groups, n_resamples=n_resamples, seed=seed)
    lo, hi = percentile_interval(values, alpha)
    finite = values[np.isfinite(values)]
    return {"diff": diff(np.arange(len(y))), "lo": lo, "hi": hi,
            "p_le_0": float((finite <= 0).mean()) if len(finite) else math.nan}  # fmt: skip


def seed_mean_auc(
    runs: Sequence[tuple], *, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float | list[float]]:
    """Mean AUC over runs (seeds) with a two-level bootstrap interval.

    ``runs``: ``[(y, p, groups)]``, one per seed, or ``[(y, p_a, p_b, groups)]`` for the paired
    difference AUC(a) - AUC(b). Each resample draws as many runs as there are, with replacement,
    then groups within every drawn run (a fresh group draw each time a run is drawn), and averages:
    the interval carries both what training a seed gave (the seeds' spread) and each evaluation
    set's sampling noise. This holds only when the runs' evaluation sets are independent (no
    identity shared across seeds). One run: its group bootstrap. Keys: mean, lo, hi, per_seed,
    and (paired) p_le_0.
    """
    stats, per_seed, groups = [], [], []
    for run in runs:
        y, *ps, g = run
        y, p0 = _check(y, ps[0])
        ps = [p0, *(_check(y, q)[1] for q in ps[1:])]

        def stat(idx, y=y, ps=ps) -> float:
            values = [auc_or_nan(y[idx], q[idx]) for q in ps]
            return values[0] - values[1] if len(values) == 2 else values[0]

        stats.append(stat)
        per_seed.append(stat(np.arange(len(y))))
        groups.append(g)
    if not stats:
        raise ValueError("no runs to average")
    r = len(stats)
    draws = np.stack([group_bootstrap(f, g, n_resamples=n_resamples * r, seed=seed + i)
                      for i, (f, g) in enumerate(zip(stats, groups))])  # (runs, n_resamples * runs)  # fmt: skip
    picked = np.random.default_rng([seed, r]).integers(0, r, (n_resamples, r))  # (n_resamples, runs): the runs drawn
    slot = np.arange(n_resamples)[:, None] * r + np.arange(r)  # (n_resamples, runs): a group draw of its own per slot
    means = draws[picked, slot].mean(1)  # (n_resamples,) NaN where any drawn run's resample held one class
    lo, hi = percentile_interval(means, alpha)
    out = {"mean": float(np.mean(per_seed)), "lo": lo, "hi": hi, "per_seed": [float(v) for v in per_seed]}
    finite = means[np.isfinite(means)]
    if len(runs[0]) == 4:
        out["p_le_0"] = float((finite <= 0).mean()) if len(finite) else math.nan
    return out


# metrics that are NaN when the labels hold one class only (binary_metrics' keys): the ranking's
ONE_CLASS_NAN = RANK_METRICS


def check_monitor_defined(monitor: str, n_real: int, n_fake: int, split: str = "val") -> None:
    """Raise ValueError when ``monitor`` (e.g. ``val_video_auc``) cannot be computed on ``split``.

    AUC, AP and EER are NaN on one-class labels: early stopping on them would never find a
    best epoch, and training would end with no checkpoint, no test and no report.
    """
    if n_real and n_fake:
        return
    if monitor.endswith(ONE_CLASS_NAN) or not (n_real or n_fake):
        have = f"{n_real} REAL and {n_fake} FAKE videos"
        raise ValueError(
            f"monitor {monitor!r} is undefined: the {split} split holds {have}. Re-split so that {split} holds "
            f"both classes (more data, other ratios/seed, an identity map) or monitor a loss such as "
            f"{split}_video_log_loss."
        )


def evaluate_predictions(
    clip_video_ids: Sequence[str],
    y_true,
    p_fake,
    *,
    threshold_val: float | None = None,
    y_train=None,
    y_train_video=None,
    how: str = "mean",
    faces=None,
) -> dict[str, dict]:
    """Clip- and video-level metrics of one split's clip predictions.

    Returns ``{"clip": m, "video": m}`` (threshold 0.5), plus ``"clip@val_threshold"`` and
    ``"video@val_threshold"`` when ``threshold_val`` is given, plus ``"baselines"``: ``"clip"``
    from ``y_train`` (the training clips' labels) and ``"video"`` from ``y_train_video`` (one
    label per training video: the video-level prior, not the clip-level one), each given.
    ``faces``: each clip's face (:func:`aggregate_by_video`: a video scores as its most fake face).
    """
    _, y_vid, p_vid = aggregate_by_video(clip_video_ids, y_true, p_fake, how=how, faces=faces)
    out: dict[str, dict] = {
        "clip": binary_metrics(y_true, p_fake),
        "video": binary_metrics(y_vid, p_vid),
    }
    if threshold_val is not None:
        out["clip@val_threshold"] = binary_metrics(y_true, p_fake, threshold_val)
        out["video@val_threshold"] = binary_metrics(y_vid, p_vid, threshold_val)
    base = {}
    if y_train is not None:
        base["clip"] = baselines(y_train, y_true)
    if y_train_video is not None:
        base["video"] = baselines(y_train_video, y_vid)
    if base:
        out["baselines"] = base
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


def flatten(prefix: str, metrics: Mapping) -> dict[str, float]:
    """Nested metric dicts -> flat MLflow keys joined by ``_``.

    ``flatten("val", {"video": {"auc": 0.8}}) == {"val_video_auc": 0.8}``; ``@`` becomes
    ``_at_`` (MLflow rejects it): ``test_video_at_val_threshold_f1``. Non-numeric leaves are
    dropped; NaN is kept (MLflow stores it).
    """
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        name = _UNSAFE.sub("_", name.replace("@", "_at_"))
        if isinstance(value, Mapping):
            flat.update(flatten(name, value))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
