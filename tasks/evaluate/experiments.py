"""Summaries of many training runs: cross-validation mean/std and ablation comparison tables.

Pure functions of metric dicts (the flat ``best_val_...`` / ``test_...`` keys that
:func:`tasks.train.run.run_training` returns), so the flows in ``flows/experiments.py`` only
wire runs together. Spread is the sample standard deviation (ddof = 1; 0 for one value),
over the finite values only: a fold whose AUC is undefined (one class) does not poison the
mean, and ``n`` says how many values it rests on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tasks.evaluate import metric_names as N
from tasks.evaluate.markdown import number

NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
TABLE_METRICS = ("auc", "log_loss", "balanced_accuracy", "eer")


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; nested mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def check_name(name: str) -> str:
    """Variant names become run names, paths and metric keys: [A-Za-z0-9_-]+ only."""
    if not NAME_RE.match(name):
        raise ValueError(f"name {name!r} must match {NAME_RE.pattern}")
    return name


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float
    n: int  # finite values the mean rests on


def spread(values: Sequence[float]) -> Spread:
    """Mean and sample std (ddof 1) of the finite ``values``; NaN when none is finite."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return Spread(math.nan, math.nan, 0)
    return Spread(float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0, len(x))


def summarize(runs: Sequence[Mapping[str, float]]) -> dict[str, Spread]:
    """Per metric key present in every run: the spread over runs."""
    if not runs:
        raise ValueError("no runs to summarize")
    keys = set(runs[0]).intersection(*runs[1:])
    return {k: spread([float(r[k]) for r in runs]) for k in sorted(keys)}


def summary_metrics(summary: Mapping[str, Spread], prefix: str = "cv") -> dict[str, float]:
    """``{prefix}_mean_{key}`` and ``{prefix}_std_{key}`` for MLflow."""
    out: dict[str, float] = {}
    for key, s in summary.items():
        out[f"{prefix}_mean_{key}"] = s.mean
        out[f"{prefix}_std_{key}"] = s.std
    return out


def _pm(s: Spread) -> str:
    return number(s.mean) if s.n <= 1 else f"{number(s.mean)} ± {number(s.std)}"


def cv_markdown(per_fold: Mapping[int, Mapping[str, float]], keys: Sequence[str]) -> str:
    """A per-fold table of ``keys`` with a mean ± std row."""
    folds = sorted(per_fold)
    summary = summarize([per_fold[k] for k in folds])
    keys = [k for k in keys if k in summary]
    lines = ["# Grouped cross-validation", "", f"{len(folds)} folds; mean ± sample std over folds.", ""]
    lines += ["| fold | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {k} | " + " | ".join(number(per_fold[k].get(m, math.nan)) for m in keys) + " |" for k in folds]
    lines.append("| **mean ± std** | " + " | ".join(_pm(summary[m]) for m in keys) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ComparisonRow:
    name: str
    kind: str  # "variant" | "baseline"
    metrics: dict[str, Spread]  # TABLE_METRICS -> spread over seeds

    def get(self, metric: str) -> Spread:
        return self.metrics.get(metric, Spread(math.nan, math.nan, 0))


def run_split(split: str) -> str:
    """The key split run_training reports a split under at its best checkpoint: val -> best_val, test -> test."""
    if split not in (N.VAL, N.TEST):
        raise ValueError(f"split must be val|test, got {split!r}")
    return N.BEST_VAL if split == N.VAL else N.TEST


def comparison_rows(
    runs: Mapping[str, Sequence[Mapping[str, float]]], *, split: str = "val", level: str = "video"
) -> list[ComparisonRow]:
    """Variant name -> its runs' metrics (one per seed) -> table rows, then the trivial baselines.

    Baselines (train prior for every clip; train majority class, almost certain) depend only
    on the data, so they are read from the first run that has them.
    """
    at = run_split(split)
    keys = {m: N.key(at, level, m) for m in TABLE_METRICS}
    rows = [
        ComparisonRow(name, "variant", {m: spread([r.get(k, math.nan) for r in rs]) for m, k in keys.items()})
        for name, rs in runs.items()
    ]
    first = next((r for rs in runs.values() for r in rs if N.baseline_key(at, level, "prior", "auc") in r), None)
    for b in N.BASELINES:
        base = {m: N.baseline_key(at, level, b, m) for m in TABLE_METRICS}
        values = {m: spread([first.get(k, math.nan)] if first else []) for m, k in base.items()}
        rows.append(ComparisonRow(b, "baseline", values))
    return rows


def comparison_markdown(rows: Sequence[ComparisonRow], *, split: str, level: str, seeds: Sequence[int]) -> str:
    lines = [
        "# Ablation",
        "",
        f"{level.capitalize()}-level metrics on **{split}** at each run's best checkpoint; mean ± sample std "
        f"over seeds {list(seeds)}. Baselines use the training labels only (prior: the train FAKE fraction "
        "for every sample; majority: the train majority class, almost certain).",
        "",
        "| variant | kind | seeds | " + " | ".join(TABLE_METRICS) + " |",
        "|---|---|---|" + "---|" * len(TABLE_METRICS),
    ]
    for r in rows:
        n = max((s.n for s in r.metrics.values()), default=0) if r.kind == "variant" else "-"
        lines.append(f"| {r.name} | {r.kind} | {n} | " + " | ".join(_pm(r.get(m)) for m in TABLE_METRICS) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(
    rows: Sequence[ComparisonRow], path: str | Path, *, metrics: Sequence[str] = ("auc", "log_loss")
) -> Path:
    """One bar chart per metric, rows as bars, seed std as error bars (baselines hatched)."""
    path = Path(path)
    fig = Figure(figsize=(3.2 + 0.9 * len(rows), 3.6 * len(metrics)))
    names = [r.name for r in rows]
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(len(metrics), 1, i + 1)
        means = [r.get(metric).mean for r in rows]
        stds = [r.get(metric).std if r.get(metric).n > 1 else 0.0 for r in rows]
        finite = [m if math.isfinite(m) else 0.0 for m in means]
        bars = ax.bar(names, finite, yerr=[s if math.isfinite(s) else 0.0 for s in stds], capsize=4,
                      color=["C0" if r.kind == "variant" else "0.75" for r in rows])  # fmt: skip
        for bar, r in zip(bars, rows):
            if r.kind == "baseline":
                bar.set_hatch("//")
        if metric == "log_loss":  # the majority baseline's log loss dwarfs everything: cap the axis
            variant = [m for m, r in zip(finite, rows) if r.kind == "variant"] or finite
            top = max(max(variant) * 2.0, max((m for m, r in zip(finite, rows) if r.name == "prior"), default=0) * 1.2)
            ax.set_ylim(0, top or 1.0)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} (mean ± std over seeds)")
        ax.tick_params(axis="x", labelrotation=20)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    return path
