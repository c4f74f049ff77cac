"""Video-level evaluation of scored videos: overall and per manipulation type, with baselines.

Per manipulation type ``m``, the positives are the fakes of type ``m`` and the negatives are
ALL real videos, so each row answers "does the model separate this kind of fake from reals".
AUC intervals come from a group bootstrap (a REAL and its fakes, or one person's videos,
resampled together: :func:`tasks.evaluate.metrics.group_bootstrap`).

The prior baseline needs the FAKE fraction of the videos the model was trained on. It is
never estimated from the evaluated labels (that baseline would know the answer: on a set of
fakes only, P(FAKE) = 1 and a log loss of 0); when it is not known, it is reported as unknown.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from storage.shard_schema import FAKE
from tasks.evaluate.metrics import baselines, binary_metrics, bootstrap_auc_ci

REPORTED = ("auc", "average_precision", "log_loss", "accuracy")


def evaluate_videos(rows: list[dict], prior: float | None = None, *, n_bootstrap: int = 200, seed: int = 0) -> dict:
    """rows: {video_id, label REAL|FAKE, manipulation|None, p_fake|None, group (optional)} -> metrics.

    Unscored videos (p_fake None) are counted, not scored. ``prior``: the training split's
    video-level FAKE fraction; None leaves the prior and majority baselines unknown (NaN).
    ``group`` (default: the video itself) is the unit of the AUC's bootstrap interval.
    """
    scored = [r for r in rows if r.get("p_fake") is not None]
    if not scored:
        raise ValueError("no video could be scored")
    if prior is not None and not 0.0 <= prior <= 1.0:
        raise ValueError(f"prior must be a probability, got {prior}")
    y = np.array([r["label"] == FAKE for r in scored], dtype=int)
    p = np.array([r["p_fake"] for r in scored], dtype=float)
    g = np.array([str(r.get("group") or r["video_id"]) for r in scored])
    boot = {"n_resamples": n_bootstrap, "seed": seed}
    out = {"overall": _group(y, p, g, prior, boot), "by_type": {}, "unscored": len(rows) - len(scored),
           "prior": prior, "n_bootstrap": n_bootstrap}  # fmt: skip
    reals = y == 0
    types = defaultdict(list)
    for i, r in enumerate(scored):
        if r["label"] == FAKE:
            types[r.get("manipulation") or "unknown"].append(i)
    for m, idx in sorted(types.items()):
        sel = reals.copy()
        sel[idx] = True
        out["by_type"][m] = _group(y[sel], p[sel], g[sel], prior, boot)
    return out


def _group(y: np.ndarray, p: np.ndarray, groups: np.ndarray, prior: float | None, boot: dict) -> dict:
    m = binary_metrics(y, p)
    lo, hi = bootstrap_auc_ci(y, p, groups=groups, **boot) if boot["n_resamples"] else (math.nan, math.nan)
    out = {
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "n_groups": len(set(groups.tolist())),
        **{k: m[k] for k in REPORTED},
        "auc_lo": lo,
        "auc_hi": hi,
        "prior_log_loss": math.nan,
        "majority_accuracy": math.nan,
    }
    if prior is not None:
        train_like = np.array([1] * round(prior * 1000) + [0] * (1000 - round(prior * 1000)))
        base = baselines(train_like, y)
        out["prior_log_loss"] = base["prior"]["log_loss"]
        out["majority_accuracy"] = base["majority"]["accuracy"]
    return out


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def evaluation_markdown(result: dict, title: str) -> str:
    header = ("| videos | REAL | FAKE | groups | AUC | AUC 95% CI | AP | log loss | prior log loss | accuracy "
              "| majority accuracy |")  # fmt: skip
    lines = [f"# {title}", "", header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, g in [("all", result["overall"]), *result["by_type"].items()]:
        lines.append(
            f"| {name} | {g['n_real']} | {g['n_fake']} | {g['n_groups']} | {_fmt(g['auc'])} | "
            f"[{_fmt(g['auc_lo'])}, {_fmt(g['auc_hi'])}] | {_fmt(g['average_precision'])} | "
            f"{_fmt(g['log_loss'])} | {_fmt(g['prior_log_loss'])} | {_fmt(g['accuracy'])} | {_fmt(g['majority_accuracy'])} |"
        )
    prior = result["prior"]
    prior_text = (f"Prior baseline: constant P(FAKE) = {prior:.3f}, the training videos' FAKE fraction; majority: the "
                  "more frequent training class." if prior is not None else
                  "Prior and majority baselines: unknown (n/a), because the training split's FAKE fraction was not "
                  "given (`--prior`); they are never estimated from the evaluated labels.")  # fmt: skip
    lines += ["", f"Per type: that type's fakes against all {result['overall']['n_real']} real videos. {prior_text} "
              f"AUC intervals: {result.get('n_bootstrap', 0)} bootstrap resamples of groups (a REAL video and its "
              f"fakes). Videos that could not be scored: {result['unscored']}."]  # fmt: skip
    return "\n".join(lines) + "\n"
