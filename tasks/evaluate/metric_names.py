"""The metric-name contract: how the flat metric keys of a training run are built and read.

:func:`tasks.evaluate.metrics.flatten` joins the nested dicts of ``evaluate_predictions`` with
``_``, so every key training logs has one of these shapes::

    <split>_<level>_<metric>                     val_video_auc, best_val_clip_log_loss, test_video_f1
    <split>_<level>_at_val_threshold_<metric>    test_video_at_val_threshold_f1
    <split>_baselines_<level>_<baseline>_<metric>   best_val_baselines_video_prior_log_loss

- split: ``val`` (every epoch), ``best_val`` (val at the best checkpoint), ``test`` (at the best
  checkpoint, never read by a cross-validation fold);
- level: ``video`` (clip probabilities averaged per video) or ``clip``;
- metric: a key of :func:`tasks.evaluate.metrics.binary_metrics` (:data:`METRICS` are the scores, with
  their labels and direction in :data:`TABLE`, the one table of them; :data:`COUNTS` the bookkeeping);
- baseline: ``prior`` or ``majority`` (:func:`tasks.evaluate.metrics.baselines`), or a hand-made
  statistic, ``lip_sync`` or ``sharpness`` (:data:`HANDMADE`, :func:`tasks.evaluate.handmade.baseline_metrics`:
  :data:`RANK_METRICS` only, ``auc``, ``average_precision``, ``eer``), e.g. ``test_baselines_video_lip_sync_auc``.

``val_loss`` is the val clip log loss under a shorter name (the per-epoch loss curve).
Platt scaling at the end of training adds ``calibration_slope`` and ``calibration_intercept``
(:data:`CALIBRATION_MAP`) and the test clip-level expected calibration error after and before it
(:data:`CALIBRATION`):
``test_clip_ece``, ``test_clip_uncalibrated_ece``.
A ``monitor`` (early stopping, the best checkpoint, the registry gate) is a val key:
:data:`MONITORS` lists them all, :func:`check_monitor` refuses anything else.
"""

from __future__ import annotations

from typing import NamedTuple

VAL, BEST_VAL, TEST = "val", "best_val", "test"
SPLITS = (VAL, BEST_VAL, TEST)
LEVELS = ("video", "clip")


class Metric(NamedTuple):
    """One score of :func:`tasks.evaluate.metrics.binary_metrics`: its key, its names, its direction."""

    name: str
    label: str  # how a report names it (the training report's tables, its epoch columns, the plots)
    short: str  # in narrow tables (the model card, evaluation.md)
    higher_is_better: bool
    # a ranking's metric: defined for any score (the hand-made statistics have these only), NaN when
    # the labels hold one class
    rank: bool = False


# The one table of metric names and labels; every list of them below and elsewhere derives from it.
TABLE = (
    Metric("auc", "AUC", "AUC", True, rank=True),
    Metric("average_precision", "average precision", "AP", True, rank=True),
    Metric("log_loss", "log loss", "log loss", False),
    Metric("accuracy", "accuracy", "accuracy", True),
    Metric("balanced_accuracy", "balanced accuracy", "balanced acc.", True),
    Metric("precision", "precision", "precision", True),
    Metric("recall", "recall", "recall", True),
    Metric("f1", "F1", "F1", True),
    Metric("eer", "EER", "EER", False, rank=True),
)
METRICS = tuple(m.name for m in TABLE)
MAX_METRICS = frozenset(m.name for m in TABLE if m.higher_is_better)
LABELS = {m.name: m.label for m in TABLE}
SHORT_LABELS = {m.name: m.short for m in TABLE}
RANK_METRICS = tuple(m.name for m in TABLE if m.rank)  # ("auc", "average_precision", "eer")
COUNTS = ("n", "n_pos", "threshold")  # binary_metrics' other keys: no score, never monitored
BASELINES = ("prior", "majority")  # the trivial predictors, fitted on the training labels
HANDMADE = ("lip_sync", "sharpness")  # the statistics of tasks.evaluate.handmade, baselines that look at the clip
# how the metrics table, the training report and the model card name them
HANDMADE_LABELS = {"lip_sync": "hand-made lip-sync statistic", "sharpness": "hand-made sharpness statistic"}
AT_VAL_THRESHOLD = "at_val_threshold"  # test metrics at the threshold chosen on val ("@val_threshold" flattened)
VAL_LOSS = "val_loss"  # = val_clip_log_loss
CALIBRATION = ("ece", "uncalibrated_ece")  # logged once at the best checkpoint, never monitored
CALIBRATION_MAP = ("calibration_slope", "calibration_intercept")  # calibrated logit = slope * logit + intercept
_VAL_LOSS_MEANS = ("clip", "log_loss")


