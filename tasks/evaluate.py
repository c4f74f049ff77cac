"""Video-level evaluation of scored videos: overall and per manipulation type, with baselines.

Per manipulation type ``m``, the positives are the fakes of type ``m`` and the negatives are
ALL real videos, so each row answers "does the model separate this kind of fake from reals".
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from tasks.metrics import baselines, binary_metrics

REPORTED = ("auc", "average_precision", "log_loss", "accuracy")


def evaluate_videos(rows: list[dict], prior: float | None = None) -> dict:
    """rows: {video_id, label REAL|FAKE, manipulation|None, p_fake|None} -> metrics by group.

    Unscored videos (p_fake None) are counted, not scored. ``prior``: the training FAKE
    fraction for the prior baseline (default: this set's own, which flatters the baseline).
    """
    scored = [r for r in rows if r.get("p_fake") is not None]
    if not scored:
        raise ValueError("no video could be scored")
    y = np.array([r["label"] == "FAKE" for r in scored], dtype=int)
    p = np.array([r["p_fake"] for r in scored], dtype=float)
    prior = float(y.mean()) if prior is None else prior
    train_like = np.array([1] * round(prior * 1000) + [0] * (1000 - round(prior * 1000)))
    out = {"overall": _group(y, p, train_like), "by_type": {}, "unscored": len(rows) - len(scored), "prior": prior}
    reals = y == 0
    types = defaultdict(list)
    for i, r in enumerate(scored):
        if r["label"] == "FAKE":
            types[r.get("manipulation") or "unknown"].append(i)
    for m, idx in sorted(types.items()):
        sel = reals.copy()
        sel[idx] = True
        out["by_type"][m] = _group(y[sel], p[sel], train_like)
    return out


def _group(y: np.ndarray, p: np.ndarray, train_like: np.ndarray) -> dict:
    m = binary_metrics(y, p)
    base = baselines(train_like, y)
    return {
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        **{k: m[k] for k in REPORTED},
        "prior_log_loss": base["prior"]["log_loss"],
        "majority_accuracy": base["majority"]["accuracy"],
    }


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def evaluation_markdown(result: dict, title: str) -> str:
    header = "| videos | REAL | FAKE | AUC | AP | log loss | prior log loss | accuracy | majority accuracy |"
    lines = [f"# {title}", "", header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, g in [("all", result["overall"]), *result["by_type"].items()]:
        lines.append(
            f"| {name} | {g['n_real']} | {g['n_fake']} | {_fmt(g['auc'])} | {_fmt(g['average_precision'])} | "
            f"{_fmt(g['log_loss'])} | {_fmt(g['prior_log_loss'])} | {_fmt(g['accuracy'])} | {_fmt(g['majority_accuracy'])} |"
        )
    lines += ["", f"Per type: that type's fakes against all {result['overall']['n_real']} real videos. "
              f"Prior baseline: constant P(FAKE) = {result['prior']:.3f}; majority: the more frequent training class. "
              f"Videos that could not be scored: {result['unscored']}."]  # fmt: skip
    return "\n".join(lines) + "\n"
