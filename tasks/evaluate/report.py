"""A markdown training report whose every sentence is computed from the run's own numbers.

Nothing here is a canned verdict: diagnoses, warnings and recommendations are each triggered
by a measured condition against a named threshold below, and quote the numbers that fired it.
The flow builds :class:`ReportInputs` and logs the returned text (e.g. ``mlflow.log_text``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage.shard_schema import FAKE
from tasks.evaluate import metric_names as N
from tasks.evaluate.calibration import Calibration
from tasks.evaluate.markdown import number
from tasks.evaluate.registry import Gate
from tasks.evaluate.metrics import all_fake_f1, bootstrap_auc_ci

# Overfitting: val loss ends >= 10% above its minimum while train loss falls >= 5% after it.
OVERFIT_MIN_VAL_RISE = 0.10
OVERFIT_MIN_TRAIN_FALL = 0.05
# Underfitting: train loss falls < 5% from the first to the lowest epoch of the stage.
UNDERFIT_MAX_TRAIN_FALL = 0.05
# Fewer epochs than this give no curve diagnosis (one rise is not a trend).
MIN_EPOCHS_TO_DIAGNOSE = 3
# A split whose majority class exceeds this fraction is called imbalanced.
IMBALANCE_MAJORITY = 0.70
# |model F1 - all-FAKE F1| at or below this: the F1 says nothing the labels did not.
F1_EQUAL_TOL = 0.005
# Val AUC (best epoch) above test AUC by more than this: a val/test shift worth a look.
VAL_TEST_AUC_GAP = 0.05
# The model "beats" a baseline's log loss only by more than float noise.
LOG_LOSS_TOL = 1e-6
CI_LEVEL = 0.95

_LEVELS = ("clip", "video")
_TABLE_METRICS = tuple((m, N.LABELS[m]) for m in N.METRICS)
_VAL_VIDEO_AUC = N.key(N.VAL, "video", "auc")
_EPOCH_COLUMNS = (
    ("train_loss", "train loss"),
    (N.VAL_LOSS, "val loss"),
    *((N.key(N.VAL, "video", m), f"val {N.LABELS[m]}") for m in ("auc", "log_loss", "f1")),
    ("lr", "lr"),
)


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report reads; all of it produced by the run.

    history: one dict per epoch, keys like epoch, stage, train_loss, val_loss, val_video_auc,
        val_video_log_loss, val_video_f1, lr (missing keys are shown as n/a).
    dataset: split -> :func:`split_stats` dict (videos_real, videos_fake, clips_real,
        clips_fake, groups).
    config: the run's configuration (nested dicts allowed), shown flattened and never read.
    patience / max_epochs: the early-stopping settings the run trained with (None: not stated).
    test: the output of :func:`tasks.evaluate.metrics.evaluate_predictions` on the test split.
    best_epoch / monitor / monitor_mode: the checkpoint selection rule and its result.
    y_test_video, p_test_video: ``[V]`` video labels and FAKE probabilities, for the CI.
    y_val_video, p_val_video: optional ``[V]`` val arrays for a val AUC CI.
    calibration: the Platt map fitted on val and its effect (None: no calibration section).
    gate: the registry gate's decision, number and reason, the report's first line (None: not stated).
    loader_prior: what one pass of the training loader reads (extra data included) and the FAKE fraction
        of its targets (pseudo-fakes included): the prior of class weights and of the prior baseline.
    readout: the read-out fitted after training (``readout="fitted"``), or why none was (None: not asked for).
    """

    history: list[dict[str, Any]]
    dataset: dict[str, dict[str, int]]
    config: dict[str, Any]
    test: dict[str, dict]
    early_stopped: bool
    best_epoch: int | None
    monitor: str
    y_test_video: np.ndarray
    p_test_video: np.ndarray
    monitor_mode: str = "max"
    y_val_video: np.ndarray | None = None
    p_val_video: np.ndarray | None = None
    title: str = "AVFF training report"
    n_bootstrap: int = 200
    seed: int = 0
    groups_test_video: Sequence[str] | None = None  # ``[V]`` group of each test video: CIs resample groups
    groups_val_video: Sequence[str] | None = None
    patience: int | None = None
    max_epochs: int | None = None
    calibration: Calibration | None = None
    gate: Gate | None = None  # the registry gate's decision (tasks.evaluate.registry), stated first
    loader_prior: tuple[int, float] | None = None  # (clips a training pass reads, expected FAKE fraction of targets)
    readout: ReadoutSummary | None = None


@dataclass(frozen=True)
class ReadoutSummary:
    """What the report says of a read-out fitted after training (:mod:`tasks.train.readout`)."""

    weights: Mapping[str, float]  # part ("fusion", "signals", "probe") -> its weight in the join; {}: not fitted
    train_clips: int = 0  # the texture probe's clips
    val_clips: int = 0  # the join's
    skipped: str | None = None  # why none was fitted


@dataclass(frozen=True)
class CurveDiagnosis:
    """Loss-curve facts of one training stage and the verdict they imply."""

    verdict: str  # "overfitting" | "underfitting" | "neither" | "insufficient"
    stage: str | None
    epochs: list[int] = field(default_factory=list)
    train_first: float = math.nan
    train_last: float = math.nan
    train_min: float = math.nan
    train_fall_total: float = math.nan  # (first - min) / first
    val_min: float = math.nan
    val_min_epoch: int | None = None
    val_last: float = math.nan
    val_rise: float = math.nan  # (last - min) / min
    train_at_val_min: float = math.nan
    train_fall_after_val_min: float = math.nan  # (train at val min - last) / train at val min


