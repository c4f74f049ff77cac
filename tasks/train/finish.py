"""What a training run does after its last epoch, at the best checkpoint, one function per step.

- :func:`score`              a split's predictions -> :func:`tasks.evaluate.metrics.evaluate_predictions`
- :func:`val_threshold`      the decision threshold chosen on val video predictions
- :func:`summary_metrics` / :func:`metrics_table`   what MLflow charts, and the full table
- :func:`write_predictions`  ``predictions/<split>.parquet``
- :func:`render_plots`       curves, ROC/PR and the confusion matrix as PNGs
- :func:`publish`            plots and report.md into ``output_dir`` (object storage: uploaded)
- :func:`log_remote`         one file or folder (local or remote) as an artifact of the run

:meth:`tasks.train.run._Run.finish` calls them in this order.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storage import fs
from storage.tables import PredictionRow, write_table
from tasks.evaluate import metrics as M
from tasks.evaluate import plots
from tasks.evaluate.metric_names import best_key
from tasks.tracking.logger import Logger
from tasks.train.engine import Predictions

SUMMARY_METRICS = ("best_val_video_auc", "best_val_video_log_loss", "test_video_auc", "test_video_average_precision",
                   "test_video_log_loss", "test_video_balanced_accuracy", "test_video_f1", "test_video_eer",
                   "test_video_at_val_threshold_balanced_accuracy", "test_video_at_val_threshold_f1",
                   "test_clip_auc", "test_clip_log_loss")  # fmt: skip
METRICS_TABLE = "metrics_table.json"
_PREDICTORS = (("model", "{level}"), ("model @ val threshold", "{level}@val_threshold"),
               ("prior baseline", "baselines.{level}.prior"), ("majority baseline", "baselines.{level}.majority"))  # fmt: skip


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


def score(preds: Predictions, train: TrainLabels, threshold_val: float | None = None) -> dict[str, Any]:
    """Clip and video metrics of one split's predictions, with the prior/majority baselines of ``train``."""
    return M.evaluate_predictions(preds.video_ids, preds.y, preds.p, threshold_val=threshold_val,
                                  y_train=train.clips, y_train_video=train.videos)  # fmt: skip


def by_video(preds: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video ids ``(V,)``, labels ``(V,)``, mean FAKE probability ``(V,)``) of clip predictions."""
    return M.aggregate_by_video(preds.video_ids, preds.y, preds.p)


def val_threshold(val: Predictions, criterion: str) -> float | None:
    """The threshold ``criterion`` (f1 | youden | eer) picks on val videos; None when val holds one class."""
    _, y, p = by_video(val)
    try:
        return M.choose_threshold(y, p, criterion)
    except ValueError:  # one-class val: no threshold can be chosen there
        return None


def summary_metrics(flat: Mapping[str, float], monitor: str) -> dict[str, float]:
    """SUMMARY_METRICS (and the monitor at the best checkpoint) out of flattened best_val_/test_ keys."""
    keep = set(SUMMARY_METRICS) | {best_key(monitor)}
    return {k: v for k, v in flat.items() if k in keep}


def metrics_table(by_split: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (split, level, predictor) of :func:`tasks.evaluate.metrics.evaluate_predictions` outputs."""
    rows = []
    for split, metrics in by_split.items():
        for level in ("video", "clip"):
            for predictor, path in _PREDICTORS:
                node: Any = metrics
                for key in path.format(level=level).split("."):
                    node = node.get(key) if isinstance(node, Mapping) else None
                if node is not None:
                    rows.append({"split": split, "level": level, "predictor": predictor, **node})
    return rows


def write_predictions(output_dir: str, by_split: Mapping[str, Predictions]) -> dict[str, str]:
    """``predictions/<split>.parquet`` (video_id, clip, y, p_fake) per split; split -> URI."""
    uris = {}
    for split, preds in by_split.items():
        uris[split] = fs.join(output_dir, "predictions", f"{split}.parquet")
        rows = [PredictionRow(video_id=v, clip=int(c), y=int(y), p_fake=float(p))
                for v, c, y, p in zip(preds.video_ids, preds.clips, preds.y, preds.p)]  # fmt: skip
        write_table(uris[split], PredictionRow, rows)
    return uris


def render_plots(history: Sequence[dict], test: Predictions, threshold: float | None, directory: Path) -> list[Path]:
    """Training curves, test ROC/PR (video and clip) and the test video confusion matrix under ``directory``."""
    _, y, p = by_video(test)
    paths = plots.plot_curves(history, directory)
    paths += plots.plot_roc_pr(y, p, directory, "test_video")
    paths += plots.plot_roc_pr(test.y, test.p, directory, "test_clip")
    paths.append(plots.plot_confusion(y, p, 0.5 if threshold is None else threshold, directory, "test_video"))
    return paths


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
