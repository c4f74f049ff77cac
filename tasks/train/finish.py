"""What a training run does after its last epoch, at the best checkpoint, one function per step.

- :func:`score_best`         calibrate, threshold and score val and test at once (:class:`Scored`):
- :func:`calibrate` / :func:`calibrated`   the Platt map fitted on val clip logits, applied to a split
- :func:`score`              a split's predictions -> :func:`tasks.evaluate.metrics.evaluate_predictions`
- :func:`val_threshold`      the decision threshold chosen on val video predictions
- :func:`log_scored`         what MLflow charts (:func:`summary_metrics`), the full table (:func:`metrics_table`), tags
- :func:`write_predictions`  ``predictions/<split>.parquet``
- :func:`render_plots`       curves, ROC/PR, the confusion matrix and the reliability diagram as PNGs
- :func:`keep_decision`      threshold and calibration beside the best checkpoint (``decision.json``)
- :func:`publish`            plots and report.md into ``output_dir`` (object storage: uploaded)
- :func:`log_remote`         one file or folder (local or remote) as an artifact of the run

:func:`tasks.train.run.finish_run` calls them in this order.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storage import fs
from storage.tables import PredictionRow, write_table
from tasks.evaluate import calibration as C
from tasks.evaluate import handmade as H
from tasks.evaluate import metrics as M
from tasks.evaluate import plots
from tasks.evaluate.metric_names import (BEST_VAL, CALIBRATION_MAP, HANDMADE, HANDMADE_LABELS, TEST, baseline_key,
                                         best_key, key, parse)  # fmt: skip
from avff_model.readout import Readout
from storage.decision import Decision, ingest_preprocess, write_decision, write_preprocess
from tasks.tracking.logger import Logger
from tasks.train.engine import Predictions

SUMMARY_METRICS = ("best_val_video_auc", "best_val_video_log_loss", "test_video_auc", "test_video_average_precision",
                   "test_video_log_loss", "test_video_balanced_accuracy", "test_video_f1", "test_video_eer",
                   "test_video_at_val_threshold_balanced_accuracy", "test_video_at_val_threshold_f1",
                   "test_clip_auc", "test_clip_log_loss",
                   # the headline's baseline beside it, so MLflow's Compare view shows both
                   "best_val_baselines_video_prior_auc", "best_val_baselines_video_prior_log_loss",
                   "test_baselines_video_prior_auc", "test_baselines_video_prior_log_loss",
                   # and the one-line hand-made statistics the model must beat (tasks/evaluate/handmade.py)
                   *(f"{split}_baselines_video_{name}_auc" for name in HANDMADE for split in ("best_val", "test")))  # fmt: skip
# what the run page lists first (it lists metrics in the order they were first logged): per split, test then
# val, the model's video AUC and log loss, then their baselines' (the prior's, the hand-made statistics' AUC)
HEADLINE = tuple(k for split in (TEST, BEST_VAL) for k in (
    key(split, "video", "auc"), key(split, "video", "log_loss"), baseline_key(split, "video", "prior", "auc"),
    baseline_key(split, "video", "prior", "log_loss"), *(baseline_key(split, "video", n, "auc") for n in HANDMADE)))  # fmt: skip
METRICS_TABLE = "metrics_table.json"
_PREDICTORS = (("model", "{level}"), ("model @ val threshold", "{level}@val_threshold"),
               ("prior baseline", "baselines.{level}.prior"), ("majority baseline", "baselines.{level}.majority"),
               *((HANDMADE_LABELS[name], f"baselines.{{level}}.{name}") for name in HANDMADE))  # fmt: skip
UNCALIBRATED = "model, uncalibrated"  # the metrics-table predictor of P(FAKE) before Platt scaling
RELIABILITY_PLOT = "reliability_test_clip.png"


@dataclass(frozen=True)
class TrainLabels:
    """The training split's labels, the prior of the baselines: clips ``(N,)`` and videos ``(V,)``, FAKE = 1."""

    clips: np.ndarray
    videos: np.ndarray


