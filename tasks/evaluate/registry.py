"""Which trained models enter the registry, which become ``champion``, and their model card.

Pure functions of the run's own numbers (no MLflow here): ``flows/train.py`` reads the
current champion's version tags, asks :func:`prior_gate` and :func:`champion_verdict`, and
writes :func:`model_card` as the model version's description.

A model is registered only if, at its best checkpoint, the monitored val metric beats the
prior by more than ``min_improvement``, both measured **cross-fitted** (:func:`gate_numbers`):
val's groups are split in two halves (stratified by label), each half's clips calibrated by the Platt map fitted on
the other half and the prior for each half is the other half's FAKE fraction. So the number
that decides was not fitted on the clips that judge it (a map fitted on all of val scores val
in-sample: its intercept alone learns val's base rate and "beats" a prior that may not), and
model and prior are given the same information. The decision rests on the point difference;
a group-bootstrap interval of it is stated beside it. A model becomes ``champion`` only if it
also beats the current champion on the same number measured on the same val set (same
manifest digest): numbers from another val set are not comparable, so the alias then stays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.evaluate import calibration as C
from tasks.evaluate import metrics as M
from tasks.evaluate.markdown import number
from tasks.evaluate.metric_names import (
    BEST_VAL, HANDMADE, HANDMADE_LABELS, SHORT_LABELS, TEST, baseline_key, key, parse_monitor)  # fmt: skip

REGISTER_IF = ("beats_prior", "always", "never")
# model version tags the champion comparison reads back
TAG_MONITOR, TAG_VALUE, TAG_DATA = "monitor", "monitor_value", "manifest_sha256"
_CARD_METRICS = tuple((m, SHORT_LABELS[m]) for m in ("auc", "log_loss", "balanced_accuracy", "f1"))


def better(a: float, b: float, mode: str, margin: float = 0.0) -> bool:
    """``a`` beats ``b`` by more than ``margin`` (lower is better for ``min``); NaN never beats."""
    if math.isnan(a) or math.isnan(b):
        return False
    return a < b - margin if mode == "min" else a > b + margin


@dataclass(frozen=True)
class GateNumbers:
    """What the gate decides on: the model's and the prior's monitored metric on val, cross-fitted, and a
    group-bootstrap interval of their difference (model - prior)."""

    value: float
    prior: float
    interval: tuple[float, float] = (math.nan, math.nan)
    groups: int = 0  # groups the interval resamples
    note: str = ""  # how the numbers were made, and any half whose calibration fell back to the identity


@dataclass(frozen=True)
class Gate:
    """The registration decision and the numbers behind it."""

    register: bool
    metric: str  # the monitored metric, e.g. val_video_log_loss
    value: float  # the model's, at its best checkpoint, cross-fitted
    prior: float  # the prior's, on the same split and level, cross-fitted
    reason: str
    interval: tuple[float, float] = (math.nan, math.nan)  # of value - prior, group bootstrap

    def headline(self) -> str:
        """One line: the decision, its number with its interval, its reason."""
        lo, hi = self.interval
        spread = ("no interval: val holds too few groups to resample" if math.isnan(lo) or math.isnan(hi)
                  else f"95 % group-bootstrap interval [{lo:+.4f}, {hi:+.4f}]")  # fmt: skip
        return (f"**Registry gate: {'register' if self.register else 'refuse'}.** Cross-fitted val {self.metric}: "
                f"model {self.value:.4f}, prior {self.prior:.4f}, difference {self.value - self.prior:+.4f} "
                f"({spread}). Reason: {self.reason}.")  # fmt: skip


def gate_numbers(y, p, video_ids: Sequence[str], groups: Sequence[str], monitor: str, *, calibrate: bool = True,
                 seed: int = 0, n_bootstrap: int = 200, faces=None, train_prior: float = 0.5,
                 out_of_fold: str | None = None) -> GateNumbers:  # fmt: skip
    """The monitored metric of the model and of the prior on val clips ``y``, ``p`` (N,) (uncalibrated P(FAKE),
    ``groups`` (N,) per clip), 2-fold cross-fitted by group (:func:`tasks.evaluate.calibration.cross_fit`),
    and a ``n_bootstrap`` group-bootstrap 95 % interval of model - prior (NaN with fewer than two groups: one
    group resampled is one number, not an interval). ``faces`` (N,): each clip's face (a video scores as its
    most fake face, :func:`tasks.evaluate.metrics.aggregate_by_video`). ``train_prior``: the FAKE fraction
    the report's prior baseline uses; each half's prior shrinks towards it (:func:`~C.cross_fit`), so a val
    of one group compares the model with the report's prior, not with a coin flip. ``out_of_fold``: ``p`` is
    already scored out of fold on the same halves (how, in words: a fitted read-out's join,
    :mod:`tasks.train.readout`), so no calibration is fitted on top of it."""
    level, metric = parse_monitor(monitor)
    y = np.asarray(y, dtype=np.int64)
    fit = C.cross_fit(y, C.to_logits(p), groups, enabled=calibrate and not out_of_fold, seed=seed, prior=train_prior)
    ids, ym, pm = np.asarray(video_ids), y, fit.p
    pp, g = fit.prior, np.asarray([str(x) for x in groups])
    if level == "video":  # a video's clips share a group, hence a half and its prior
        first = {v: i for i, v in reversed(list(enumerate(ids)))}
        vids, ym, pm = M.aggregate_by_video(ids, y, fit.p, faces=faces)
        _, _, pp = M.aggregate_by_video(ids, y, fit.prior, faces=faces)
        g = np.asarray([g[first[v]] for v in vids])

    def diff(idx: np.ndarray) -> float:
        return M.binary_metrics(ym[idx], pm[idx])[metric] - M.binary_metrics(ym[idx], pp[idx])[metric]

    value, prior = M.binary_metrics(ym, pm)[metric], M.binary_metrics(ym, pp)[metric]
    n_groups = len(set(g.tolist()))
    interval = (math.nan, math.nan)
    if n_groups >= 2:
        interval = M.percentile_interval(M.group_bootstrap(diff, g, n_resamples=n_bootstrap, seed=seed))
    if n_groups < 2:  # one half is empty: naming its calibration and the other's would read as a 2-fold fit
        note = (f"{n_groups} val group: nothing to cross-fit, the prior is the training prior {train_prior:.3f} "
                f"and the model's P(FAKE) is uncalibrated")  # fmt: skip
    else:
        fallbacks = [out_of_fold] if out_of_fold else [f"half {h}: {why}" for h, why in enumerate(fit.reasons) if why]
        note = "2-fold cross-fitted by group" + (f" ({'; '.join(fallbacks)})" if fallbacks else "")
    return GateNumbers(float(value), float(prior), interval, n_groups, note)


def prior_gate(numbers: GateNumbers, monitor: str, mode: str, *, register_if: str = "beats_prior",
               min_improvement: float = 0.0) -> Gate:  # fmt: skip
    """Register only a model that beats the prior on val, both cross-fitted (:func:`gate_numbers`)."""
    if register_if not in REGISTER_IF:
        raise ValueError(f"register_if must be one of {REGISTER_IF}, got {register_if!r}")
    value, prior = numbers.value, numbers.prior
    beats = better(value, prior, mode, min_improvement)
    verdict = "beats" if beats else "does not beat"
    why = (f"{monitor} {value:.4f} {verdict} the prior's {prior:.4f} (min_improvement {min_improvement:g}; "
           f"{numbers.note or 'as given'})")  # fmt: skip
    if register_if == "always":
        return Gate(True, monitor, value, prior, f"register_if=always; {why}", numbers.interval)
    if register_if == "never":
        return Gate(False, monitor, value, prior, f"register_if=never; {why}", numbers.interval)
    return Gate(beats, monitor, value, prior, why, numbers.interval)


def champion_verdict(gate: Gate, mode: str, manifest_sha256: str,
                     champion_tags: Mapping[str, str] | None) -> tuple[bool, str]:  # fmt: skip
    """(promote, why): a registered model takes ``champion`` if none exists or it beats the holder."""
    if not gate.register:
        return False, "not registered"
    if champion_tags is None:
        return True, "no champion yet"
    if champion_tags.get(TAG_MONITOR) != gate.metric or champion_tags.get(TAG_DATA) != manifest_sha256:
        return False, (f"the champion was measured on {champion_tags.get(TAG_MONITOR)} of manifest "
                       f"{str(champion_tags.get(TAG_DATA))[:12]}, not comparable; move the alias by hand")  # fmt: skip
    theirs = float(champion_tags.get(TAG_VALUE, "nan"))
    if better(gate.value, theirs, mode):
        return True, f"{gate.metric} {gate.value:.4f} beats the champion's {theirs:.4f}"
    return False, f"{gate.metric} {gate.value:.4f} does not beat the champion's {theirs:.4f}"


# MLflow's registry page renders a description's tables with no cell padding ("0.6670.405"): every
# cell after the first opens with an em space. An entity, because the UI's markdown converter trims
# literal (also non-breaking) whitespace from cells; GitHub and Prefect show it as a space too.
CELL_PAD = "&emsp;"


def card_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "---:") -> list[str]:
    """A GFM table whose cells stay apart in MLflow's UI: the first column left-aligned, the rest ``align``."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join([cells[0], *(f"{CELL_PAD}{c}" for c in cells[1:])]) + " |"

    return [line(header), "|---|" + f"{align}|" * (len(header) - 1), *(line(r) for r in rows)]