class MetricKey(NamedTuple):
    """One flat key, read back: ``parse("test_video_at_val_threshold_f1")``."""

    split: str  # val | best_val | test
    level: str  # video | clip
    metric: str  # a METRICS or COUNTS name
    baseline: str | None = None  # prior | majority: a trivial predictor's number, not the model's
    at_val_threshold: bool = False


def key(split: str, level: str, metric: str) -> str:
    """``key("best_val", "video", "auc") == "best_val_video_auc"``."""
    return f"{prefix(split, level)}{metric}"


def prefix(split: str, level: str) -> str:
    """The start of every key of one split and level: ``prefix("test", "clip") == "test_clip_"``."""
    if split not in SPLITS or level not in LEVELS:
        raise ValueError(f"split must be one of {SPLITS} and level one of {LEVELS}, got {split!r}, {level!r}")
    return f"{split}_{level}_"


def baseline_key(split: str, level: str, baseline: str, metric: str) -> str:
    """``baseline_key("best_val", "video", "prior", "log_loss") == "best_val_baselines_video_prior_log_loss"``."""
    prefix(split, level)  # validates both
    if baseline not in BASELINES + HANDMADE:
        raise ValueError(f"baseline must be one of {BASELINES + HANDMADE}, got {baseline!r}")
    return f"{split}_baselines_{level}_{baseline}_{metric}"


def at_threshold_key(split: str, level: str, metric: str) -> str:
    """``at_threshold_key("test", "video", "f1") == "test_video_at_val_threshold_f1"``."""
    return f"{prefix(split, level)}{AT_VAL_THRESHOLD}_{metric}"


def parse(name: str) -> MetricKey:
    """A flat key back into its parts (``val_loss`` reads as val clip log_loss); ValueError if it is none."""
    if name == VAL_LOSS:
        return MetricKey(VAL, *_VAL_LOSS_MEANS)
    split = next((s for s in (BEST_VAL, VAL, TEST) if name.startswith(s + "_")), None)
    rest = name.removeprefix(f"{split}_") if split else ""
    baseline = None
    if rest.startswith("baselines_"):
        rest = rest.removeprefix("baselines_")
        level = next((lv for lv in LEVELS if rest.startswith(lv + "_")), None)
        rest = rest.removeprefix(f"{level}_")
        baseline = next((b for b in BASELINES + HANDMADE if rest.startswith(b + "_")), None)
        rest = rest.removeprefix(f"{baseline}_") if baseline else ""
    else:
        level = next((lv for lv in LEVELS if rest.startswith(lv + "_")), None)
        rest = rest.removeprefix(f"{level}_")
    at = rest.startswith(AT_VAL_THRESHOLD + "_")
    metric = rest.removeprefix(AT_VAL_THRESHOLD + "_")
    if split is None or level is None or metric not in METRICS + COUNTS + CALIBRATION:
        raise ValueError(f"{name!r} is no metric key: <split>_<level>_<metric> with split {'|'.join(SPLITS)}, "
                         f"level {'|'.join(LEVELS)}, metric one of {', '.join(METRICS + COUNTS + CALIBRATION)}")  # fmt: skip
    return MetricKey(split, level, metric, baseline, at)


MONITORS: tuple[str, ...] = (VAL_LOSS, *(key(VAL, level, m) for level in LEVELS for m in METRICS))
"""Every valid ``monitor``: ``val_loss`` and ``val_<level>_<metric>`` for each score."""


def check_monitor(monitor: str) -> str:
    """``monitor`` if it is one of :data:`MONITORS`, else a one-line ValueError listing them."""
    if monitor not in MONITORS:
        raise ValueError(f"unknown monitor {monitor!r}; known: {', '.join(MONITORS)}")
    return monitor


def parse_monitor(monitor: str) -> tuple[str, str]:
    """``val_video_log_loss`` -> ("video", "log_loss"); ``val_loss`` -> ("clip", "log_loss")."""
    parsed = parse(check_monitor(monitor))
    return parsed.level, parsed.metric


def monitor_mode(monitor: str) -> str:
    """``max`` for scores (auc, f1, ...), ``min`` for losses and error rates (log_loss, eer)."""
    return "max" if parse_monitor(monitor)[1] in MAX_METRICS else "min"


def best_key(monitor: str) -> str:
    """The monitor's key at the best checkpoint: ``val_video_auc`` -> ``best_val_video_auc``
    (``val_loss`` -> ``best_val_clip_log_loss``)."""
    return key(BEST_VAL, *parse_monitor(monitor))


def prior_key(monitor: str) -> str:
    """The prior baseline's value of the monitored metric at the best checkpoint (the registry gate's bar)."""
    level, metric = parse_monitor(monitor)
    return baseline_key(BEST_VAL, level, "prior", metric)