@dataclass
class Published:
    """Where the rendered outputs ended up (local paths, or URIs under an object-storage ``output_dir``)."""

    plots: list[str] = field(default_factory=list)
    report: str | None = None


@dataclass(frozen=True)
class Scored:
    """The best checkpoint on val and test (:func:`score_best`): the calibration, the calibrated predictions,
    their metrics (:func:`score`, test at the val threshold) and, when calibration changed P(FAKE), the raw scores."""

    calibration: C.Calibration
    val: Predictions
    test: Predictions
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    threshold: float | None
    uncalibrated: dict[str, dict[str, Any]] | None  # split -> :func:`score` of the raw predictions


def score_best(raw_val: Predictions, raw_test: Predictions, train: TrainLabels, *, enabled: bool,
               criterion: str) -> Scored:  # fmt: skip
    """Calibrate on val (``enabled``), choose the threshold on calibrated val videos (``criterion``), score both."""
    cal = calibrate(raw_val, raw_test, enabled)
    val, test = calibrated(raw_val, cal.platt), calibrated(raw_test, cal.platt)
    val_metrics = score(val, train)
    threshold = val_threshold(val, criterion)
    test_metrics = score(test, train, threshold)
    raw = None if val is raw_val else {"val": score(raw_val, train), "test": score(raw_test, train)}
    return Scored(cal, val, test, val_metrics, test_metrics, threshold, raw)


def log_scored(log: Logger, scored: Scored, monitor: str, best_epoch: int) -> None:
    """The summary and calibration metrics at ``best_epoch``, the full metrics table, and the run's tags."""
    summary = {**M.flatten("best_val", scored.val_metrics), **M.flatten("test", scored.test_metrics)}
    log.log_metrics({**summary_metrics(summary, monitor), **calibration_metrics(scored.calibration)}, step=best_epoch)
    by_split = {"val": scored.val_metrics, "test": scored.test_metrics}
    log.log_table(metrics_table(by_split, scored.uncalibrated, scored.calibration), METRICS_TABLE)
    log.set_tags({"best_epoch": str(best_epoch), "val_threshold": str(scored.threshold)})


def calibrate(val: Predictions, test: Predictions | None, enabled: bool) -> C.Calibration:
    """The Platt map fitted on val clip logits (the identity when ``enabled`` is off or val holds too few
    clips of a class), with the clip log loss and ECE before and after it on val and (when given) test."""
    platt, reason = C.choose_platt(val.y, C.to_logits(val.p), enabled=enabled)
    splits = {"val": val} if test is None else {"val": val, "test": test}
    return C.Calibration(
        platt, reason, {n: C.split_calibration(p.y, C.to_logits(p.p), platt) for n, p in splits.items()}
    )


def calibrated(preds: Predictions, platt: C.Platt) -> Predictions:
    """``preds`` with P(FAKE) = sigmoid(a·logit + b); unchanged (the same array) for the identity."""
    if platt.identity:
        return preds
    return preds._replace(p=platt(C.to_logits(preds.p)))


def calibration_metrics(cal: C.Calibration) -> dict[str, float]:
    """What MLflow charts of calibration: ``calibration_slope``, ``calibration_intercept`` and the test clip
    ECE after and before it. The val ECEs are in the metrics table (:func:`metrics_table`), to keep the run page short."""
    out = dict(zip(CALIBRATION_MAP, (cal.platt.slope, cal.platt.intercept)))
    if "test" in cal.splits:
        test = cal.splits["test"]
        out[key(TEST, "clip", "ece")], out[key(TEST, "clip", "uncalibrated_ece")] = test.ece_after, test.ece_before
    return out