def _metric_table(metrics: Mapping[str, float], split: str) -> list[str]:
    """Model / prior / majority rows of one split (best_val or test), video level, and the hand-made statistics'
    (their AUC: no probability, no log loss) when the run measured them."""
    rows = []
    for who, baseline in (("model", None), ("prior baseline", "prior"), ("majority baseline", "majority")):
        names = [key(split, "video", m) if baseline is None else baseline_key(split, "video", baseline, m)
                 for m, _ in _CARD_METRICS]  # fmt: skip
        rows.append([who, *(number(metrics.get(n)) for n in names)])
    for name in HANDMADE:
        names = [baseline_key(split, "video", name, m) for m, _ in _CARD_METRICS]
        if names[0] in metrics:
            rows.append([HANDMADE_LABELS[name], *(number(metrics.get(n)) for n in names)])
    return card_table(["", *(label for _, label in _CARD_METRICS)], rows)


def model_card(*, gate: Gate, data: str, manifest_sha256: str, dataset: Mapping[str, Mapping[str, int]],
               val_metrics: Mapping[str, float], test_metrics: Mapping[str, float], threshold: float | None,
               threshold_criterion: str, preprocess: Mapping[str, Any] | None, model: Mapping[str, Any],
               links: Mapping[str, str]) -> str:  # fmt: skip
    """Markdown for the model version's description: data, metrics with baselines, threshold, preprocessing."""
    split_rows = [[s, str(d.get("videos_real", 0)), str(d.get("videos_fake", 0)), str(d.get("groups", 0))]
                  for s, d in dataset.items()]  # fmt: skip
    thr = ("0.5 (val had one class: no threshold could be chosen)" if threshold is None
           else f"{threshold:.4f} (maximises {threshold_criterion} on val videos)")  # fmt: skip
    pre = preprocess or {}
    pre_keys = (
        "face_size",
        "frames_per_clip",
        "clip_fps",
        "max_clips",
        "face_margin",
        "min_face_frac",
        "require_audio",
    )
    lines = [
        "# AVFF deepfake detector",
        "",
        gate.headline(),
        "",
        *[f"- {name}: {url}" for name, url in links.items()],
        "",
        "## Data",
        f"`{data}` (manifest sha256 `{manifest_sha256[:16]}`), videos per split:",
        "",
        *card_table(["split", "REAL", "FAKE", "groups"], split_rows),
        "",
        "## Metrics (video level) against the baselines",
        "Prior baseline: every video gets the training FAKE fraction; majority: the training majority class; "
        "hand-made statistics (`tasks/evaluate/handmade.py`, no learning): a one-line number of each clip, "
        "ranked (AUC only).",
        "",
        "val, at the best checkpoint:",
        "",
        *_metric_table(val_metrics, BEST_VAL),
        "",
        "test:",
        "",
        *_metric_table(test_metrics, TEST),
        "",
        "## Decision threshold",
        f"P(FAKE) >= {thr} means FAKE; `avff predict` prints this verdict.",
        "",
        "## Preprocessing (ingest's, repeated by `avff predict`)",
        *([f"- {k}: {pre[k]}" for k in pre_keys if k in pre] or ["- not recorded (ingest_config.json missing)"]),
        "",
        "## Model",
        *[f"- {k}: {model[k]}" for k in ("preset", "fusion", "img_size", "num_frames", "best_epoch") if k in model],
    ]
    return "\n".join(lines) + "\n"
