"""Training curves, ROC/PR curves and confusion matrices as PNG files.

Figures are built on ``matplotlib.figure.Figure`` and rendered by Agg at ``savefig``; pyplot
is never imported, so nothing touches the global backend or opens a window, and the
functions are safe in worker threads. Each function returns the paths it wrote.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import auc as area_under
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from storage.shard_schema import FAKE, REAL
from tasks.evaluate.metric_names import LABELS

DPI = 110

# (file stem, title, y label, which history keys belong on the figure)
_CURVES: list[tuple[str, str, str, Callable[[str], bool]]] = [
    ("loss", "Loss", "loss (nats)", lambda k: k == "loss" or k.endswith("_loss")),
    ("auc", f"ROC {LABELS['auc']}", LABELS["auc"], lambda k: k == "auc" or k.endswith("_auc")),
    ("f1", LABELS["f1"], LABELS["f1"], lambda k: k == "f1" or k.endswith("_f1")),
    (
        "precision_recall",
        "Precision and recall",
        "value",
        lambda k: k.endswith(("_precision", "_recall")) or k in ("precision", "recall"),
    ),
    ("lr", "Learning rate", "learning rate", lambda k: k == "lr" or k.endswith("_lr")),
]


def _series(history: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the rows that carry a finite numeric ``key``."""
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(row.get("epoch", i))
            ys.append(float(v))
    return np.asarray(xs), np.asarray(ys)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path


def plot_curves(history: Sequence[dict], out_dir: str | Path) -> list[Path]:
    """One figure per quantity (loss, AUC, F1, precision/recall, lr) against epoch.

    Every history key matching a figure is drawn on it; figures with no key are skipped.
    """
    out = Path(out_dir)
    keys = sorted({k for row in history for k in row if k not in ("epoch", "stage")})
    paths = []
    for stem, title, ylabel, belongs in _CURVES:
        chosen = [k for k in keys if belongs(k) and len(_series(history, k)[1]) > 0]
        if not chosen:
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        for k in chosen:
            x, y = _series(history, k)
            ax.plot(x, y, marker="o", markersize=3, label=k)
        if stem == "lr" and all((_series(history, k)[1] > 0).all() for k in chosen):
            ax.set_yscale("log")
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"curve_{stem}.png"))
    return paths


def plot_roc_pr(y_true, p_fake, out_dir: str | Path, prefix: str) -> list[Path]:
    """ROC and precision-recall curves with their chance levels: [roc.png, pr.png].

    Returns [] when only one class is present (neither curve is defined).
    """
    y = np.asarray(y_true)
    p = np.asarray(p_fake, dtype=np.float64)
    if not 0 < y.sum() < len(y):
        return []
    out = Path(out_dir)
    fpr, tpr, _ = roc_curve(y, p)
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label=f"model (AUC {area_under(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance (AUC 0.5)")
    ax.set(title=f"ROC {prefix}", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right")
    roc_path = _save(fig, out / f"{prefix}_roc.png")

    precision, recall, _ = precision_recall_curve(y, p)
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot(recall, precision, label="model")
    ax.axhline(y.mean(), ls="--", color="grey", label=f"chance (FAKE fraction {y.mean():.3f})")
    ax.set(title=f"Precision-recall {prefix}", xlabel="recall (FAKE)", ylabel="precision (FAKE)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    return [roc_path, _save(fig, out / f"{prefix}_pr.png")]


def plot_confusion(y_true, p_fake, threshold: float, out_dir: str | Path, prefix: str) -> Path:
    """Confusion matrix (rows true, columns predicted; REAL, FAKE) at ``p >= threshold``."""
    y = np.asarray(y_true)
    pred = (np.asarray(p_fake) >= threshold).astype(int)
    cm = confusion_matrix(y, pred, labels=[0, 1])  # [2, 2]
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], [REAL, FAKE])
    ax.set_yticks([0, 1], [REAL, FAKE])
    ax.set(title=f"{prefix} @ {threshold:.3f}", xlabel="predicted", ylabel="true")
    return _save(fig, Path(out_dir) / f"{prefix}_confusion.png")