def score(preds: Predictions, train: TrainLabels, threshold_val: float | None = None) -> dict[str, Any]:
    """Clip and video metrics of one split's predictions, with the prior/majority baselines of ``train`` and,
    when the loader measured them (``preds.handmade``), the hand-made statistics' (:func:`H.baseline_metrics`)."""
    out = M.evaluate_predictions(preds.video_ids, preds.y, preds.p, threshold_val=threshold_val,
                                 y_train=train.clips, y_train_video=train.videos, faces=preds.faces)  # fmt: skip
    if preds.handmade:
        for level, by_name in H.baseline_metrics(preds.video_ids, preds.y, preds.handmade).items():
            out.setdefault("baselines", {}).setdefault(level, {}).update(by_name)
    return out


def by_video(preds: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video ids ``(V,)``, labels ``(V,)``, FAKE probability ``(V,)``) of clip predictions: the mean
    over a face's clips, the max over a video's faces."""
    return M.aggregate_by_video(preds.video_ids, preds.y, preds.p, faces=preds.faces)


def val_threshold(val: Predictions, criterion: str) -> float | None:
    """The threshold ``criterion`` (f1 | youden | eer) picks on val videos; None when val holds one class."""
    _, y, p = by_video(val)
    try:
        return M.choose_threshold(y, p, criterion)
    except ValueError:  # one-class val: no threshold can be chosen there
        return None


def summary_metrics(flat: Mapping[str, float], monitor: str) -> dict[str, float]:
    """SUMMARY_METRICS (and the monitor at the best checkpoint) out of flattened best_val_/test_ keys, the
    HEADLINE first (the run page's order).

    A baseline's NaN (its AUC on a split of one class, a statistic no clip defines) is left out, not logged
    as a number: MLflow would chart and compare it; the metrics table keeps it (as null)."""
    keep = set(SUMMARY_METRICS) | {best_key(monitor)}
    out = {k: v for k, v in flat.items() if k in keep and not (math.isnan(v) and parse(k).baseline is not None)}
    return {**{k: out[k] for k in HEADLINE if k in out}, **out}


def is_summary(name: str) -> bool:
    """A metric of the run's summary at the best checkpoint (``best_val_*``, ``test_*``, the calibration map),
    not a curve: what :class:`tasks.tracking.mlflow_adapter.MLflowLogger` keeps on the run from the start."""
    return name in CALIBRATION_MAP or name.startswith((f"{BEST_VAL}_", f"{TEST}_"))


def metrics_table(by_split: Mapping[str, Mapping[str, Any]], uncalibrated: Mapping[str, Mapping[str, Any]] | None = None,
                  calibration: C.Calibration | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One row per (split, level, predictor) of :func:`tasks.evaluate.metrics.evaluate_predictions` outputs;
    ``uncalibrated`` (split -> the same outputs before Platt scaling) adds the model's raw rows, and
    ``calibration`` an ``ece`` to the clip-level model rows (after the map; before it on the uncalibrated rows)."""
    rows = []
    for split, metrics in by_split.items():
        for level in ("video", "clip"):
            for predictor, path in _PREDICTORS:
                node: Any = metrics
                for part in path.format(level=level).split("."):
                    node = node.get(part) if isinstance(node, Mapping) else None
                if node is not None:
                    rows.append({"split": split, "level": level, "predictor": predictor, **node})
            if uncalibrated and split in uncalibrated:
                rows.append({"split": split, "level": level, "predictor": UNCALIBRATED, **uncalibrated[split][level]})
    ece = calibration.splits if calibration else {}
    for row in rows:
        if row["level"] == "clip" and row["split"] in ece and row["predictor"] in ("model", UNCALIBRATED):
            s = ece[row["split"]]
            row["ece"] = s.ece_after if row["predictor"] == "model" else s.ece_before
    return rows


def write_predictions(output_dir: str, by_split: Mapping[str, Predictions]) -> dict[str, str]:
    """``predictions/<split>.parquet`` (video_id, clip, y, p_fake, face) per split; split -> URI."""
    uris = {}
    for split, preds in by_split.items():
        uris[split] = fs.join(output_dir, "predictions", f"{split}.parquet")
        faces = preds.faces if preds.faces is not None else np.zeros(len(preds.y), np.int64)
        rows = [PredictionRow(video_id=v, clip=int(c), y=int(y), p_fake=float(p), face=int(f))
                for v, c, y, p, f in zip(preds.video_ids, preds.clips, preds.y, preds.p, faces)]  # fmt: skip
        write_table(uris[split], PredictionRow, rows)
    return uris


def render_plots(history: Sequence[dict], test: Predictions, threshold: float | None, directory: Path,
                 raw_test: Predictions | None = None) -> list[Path]:  # fmt: skip
    """Training curves, test ROC/PR (video and clip), the test video confusion matrix and, given the
    uncalibrated ``raw_test``, the test clip reliability diagram before/after calibration under ``directory``."""
    _, y, p = by_video(test)
    paths = plots.plot_curves(history, directory)
    paths += plots.plot_roc_pr(y, p, directory, "test_video")
    paths += plots.plot_roc_pr(test.y, test.p, directory, "test_clip")
    paths.append(plots.plot_confusion(y, p, 0.5 if threshold is None else threshold, directory, "test_video"))
    if raw_test is not None:
        curves = (
            {"uncalibrated": raw_test.p} if raw_test.p is test.p else {"uncalibrated": raw_test.p, "calibrated": test.p}
        )
        paths.append(C.plot_reliability(test.y, curves, directory / RELIABILITY_PLOT))
    return paths


def keep_decision(checkpoint: str, threshold: float | None, criterion: str, platt: C.Platt,
                  readout: Readout | None = None) -> str:  # fmt: skip
    """``decision.json`` in the best checkpoint's directory, so a scorer loaded from it (``avff
    predict --model out/checkpoints/best.json``) applies the read-out (when fitted), the calibration and
    the val threshold."""
    crit = criterion if threshold is not None else "default"
    joined = readout.to_json() if readout is not None else None
    return write_decision(checkpoint, Decision(threshold, crit, platt.slope, platt.intercept, joined))


def keep_preprocess(checkpoint: str, data: str) -> str | None:
    """``preprocess.json`` (the ingest's preprocessing of ``data``) beside the best checkpoint's decision,
    so a scorer loaded from the checkpoint repeats it (clip mode, crop, rate); None when ``data`` has none."""
    preprocess = ingest_preprocess(data)
    return write_preprocess(checkpoint, preprocess) if preprocess is not None else None


def plots_dir(output_dir: str, scratch: Path) -> Path:
    """Where to render: ``<output_dir>/plots`` when it is local, else under ``scratch`` (uploaded later)."""
    return Path(output_dir.removeprefix("file://")) / "plots" if fs.is_local(output_dir) else scratch / "plots"


def publish(output_dir: str, plot_paths: Sequence[Path], report: str, local_dir: Path, log: Logger) -> Published:
    """Write report.md next to ``local_dir``, log plots and report, upload both when ``output_dir`` is remote."""
    report_local = local_dir.parent / "report.md"
    report_local.parent.mkdir(parents=True, exist_ok=True)
    report_local.write_text(report)
    for p in [*plot_paths, report_local]:
        log.log_artifact(str(p), "plots" if p.suffix == ".png" else None)
    if fs.is_local(output_dir):
        return Published([str(p) for p in plot_paths], str(report_local))
    out = Published()
    for p in plot_paths:  # object storage: upload what was rendered locally
        out.plots.append(fs.join(output_dir, "plots", p.name))
        fs.atomic_write_bytes(out.plots[-1], p.read_bytes())
    out.report = fs.join(output_dir, "report.md")
    fs.atomic_write_bytes(out.report, report.encode())
    return out


def log_remote(log: Logger, uri: str | None, artifact_path: str) -> None:
    """Log a file or folder at ``uri`` (local, or copied down from object storage first) as an artifact."""
    if uri is None:
        return
    if fs.is_local(uri):
        log.log_artifact(uri.removeprefix("file://"), artifact_path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fsys, path = fs.split_uri(uri)
        local = Path(tmp) / Path(path).name
        fsys.get(path, str(local), recursive=True)
        log.log_artifact(str(local), artifact_path)