def split_stats(video_ids: Sequence[str], labels: Sequence, groups: Sequence[str] | None = None) -> dict[str, int]:
    """Counts of one split from its clips' metadata (labels 0/1 or "REAL"/"FAKE")."""
    y = np.asarray([1 if lab in (1, FAKE) else 0 for lab in labels], dtype=np.int64)
    ids = np.asarray(video_ids)
    video_label = dict(zip(ids.tolist(), y.tolist()))
    stats = {
        "videos_real": sum(1 for v in video_label.values() if v == 0),
        "videos_fake": sum(1 for v in video_label.values() if v == 1),
        "clips_real": int((y == 0).sum()),
        "clips_fake": int((y == 1).sum()),
    }
    if groups is not None:
        stats["groups"] = len(set(groups))
    return stats


def _num(x: Any) -> float:
    if isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool):
        return float(x)
    return math.nan


def _lr(x: Any) -> str:
    v = _num(x)
    return "n/a" if math.isnan(v) else f"{v:.3g}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _signed(x: float, nd: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.{nd}f}"


def _moves(before: float, after: float) -> str:
    """'falls 12.0%' / 'rises 3.1%' from ``before`` to ``after``."""
    if before == 0 or math.isnan(before) or math.isnan(after):
        return "changes by an undefined fraction"
    rel = (after - before) / abs(before)
    if rel == 0:
        return "is unchanged"
    return f"{'falls' if rel < 0 else 'rises'} {_pct(abs(rel))}"


def _flat(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def _cell(v: Any, width: int = 60) -> str:
    s = str(v).replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _epoch(row: Mapping, i: int) -> int:
    return int(row.get("epoch", i))


def diagnose_curves(history: Sequence[Mapping], stage: str | None = None) -> CurveDiagnosis:
    """Over/underfitting of one stage's train/val loss curves (thresholds: module constants).

    ``stage``: diagnose only rows with this ``stage`` (the losses of different stages are not
    comparable); None takes the stage of the last row, or all rows when there is no stage.
    """
    if stage is None and history:
        stage = history[-1].get("stage")
    rows = [
        (_epoch(r, i), _num(r.get("train_loss")), _num(r.get("val_loss")))
        for i, r in enumerate(history)
        if (stage is None or r.get("stage") == stage)
    ]
    rows = [r for r in rows if not (math.isnan(r[1]) or math.isnan(r[2]))]
    if len(rows) < MIN_EPOCHS_TO_DIAGNOSE:
        return CurveDiagnosis("insufficient", stage, [r[0] for r in rows])
    epochs = [r[0] for r in rows]
    train = np.array([r[1] for r in rows])
    val = np.array([r[2] for r in rows])
    k = int(np.argmin(val))
    train_fall_total = (train[0] - train.min()) / train[0] if train[0] else math.nan
    val_rise = (val[-1] - val[k]) / val[k] if val[k] else math.nan
    train_fall_after = (train[k] - train[-1]) / train[k] if train[k] else math.nan
    overfit = k < len(val) - 1 and val_rise >= OVERFIT_MIN_VAL_RISE and train_fall_after >= OVERFIT_MIN_TRAIN_FALL
    underfit = train_fall_total < UNDERFIT_MAX_TRAIN_FALL
    verdict = "overfitting" if overfit else "underfitting" if underfit else "neither"
    return CurveDiagnosis(
        verdict=verdict,
        stage=stage,
        epochs=epochs,
        train_first=float(train[0]),
        train_last=float(train[-1]),
        train_min=float(train.min()),
        train_fall_total=float(train_fall_total),
        val_min=float(val[k]),
        val_min_epoch=epochs[k],
        val_last=float(val[-1]),
        val_rise=float(val_rise),
        train_at_val_min=float(train[k]),
        train_fall_after_val_min=float(train_fall_after),
    )


def _loader_line(loader_prior: tuple[int, float] | None) -> list[str]:
    if loader_prior is None:
        return []
    n, frac = loader_prior
    return [f"The training loader reads {n} clips a pass (extra_train_data included); the FAKE fraction of its "
            f"targets is {number(frac)} (pseudo-fakes included, in expectation): the training prior of class weights "
            f"and of the prior baseline.", ""]  # fmt: skip


def _dataset_section(
    dataset: Mapping[str, Mapping[str, int]], loader_prior: tuple[int, float] | None = None
) -> list[str]:
    lines = ["## Dataset", ""]
    if not dataset:
        return lines + ["No dataset statistics were passed to the report.", ""]
    rows, sentences = [], []
    for split, s in dataset.items():
        vr, vf = s.get("videos_real"), s.get("videos_fake")
        cr, cf = s.get("clips_real"), s.get("clips_fake")
        v_frac = vf / (vr + vf) if vr is not None and vf is not None and vr + vf else math.nan
        c_frac = cf / (cr + cf) if cr is not None and cf is not None and cr + cf else math.nan
        g = s.get("groups")
        rows.append(
            [
                split,
                str(vr),
                str(vf),
                str(cr),
                str(cf),
                number(v_frac),
                number(c_frac),
                str(g if g is not None else "n/a"),
            ]
        )
        text = f"{split}: {(vr or 0) + (vf or 0)} videos ({vr} REAL, {vf} FAKE; FAKE fraction {number(v_frac)})"
        text += f", {(cr or 0) + (cf or 0)} clips ({cr} REAL, {cf} FAKE; FAKE fraction {number(c_frac)})"
        if g is not None:
            text += f", {g} groups"
        sentences.append(f"- {text}.")
    lines += _table(
        [
            "split",
            "videos REAL",
            "videos FAKE",
            "clips REAL",
            "clips FAKE",
            "FAKE frac (videos)",
            "FAKE frac (clips)",
            "groups",
        ],
        rows,
    )
    return lines + [""] + sentences + [""] + _loader_line(loader_prior)


def _config_section(config: Mapping[str, Any]) -> list[str]:
    flat = _flat(config)
    lines = ["## Configuration", ""]
    if not flat:
        return lines + ["No configuration was passed to the report.", ""]
    return lines + _table(["key", "value"], [[_cell(k), _cell(v)] for k, v in flat.items()]) + [""]


def _history_section(run: ReportInputs) -> list[str]:
    lines = ["## Training", ""]
    if not run.history:
        return lines + ["The history is empty: no epoch was recorded.", ""]
    epochs = [_epoch(r, i) for i, r in enumerate(run.history)]
    lines += _epoch_table(run) + [""]
    lines.append(_epochs_text(run.history, epochs))
    lines += _best_epoch_lines(run, epochs)
    lines.append(_early_stopping_line(run, epochs))
    return lines + [""]


def _epoch_table(run: ReportInputs) -> list[str]:
    """One row per epoch: _EPOCH_COLUMNS, the kept epoch in bold."""
    has_stage = any("stage" in r for r in run.history)
    header = ["epoch"] + (["stage"] if has_stage else []) + [name for _, name in _EPOCH_COLUMNS]
    rows = []
    for i, r in enumerate(run.history):
        ep = _epoch(r, i)
        cells = [f"**{ep}** (best)" if ep == run.best_epoch else str(ep)]
        if has_stage:
            cells.append(str(r.get("stage", "")))
        cells += [_lr(r.get(k)) if k == "lr" else number(_train_loss(r) if k == "train_loss" else r.get(k))
                  for k, _ in _EPOCH_COLUMNS]  # fmt: skip
        rows.append(cells)
    return _table(header, rows)


def _train_loss(row: Mapping) -> Any:
    """The epoch's training loss: stage 1 logs its total as ``pretrain_loss``, stage 2 as ``train_loss``."""
    return row.get("train_loss", row.get("pretrain_loss"))


def _epochs_text(history: Sequence[Mapping], epochs: list[int]) -> str:
    """How many epochs ran, and the epoch span of each stage."""
    text = f"Training recorded {len(history)} epochs ({epochs[0]}–{epochs[-1]})"
    if any("stage" in r for r in history):
        spans: list[list] = []
        for ep, r in zip(epochs, history):
            st = r.get("stage")
            if spans and spans[-1][0] == st:
                spans[-1][2] = ep
            else:
                spans.append([st, ep, ep])
        text += " in stages " + ", ".join(f"{st} (epochs {a}–{b})" for st, a, b in spans)
    return text + "."


def _best_epoch_lines(run: ReportInputs, epochs: list[int]) -> list[str]:
    """The kept epoch, its monitored value, and whether it is the extreme of the history."""
    best_row = next((r for ep, r in zip(epochs, run.history) if ep == run.best_epoch), None)
    if run.best_epoch is None or best_row is None:
        return [f"No best epoch matching the history was reported (monitor {run.monitor})."]
    v = _num(best_row.get(run.monitor))
    stage_txt = f" (stage {best_row['stage']})" if "stage" in best_row else ""
    lines = [f"The checkpoint kept is epoch {run.best_epoch}{stage_txt}, selected on {run.monitor} "
             f"(mode {run.monitor_mode}) = {number(v)}."]  # fmt: skip
    values = [(ep, _num(r.get(run.monitor))) for ep, r in zip(epochs, run.history)]
    values = [(ep, x) for ep, x in values if not math.isnan(x)]
    if not values:
        return lines
    word = "maximum" if run.monitor_mode == "max" else "minimum"
    ext_ep, ext_v = (max if run.monitor_mode == "max" else min)(values, key=lambda t: t[1])
    if ext_ep == run.best_epoch or ext_v == v:
        return lines + [f"That is the {word} of {run.monitor} over the {len(values)} epochs that report it."]
    return lines + [f"Note: the {word} of {run.monitor} in the history is {number(ext_v)} at epoch {ext_ep}, "
                    f"not at the kept epoch {run.best_epoch} (a different stage or selection rule?)."]  # fmt: skip


def _early_stopping_line(run: ReportInputs, epochs: list[int]) -> str:
    if run.early_stopped:
        after = (
            f", {epochs[-1] - run.best_epoch} epochs after the best epoch {run.best_epoch}"
            if run.best_epoch is not None
            else ""
        )
        pat = f" (patience {run.patience})" if run.patience is not None else ""
        return f"Early stopping triggered after epoch {epochs[-1]}{after}{pat}."
    if run.max_epochs is None:
        return f"Early stopping did not trigger: training ran {len(run.history)} epochs."
    # max_epochs caps the stage early stopping watches (the last one); earlier stages ran their own count
    last = run.history[-1].get("stage")
    ran = sum(r.get("stage") == last for r in run.history)
    before = len(run.history) - ran
    stage = f" {last}" if last is not None and before else ""
    after = f", after {before} epochs of {_stage_names(run.history[:before])}" if before else ""
    return f"Early stopping did not trigger: training ran {ran}{stage} epochs of max_epochs {run.max_epochs}{after}."


def _stage_names(history: Sequence[Mapping]) -> str:
    return " and ".join(dict.fromkeys(str(r.get("stage")) for r in history))


def _diagnosis_section(d: CurveDiagnosis) -> list[str]:
    lines = ["## Curve diagnosis", ""]
    stage = f" of stage {d.stage}" if d.stage is not None else ""
    if d.verdict == "insufficient":
        return lines + [
            f"**Diagnosis: insufficient.** Only {len(d.epochs)} epochs{stage} carry both train and val loss; "
            f"at least {MIN_EPOCHS_TO_DIAGNOSE} are needed to read a trend.",
            "",
        ]
    lowest = (
        ""
        if d.train_min == d.train_last
        else (f" (its lowest, {number(d.train_min)}, is {_pct(d.train_fall_total)} below the first epoch)")
    )
    lines.append(
        f"Over epochs {d.epochs[0]}–{d.epochs[-1]}{stage}, train loss {_moves(d.train_first, d.train_last)} "
        f"from {number(d.train_first)} to {number(d.train_last)}{lowest}."
    )
    if d.val_min_epoch == d.epochs[-1]:
        lines.append(
            f"Val loss is lowest at the last epoch, {d.val_min_epoch} ({number(d.val_min)}): it has not risen."
        )
    else:
        lines.append(
            f"Val loss reaches its minimum {number(d.val_min)} at epoch {d.val_min_epoch} and ends at {number(d.val_last)}, "
            f"{_pct(d.val_rise)} above that minimum; from epoch {d.val_min_epoch} on, train loss "
            f"{_moves(d.train_at_val_min, d.train_last)} ({number(d.train_at_val_min)} → {number(d.train_last)})."
        )
    lines.append(f"**Diagnosis: {d.verdict}**: {_diagnosis_reason(d)}.")
    return lines + [""]


def _diagnosis_reason(d: CurveDiagnosis) -> str:
    """Why the verdict is what it is: the measured changes against their thresholds."""
    if d.verdict == "overfitting":
        return (
            f"val loss rose {_pct(d.val_rise)} (threshold {_pct(OVERFIT_MIN_VAL_RISE)}) above its minimum at "
            f"epoch {d.val_min_epoch} while train loss kept falling by {_pct(d.train_fall_after_val_min)} "
            f"(threshold {_pct(OVERFIT_MIN_TRAIN_FALL)})"
        )
    if d.verdict == "underfitting":
        return (
            f"train loss fell only {_pct(d.train_fall_total)} over the stage "
            f"(threshold {_pct(UNDERFIT_MAX_TRAIN_FALL)})"
        )
    return (
        f"val loss ends {_pct(d.val_rise)} above its minimum (overfitting needs {_pct(OVERFIT_MIN_VAL_RISE)} "
        f"with train still falling {_pct(OVERFIT_MIN_TRAIN_FALL)}), and train loss fell {_pct(d.train_fall_total)} "
        f"(underfitting below {_pct(UNDERFIT_MAX_TRAIN_FALL)})"
    )


def _auc_ci(y, p, run: ReportInputs, groups: Sequence[str] | None = None) -> tuple[float, float]:
    """The bootstrap AUC interval; (nan, nan) from one group: every resample is that group, so the
    "interval" is the point estimate twice and says nothing about the noise."""
    if groups is not None and len(set(groups)) < 2:
        return math.nan, math.nan
    return bootstrap_auc_ci(y, p, groups=groups, n_resamples=run.n_bootstrap, alpha=1 - CI_LEVEL, seed=run.seed)


def _ci_undefined_why(y, groups: Sequence[str] | None) -> str:
    """Why a bootstrap AUC interval is undefined, in words."""
    n = len(np.asarray(y))
    if groups is not None and len(set(groups)) < 2:
        return f"{n} videos in {len(set(groups))} group: resampling one group cannot show the noise"
    return f"{n} videos, a single class or too few resamples with both"


def _resampled(run: ReportInputs, groups: Sequence[str] | None, n_videos: int) -> str:
    """What the bootstrap resampled: groups (a REAL and its fakes together) when known, else videos."""
    if groups is None:
        return f"{n_videos} videos"
    return f"{len(set(groups))} groups of {n_videos} videos (a REAL and its fakes resampled together)"


def _test_section(run: ReportInputs, ci: tuple[float, float]) -> tuple[list[str], list[str]]:
    """Lines of the test section and the warnings it raised."""
    lines, warns = ["## Test metrics", ""], []
    for level in _LEVELS:
        if run.test.get(level) is None:
            continue
        level_lines, level_warns = _level_lines(run.test, level)
        lines += level_lines
        warns += level_warns
    ci_lines, ci_warns = _test_ci_lines(run, ci)
    return lines + ci_lines + [""], warns + ci_warns


_PART_NAMES = {"fusion": "the fusion head's logit", "signals": "the signal head's logit",
               "probe": "the texture probe's logit"}  # fmt: skip


def _readout_section(r: ReadoutSummary) -> list[str]:
    """The fitted join of the model's logits (or why the model's own sum scores)."""
    lines = ["## Read-out", ""]
    if r.skipped is not None:
        return lines + [f"`readout=\"fitted\"` was asked for and nothing was fitted: {r.skipped}. The model's "
                        f"own join of its logits scores.", ""]  # fmt: skip
    terms = ", ".join(f"{_PART_NAMES[k]} {w:+.3f}" for k, w in r.weights.items())
    probe = (f"a logistic regression on the texture branch's features of {r.train_clips} train clips (the texture "
             f"probe) and " if "probe" in r.weights else "")  # fmt: skip
    return lines + [
        f"The model's logit is not the sum its heads trained with: after training, with every weight frozen, "
        f"{probe}a logistic join fitted on {r.val_clips} val clips weigh the parts (avff_model/readout.py): "
        f"{terms} (weights on the raw logits). Every val and test number above uses it; val numbers are in-sample "
        f"for the join's {len(r.weights) + 1} parameters (the registry gate's number refits it on each half of "
        f"val and scores the other).",
        "",
    ]


def _calibration_section(cal: Calibration) -> list[str]:
    """Platt scaling: the fitted slope and intercept (or why the identity) and clip log loss / ECE before
    and after, per split."""
    lines = ["## Calibration", ""]
    a, b = cal.platt.slope, cal.platt.intercept
    if cal.reason is not None:
        lines.append(f"Slope 1, intercept 0 (P(FAKE) left as the model outputs it): {cal.reason}.")
    else:
        n_val = cal.splits["val"].n
        confidence = ("over-confident: a slope < 1 softens them" if a < 1 else
                      "under-confident: a slope > 1 sharpens them" if a > 1 else "as sharp as they should be")  # fmt: skip
        shift = (f"an intercept of {b:+.3f} moves the base rate {'towards FAKE' if b > 0 else 'towards REAL'} "
                 f"(the training loader's FAKE fraction differs from val's)" if b != 0 else "no base-rate shift")  # fmt: skip
        lines.append(
            f"Platt scaling fitted on {n_val} val clips (P(FAKE) = sigmoid({a:.3f} · logit {b:+.3f}), minimising "
            f"the val log loss): the raw scores were {confidence}; {shift}. Every val and test metric above, "
            f"and the val threshold, use the calibrated P(FAKE)."
        )
    rows = [[split + (" (fitted here)" if split == "val" and cal.reason is None else ""), str(c.n),
             number(c.nll_before), number(c.nll_after), number(c.ece_before), number(c.ece_after)]
            for split, c in cal.splits.items()]  # fmt: skip
    lines += [""] + _table(["clip level", "clips", "log loss before", "after", "ECE before", "after"], rows) + [""]
    test = cal.splits.get("test")
    if test is not None and cal.reason is None:
        lines.append(f"On test, calibration moves the clip log loss {_signed(test.nll_after - test.nll_before)} "
                     f"and the ECE {_signed(test.ece_after - test.ece_before)}; val numbers after it are "
                     f"in-sample for the map (two parameters; the registry gate's number is cross-fitted).")  # fmt: skip
        lines.append("")
    return lines


def _level_table(m: Mapping, at_val: Mapping | None, prior: Mapping | None, major: Mapping | None) -> list[str]:
    """Every _TABLE_METRICS of one level: the model at 0.5 (and at the val threshold) beside both baselines."""
    header = ["metric", "model @0.5"]
    if at_val:
        header.append(f"model @{number(at_val['threshold'])} (val)")
    header += ["prior baseline", "majority baseline", "model − prior"]
    rows = []
    for key, name in _TABLE_METRICS:
        v = _num(m.get(key))
        row = [name, number(v)]
        if at_val:
            row.append(number(at_val.get(key)))
        pv = _num(prior.get(key)) if prior else math.nan
        row += [number(pv), number(major.get(key)) if major else "n/a", _signed(v - pv)]
        rows.append(row)
    return _table(header, rows)


def _baseline_lines(
    level: str, m: Mapping, prior: Mapping | None, major: Mapping | None
) -> tuple[list[str], list[str]]:
    """The model against the prior (and majority) baseline in words; a warning when it does not beat the prior."""
    auc, ll = _num(m.get("auc")), _num(m.get("log_loss"))
    if not prior:
        return [f"AUC {number(auc)}, log loss {number(ll)}; no baselines were computed (no train labels passed)."], []
    p_auc, p_ll = _num(prior.get("auc")), _num(prior.get("log_loss"))
    text = (
        f"AUC {number(auc)} vs {number(p_auc)} for the prior baseline ({_signed(auc - p_auc)}); "
        f"log loss {number(ll)} vs {number(p_ll)} for the prior ({_signed(ll - p_ll)}, lower is better)"
    )
    if major:
        text += (
            f" and {number(major.get('log_loss'))} for the majority baseline; accuracy {number(m.get('accuracy'))} "
            f"vs {number(major.get('accuracy'))} for the majority baseline "
            f"({_signed(_num(m.get('accuracy')) - _num(major.get('accuracy')))})"
        )
    if _beats(ll, p_ll):
        return [text + "."], []
    w = (
        f"{level} log loss {number(ll)} does not beat the prior baseline's {number(p_ll)} "
        f"({_signed(ll - p_ll)}): the model's probabilities are no better than predicting the train "
        f"FAKE fraction for every {level}."
    )
    return [text + ".", f"> **Warning:** {w}"], [w]


def _f1_lines(level: str, m: Mapping, at_val: Mapping | None) -> tuple[list[str], list[str]]:
    """F1 against the all-FAKE predictor's (a caveat when equal), and the metrics at the val threshold."""
    n, n_pos, f1 = _num(m.get("n")), _num(m.get("n_pos")), _num(m.get("f1"))
    f1_all = all_fake_f1(n, n_pos)
    lines, warns = (
        [f"The all-FAKE predictor scores F1 {number(f1_all)} on these labels; the model scores {number(f1)}."],
        [],
    )
    if abs(f1 - f1_all) <= F1_EQUAL_TOL:
        w = (
            f"{level} F1 {number(f1)} equals the all-FAKE predictor's F1 {number(f1_all)} "
            f"(difference {abs(f1 - f1_all):.3f} ≤ {F1_EQUAL_TOL}): with {int(n_pos)} of {int(n)} {level}s FAKE, "
            f"this F1 does not show that the model separates the classes; read AUC and log loss instead."
        )
        warns.append(w)
        lines.append(f"> **Caveat:** {w}")
    if at_val:
        lines.append(
            f"At the validation-chosen threshold {number(at_val.get('threshold'))}, F1 is {number(at_val.get('f1'))} "
            f"and balanced accuracy {number(at_val.get('balanced_accuracy'))} "
            f"(vs {number(f1)} and {number(m.get('balanced_accuracy'))} at 0.5)."
        )
    return lines, warns


def _level_lines(test: Mapping, level: str) -> tuple[list[str], list[str]]:
    """One level's subsection of the test section (``test``: evaluate_predictions output) and its warnings."""
    m, at_val = test[level], test.get(f"{level}@val_threshold")
    b = test.get("baselines", {}).get(level, {})
    prior, major = b.get("prior"), b.get("majority")
    lines = [f"### {level.capitalize()} level ({int(_num(m.get('n')))} {level}s, {int(_num(m.get('n_pos')))} FAKE)", ""]
    lines += _level_table(m, at_val, prior, major) + [""]
    base_lines, base_warns = _baseline_lines(level, m, prior, major)
    f1_lines, f1_warns = _f1_lines(level, m, at_val)
    return lines + base_lines + f1_lines + [""] + _handmade_lines(level, m, b), base_warns + f1_warns


def _handmade_lines(level: str, m: Mapping, base: Mapping) -> list[str]:
    """The model's ranking beside each hand-made statistic's on the same split and level (none when not measured)."""
    measured = [(name, base[name]) for name in N.HANDMADE if base.get(name)]
    if not measured:
        return []
    auc = _num(m.get("auc"))
    rows = [
        ["model", number(auc), number(m.get("average_precision")), number(m.get("eer")), str(int(_num(m.get("n")))), ""]
    ]
    for name, s in measured:
        rows.append([N.HANDMADE_LABELS[name], number(s.get("auc")), number(s.get("average_precision")),
                     number(s.get("eer")), str(int(_num(s.get("n")))), _signed(auc - _num(s.get("auc")))])  # fmt: skip
    header = ["predictor", "AUC", "average precision", "EER", f"{level}s scored", "model − statistic (AUC)"]
    per = "a video scores the mean of its clips, and one whose every clip" if level == "video" else "a clip that"
    return [
        f"Against the hand-made statistics (`tasks/evaluate/handmade.py`, no learning: a one-line number of each "
        f"clip, higher = more FAKE-like; only their ranking means anything; {per} is flat for a statistic is left "
        f"out of its row):",
        "",
        *_table(header, rows),
        "",
    ]


def _test_ci_lines(run: ReportInputs, ci: tuple[float, float]) -> tuple[list[str], list[str]]:
    """The test video AUC with its bootstrap interval; a warning when undefined or spanning 0.5."""
    lo, hi = ci
    n_vid = len(np.asarray(run.y_test_video))
    v_auc = _num(run.test.get("video", {}).get("auc"))
    lines = [
        f"Test video AUC {number(v_auc)}, {int(CI_LEVEL * 100)}% bootstrap CI [{number(lo)}, {number(hi)}] "
        f"({run.n_bootstrap} resamples of {_resampled(run, run.groups_test_video, n_vid)}, seed {run.seed})."
    ]
    if math.isnan(lo):
        lines = [f"Test video AUC {number(v_auc)}, no bootstrap CI."]  # "CI [n/a, n/a] (200 resamples ...": none were
        w = f"the test video AUC CI is undefined ({_ci_undefined_why(run.y_test_video, run.groups_test_video)})."
    elif lo <= 0.5 <= hi:
        w = (
            f"the test video AUC CI [{number(lo)}, {number(hi)}] includes 0.5: on {n_vid} videos the AUC {number(v_auc)} "
            f"is within noise of chance."
        )
    else:
        return lines, []
    return lines + [f"> **Warning:** {w}"], [w]


def _beats(log_loss: float, prior_log_loss: float) -> bool:
    return log_loss < prior_log_loss - LOG_LOSS_TOL


def _majority_fraction(stats: Mapping[str, int]) -> tuple[float, str]:
    """(majority-class fraction, which counts it came from) of one split's stats."""
    for unit in ("videos", "clips"):
        r, f = stats.get(f"{unit}_real"), stats.get(f"{unit}_fake")
        if r is not None and f is not None and r + f:
            return max(r, f) / (r + f), f"{unit}: {r} REAL, {f} FAKE"
    return math.nan, ""


Checks = tuple[list[str], list[str]]  # (items that fired, checks that did not fire)


def _curve_checks(run: ReportInputs, d: CurveDiagnosis) -> Checks:
    if d.verdict == "overfitting":
        return [
            f"**Overfitting** (val loss +{_pct(d.val_rise)} from its minimum {number(d.val_min)} at epoch "
            f"{d.val_min_epoch}; train loss −{_pct(d.train_fall_after_val_min)} after it): stronger augmentation, "
            f"more weight decay/dropout, or a smaller patience so training stops nearer epoch {d.val_min_epoch}."
        ], []
    if d.verdict == "underfitting":
        lrs = [_num(r.get("lr")) for r in run.history if not math.isnan(_num(r.get("lr")))]
        lr_txt = f"; lr ranged {_lr(min(lrs))}–{_lr(max(lrs))}" if lrs else ""
        return [
            f"**Underfitting** (train loss fell {_pct(d.train_fall_total)} over epochs {d.epochs[0]}–{d.epochs[-1]}"
            f"{lr_txt}): raise the learning rate or train longer, and check that inputs and labels reach the model."
        ], []
    return [], [f"curve diagnosis {d.verdict}"]


def _imbalance_checks(run: ReportInputs) -> Checks:
    frac, counts = _majority_fraction(run.dataset.get("train", {}))
    if frac > IMBALANCE_MAJORITY:
        return [
            f"**Class imbalance** (train majority class {number(frac)} > {IMBALANCE_MAJORITY}; {counts}): weight "
            f"the loss by class or balance the sampler, and monitor AUC/log loss rather than accuracy/F1."
        ], []
    return [], [] if math.isnan(frac) else [f"train majority class {number(frac)} ≤ {IMBALANCE_MAJORITY}"]


def _ci_checks(run: ReportInputs, test_ci: tuple[float, float], val_ci: tuple[float, float] | None) -> Checks:
    """An interval spanning 0.5 fires; one excluding it passes; an undefined one fires too (it checks nothing)."""
    items, passed = [], []
    for name, ci, y, groups in (("test video", test_ci, run.y_test_video, run.groups_test_video),
                                ("val video", val_ci, run.y_val_video, run.groups_val_video)):  # fmt: skip
        if ci is None:
            continue
        if math.isnan(ci[0]):
            items.append(f"**{name} AUC interval undefined** ({_ci_undefined_why(y, groups)}): the AUC's noise is "
                         f"unknown; evaluate on more groups before drawing conclusions.")  # fmt: skip
            continue
        ci_txt = f"{name} AUC {int(CI_LEVEL * 100)}% CI [{number(ci[0])}, {number(ci[1])}]"
        if ci[0] <= 0.5 <= ci[1]:
            items.append(
                f"**AUC within noise of chance** ({ci_txt} includes 0.5): evaluate on more videos (and train on "
                f"more) before drawing conclusions."
            )
        else:
            passed.append(f"{ci_txt} excludes 0.5")
    return items, passed


def _baseline_checks(run: ReportInputs) -> Checks:
    """Log loss against the prior and F1 against the all-FAKE F1, per level."""
    no_gain, gain, f1_equal, f1_apart = [], [], [], []
    for level in _LEVELS:
        m = run.test.get(level)
        if not m:
            continue
        prior = run.test.get("baselines", {}).get(level, {}).get("prior")
        if prior:
            ll, p_ll = _num(m.get("log_loss")), _num(prior.get("log_loss"))
            (gain if _beats(ll, p_ll) else no_gain).append(f"{level} {number(ll)} vs {number(p_ll)}")
        f1, f1_all = _num(m.get("f1")), all_fake_f1(_num(m.get("n")), _num(m.get("n_pos")))
        (f1_equal if abs(f1 - f1_all) <= F1_EQUAL_TOL else f1_apart).append(f"{level} {number(f1)} vs {number(f1_all)}")
    items, passed = [], []
    if no_gain:
        cal = run.calibration
        fix = (f"even after Platt scaling (slope {cal.platt.slope:.3f}, intercept {cal.platt.intercept:+.3f}): check"
               if cal and cal.reason is None else "calibrate (Platt scaling on val, `calibrate`) and check")  # fmt: skip
        items.append(
            f"**No gain over the prior on log loss** ({'; '.join(no_gain)}): {fix} whether the model learned "
            f"anything beyond the class frequency."
        )
    if gain:
        passed.append(f"log loss below the prior ({'; '.join(gain)})")
    if f1_equal:
        items.append(
            f"**F1 equals the all-FAKE F1** ({'; '.join(f1_equal)}): choose the threshold on val "
            f"(tasks.evaluate.metrics.choose_threshold) and report balanced accuracy."
        )
    if f1_apart:
        passed.append(f"F1 apart from the all-FAKE F1 ({'; '.join(f1_apart)})")
    return items, passed


def _gap_checks(run: ReportInputs) -> Checks:
    """Val video AUC at the kept epoch against test video AUC."""
    best = next((r for i, r in enumerate(run.history) if _epoch(r, i) == run.best_epoch), None)
    val_auc = _num(best.get(_VAL_VIDEO_AUC)) if best else math.nan
    test_auc = _num(run.test.get("video", {}).get("auc"))
    if val_auc - test_auc > VAL_TEST_AUC_GAP:
        return [
            f"**Val/test gap** (val video AUC {number(val_auc)} at epoch {run.best_epoch} vs test {number(test_auc)}, "
            f"gap {number(val_auc - test_auc)} > {VAL_TEST_AUC_GAP}): check the val/test split for source or group "
            f"differences, and that checkpoint selection did not overfit val."
        ], []
    if math.isnan(val_auc - test_auc):
        return [], []
    return [], [f"val AUC {number(val_auc)} minus test AUC {number(test_auc)} ≤ {VAL_TEST_AUC_GAP}"]


def _still_improving_checks(run: ReportInputs) -> Checks:
    if run.history and not run.early_stopped and run.best_epoch == _epoch(run.history[-1], len(run.history) - 1):
        return [
            f"**Still improving** (the best {run.monitor} is at the last epoch {run.best_epoch} and early stopping "
            f"did not trigger): train for more epochs."
        ], []
    return [], []


def _recommendations(
    run: ReportInputs, d: CurveDiagnosis, test_ci: tuple[float, float], val_ci: tuple[float, float] | None
) -> list[str]:
    """Items each fired by a measured condition, then the checks that did not fire."""
    items: list[str] = []
    passed: list[str] = []
    for fired, quiet in (_curve_checks(run, d), _imbalance_checks(run), _ci_checks(run, test_ci, val_ci),
                         _baseline_checks(run), _gap_checks(run), _still_improving_checks(run)):  # fmt: skip
        items += fired
        passed += quiet
    lines = ["## Recommendations", ""]
    if items:
        lines += [f"- {it}" for it in items]
    else:
        lines.append("No check fired.")
    if passed:
        lines += ["", "Checks that did not fire: " + "; ".join(passed) + "."]
    return lines + [""]


def _headline(run: ReportInputs, ci: tuple[float, float]) -> list[str]:
    """The answer first: test video AUC (with its interval) and log loss beside both baselines."""
    m = run.test.get("video")
    if not m:
        return ["No test videos were scored.", ""]
    b = run.test.get("baselines", {}).get("video", {})
    prior, major = b.get("prior") or {}, b.get("majority") or {}
    auc, ll, p_ll = _num(m.get("auc")), _num(m.get("log_loss")), _num(prior.get("log_loss"))
    rows = [
        [
            "AUC",
            f"{number(auc)} "
            + ("(interval undefined)" if math.isnan(ci[0]) else f"[{number(ci[0])}, {number(ci[1])}]"),
            number(prior.get("auc")),
            number(major.get("auc")),
        ],
        ["log loss", number(ll), number(p_ll), number(major.get("log_loss"))],
    ]
    if math.isnan(p_ll):
        verdict = "no prior baseline was computed"
    elif _beats(ll, p_ll):
        verdict = f"the model **beats** the prior's log loss by {number(p_ll - ll)}"
    else:
        verdict = f"the model **does not beat** the prior's log loss ({_signed(ll - p_ll)})"
    if math.isnan(ci[0]):  # the table says "interval undefined": the line above it says why, not how it was made
        spread = f"no AUC interval ({_ci_undefined_why(run.y_test_video, run.groups_test_video)})"
    else:
        spread = (f"AUC interval: {int(CI_LEVEL * 100)} % bootstrap over "
                  f"{'groups (a REAL and its fakes together)' if run.groups_test_video is not None else 'videos'}")  # fmt: skip
    return (
        [
            f"**Test, video level ({int(_num(m.get('n')))} videos, {int(_num(m.get('n_pos')))} FAKE):** {verdict}; "
            f"{spread}.",
            "",
        ]
        + _table(["test video", "model", "prior baseline", "majority baseline"], rows)
        + [""]
    )


def write_training_report(run: ReportInputs) -> str:
    """The markdown report of one training run (see the module docstring)."""
    diagnosis = diagnose_curves(
        run.history,
        stage=next((r.get("stage") for i, r in enumerate(run.history) if _epoch(r, i) == run.best_epoch), None),
    )
    test_ci = _auc_ci(run.y_test_video, run.p_test_video, run, run.groups_test_video)
    val_ci = None
    if run.y_val_video is not None and run.p_val_video is not None:
        val_ci = _auc_ci(run.y_val_video, run.p_val_video, run, run.groups_val_video)
    test_lines, warns = _test_section(run, test_ci)
    lines = (
        [f"# {run.title}", ""] + ([run.gate.headline(), ""] if run.gate is not None else []) + _headline(run, test_ci)
    )
    if warns:
        lines += [f"**{len(warns)} warning(s)**, detailed below:", ""] + [f"- {w}" for w in warns] + [""]
    lines += _dataset_section(run.dataset, run.loader_prior)
    lines += _config_section(run.config)
    lines += _history_section(run)
    lines += _diagnosis_section(diagnosis)
    lines += test_lines
    if val_ci is not None:
        how = (
            f"{run.n_bootstrap} resamples of {_resampled(run, run.groups_val_video, len(np.asarray(run.y_val_video)))}"
        )
        shown = (f"undefined ({_ci_undefined_why(run.y_val_video, run.groups_val_video)})" if math.isnan(val_ci[0])
                 else f"[{number(val_ci[0])}, {number(val_ci[1])}] ({how}, seed {run.seed})")  # fmt: skip
        lines += [f"Val video AUC {int(CI_LEVEL * 100)}% bootstrap CI {shown}.", ""]
    if run.readout is not None:
        lines += _readout_section(run.readout)
    if run.calibration is not None:
        lines += _calibration_section(run.calibration)
    lines += _recommendations(run, diagnosis, test_ci, val_ci)
    return "\n".join(lines)
