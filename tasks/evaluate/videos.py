"""Video-level evaluation of scored videos: overall and per manipulation type, with baselines.

Per manipulation type ``m``, the positives are the fakes of type ``m`` and the negatives are
ALL real videos, so each row answers "does the model separate this kind of fake from reals".
AUC intervals come from a group bootstrap (a REAL and its fakes, or one person's videos,
resampled together: :func:`tasks.evaluate.metrics.group_bootstrap`).

Thresholded numbers (accuracy, detection rate, false-positive rate) use the decision threshold
the caller gives: the model's own, the one ``avff predict`` applies
(:func:`tasks.serve.decision.verdict`), 0.5 for a model without one.

A set of one class (fakes only: "how many of these does it catch?", or reals only) is an
ordinary thing to evaluate: the detection rate (or false-positive rate), mean P(FAKE) and log
loss are defined there, AUC and AP are not; :func:`undefined` names every metric that is not
defined on a group and why, and :func:`loses_to_prior` compares defined numbers only.
Videos without a label (a file with no metadata entry) are scored and listed, never counted.

Beside the model, the baselines a training run reports (``test_baselines_video_*_auc``): the prior's
AUC and the two hand-made statistics of :mod:`tasks.evaluate.handmade` (the mouth's opening against the
loudness, the face's blur), measured on the clips the model scored and aggregated as training does
(:func:`tasks.evaluate.handmade.baseline_metrics`): "the model against a one-line statistic" on the
user's own videos.

The prior baseline needs the FAKE fraction of the videos the model was trained on. It is
never estimated from the evaluated labels (that baseline would know the answer: on a set of
fakes only, P(FAKE) = 1 and a log loss of 0); when it is not known, it is reported as unknown.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from storage.shard_schema import FAKE, DecodedClip
from tasks.evaluate import handmade as H
from tasks.evaluate.metric_names import HANDMADE, HANDMADE_LABELS
from tasks.evaluate.metrics import baselines, binary_metrics, bootstrap_auc_ci
from tasks.evaluate.markdown import number
from tasks.evaluate.metric_names import SHORT_LABELS

REPORTED = ("auc", "average_precision", "log_loss", "accuracy")
# the AUCs of the baselines beside the model's: a constant P(FAKE), then each hand-made statistic
BASELINE_AUCS = ("prior_auc", *(f"{name}_auc" for name in HANDMADE))
# how a metric key reads in evaluation.md
NAMES = {"auc": SHORT_LABELS["auc"], "auc_lo": "its 95% interval", "auc_hi": "",
         "average_precision": SHORT_LABELS["average_precision"],
         "detection_rate": "detection rate", "false_positive_rate": "false-positive rate",
         "prior_log_loss": "prior log loss", "majority_accuracy": "majority accuracy", "prior_auc": "prior AUC",
         **{f"{name}_auc": f"{label} AUC" for name, label in HANDMADE_LABELS.items()}}  # fmt: skip


def evaluate_videos(rows: list[dict], prior: float | None = None, *, threshold: float = 0.5, n_bootstrap: int = 200,
                    seed: int = 0) -> dict:  # fmt: skip
    """rows: {video_id, label REAL|FAKE|None, manipulation|None, p_fake|None, group (optional), handmade
    (optional: :func:`clip_statistics` of the clips scored)} -> metrics.

    Unscored videos (p_fake None) and unlabelled ones (label None: scored, no metadata entry)
    are counted and listed, not measured. ``prior``: the training split's video-level FAKE
    fraction; None leaves the prior and majority baselines unknown (NaN). ``threshold``: the
    model's decision threshold (P(FAKE) >= threshold is a FAKE verdict). ``group`` (default:
    the video itself) is the unit of the AUC's bootstrap interval.
    """
    scored = [r for r in rows if r.get("p_fake") is not None]
    labelled = [r for r in scored if r.get("label") is not None]
    if not labelled:
        raise ValueError("no labelled video could be scored" if scored else "no video could be scored")
    if prior is not None and not 0.0 <= prior <= 1.0:
        raise ValueError(f"prior must be a probability, got {prior}")
    y = np.array([r["label"] == FAKE for r in labelled], dtype=int)
    p = np.array([r["p_fake"] for r in labelled], dtype=float)
    g = np.array([str(r.get("group") or r["video_id"]) for r in labelled])
    stats = [r.get("handmade") or {} for r in labelled]
    boot = {"n_resamples": n_bootstrap, "seed": seed}
    out = {"overall": {**_group(y, p, g, prior, threshold, boot), **statistic_aucs(y, stats)}, "by_type": {}, "unscored": len(rows) - len(scored),
           "prior": prior, "threshold": threshold, "n_bootstrap": n_bootstrap,
           "unlabelled_videos": [_brief(r) for r in scored if r.get("label") is None],
           "unscored_videos": [_brief(r) for r in rows if r.get("p_fake") is None]}  # fmt: skip
    out["unlabelled"] = len(out["unlabelled_videos"])
    reals = y == 0
    types = defaultdict(list)
    for i, r in enumerate(labelled):
        if r["label"] == FAKE:
            types[r.get("manipulation") or "unknown"].append(i)
    for m, idx in sorted(types.items()):
        sel = reals.copy()
        sel[idx] = True
        chosen = [stats[i] for i in np.flatnonzero(sel)]
        out["by_type"][m] = {**_group(y[sel], p[sel], g[sel], prior, threshold, boot), **statistic_aucs(y[sel], chosen)}
    return out


def clip_statistics(clips: Sequence[DecodedClip]) -> dict[str, list[float]]:
    """Each hand-made statistic of each clip a video was scored on: name -> (clips,) scores, higher = more
    FAKE-like, NaN where a clip defines none (:func:`tasks.evaluate.handmade.score_clips`)."""
    scored = H.score_clips(clips)
    return {name: [c.scores[name] for c in scored] for name in HANDMADE}


def statistic_aucs(y: np.ndarray, clip_scores: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, float]:
    """``<statistic>_auc`` of each hand-made statistic on videos labelled ``y`` (V,), FAKE = 1, each with its
    clips' scores (:func:`clip_statistics`; empty: not measured). A video scores its clips' mean, as in
    training (:func:`tasks.evaluate.handmade.baseline_metrics`); NaN on one class or when no clip measured it."""
    video_ids, labels, scores = [], [], {name: [] for name in HANDMADE}
    for v, (label, by_name) in enumerate(zip(y, clip_scores)):
        n_clips = len(next(iter(by_name.values()), []))
        video_ids += [str(v)] * n_clips
        labels += [int(label)] * n_clips
        for name in HANDMADE:
            scores[name] += list(by_name.get(name, [math.nan] * n_clips))
    if not video_ids:
        return {f"{name}_auc": math.nan for name in HANDMADE}
    arrays = {name: np.asarray(s, np.float64) for name, s in scores.items()}  # name -> (N,) clip scores
    video = H.baseline_metrics(video_ids, np.asarray(labels, np.int64), arrays)["video"]
    return {f"{name}_auc": video[name]["auc"] for name in HANDMADE}


def _brief(row: dict) -> dict:
    keys = ("video_id", "label", "p_fake", "verdict", "reason")
    return {k: row.get(k) for k in keys}


def _group(y: np.ndarray, p: np.ndarray, groups: np.ndarray, prior: float | None, threshold: float, boot: dict) -> dict:
    m = binary_metrics(y, p, threshold)
    lo, hi = bootstrap_auc_ci(y, p, groups=groups, **boot) if boot["n_resamples"] else (math.nan, math.nan)
    called = p >= threshold  # the verdict rule of tasks.serve.decision.verdict
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    out = {
        "n_real": n_real,
        "n_fake": n_fake,
        "n_groups": len(set(groups.tolist())),
        **{k: m[k] for k in REPORTED},
        "auc_lo": lo,
        "auc_hi": hi,
        "threshold": float(threshold),
        "mean_p_fake": float(p.mean()),
        "fake_called_fake": int(called[y == 1].sum()),
        "real_called_fake": int(called[y == 0].sum()),
        "detection_rate": float(called[y == 1].mean()) if n_fake else math.nan,  # recall of FAKE
        "false_positive_rate": float(called[y == 0].mean()) if n_real else math.nan,
        "prior_log_loss": math.nan,
        "majority_accuracy": math.nan,
        "prior_auc": math.nan,
    }
    if prior is not None:
        train_like = np.array([1] * round(prior * 1000) + [0] * (1000 - round(prior * 1000)))
        base = baselines(train_like, y)
        out["prior_auc"] = base["prior"]["auc"]
        out["prior_log_loss"] = base["prior"]["log_loss"]
        out["majority_accuracy"] = base["majority"]["accuracy"]
    return out


def defined(x) -> bool:
    """A number that can be compared and formatted: not None, not NaN, not infinite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def undefined(group: dict, prior: float | None) -> dict[str, str]:
    """metric key -> why it is undefined on this group; empty when every metric is defined."""
    why: dict[str, str] = {}
    only = FAKE if not group["n_real"] else "REAL" if not group["n_fake"] else None
    if only:
        reason = f"they rank FAKE against REAL videos, and this set holds only {only} videos"
        why.update(dict.fromkeys(("auc", "auc_lo", "auc_hi", "average_precision"), reason))
        why.update(
            dict.fromkeys(
                BASELINE_AUCS, f"they too rank FAKE against REAL videos, and this set holds only {only} videos"
            )
        )
    if not group["n_fake"]:
        why["detection_rate"] = "there is no FAKE video to detect"
    if not group["n_real"]:
        why["false_positive_rate"] = "there is no REAL video to misjudge"
    if prior is None:
        reason = "the training videos' FAKE fraction is unknown (give --prior)"
        why.update(dict.fromkeys(("prior_log_loss", "majority_accuracy", "prior_auc"), reason))
    for name in HANDMADE:
        if f"{name}_auc" not in why and not defined(group.get(f"{name}_auc")):
            why[f"{name}_auc"] = (
                "the statistic is undefined on every scored clip of a class (a still mouth, a flat sound), or unmeasured"
            )
    return why


def loses_to_prior(group: dict) -> bool:
    """The model's log loss is no better than the constant prior's, both being defined numbers."""
    ll, prior_ll = group.get("log_loss"), group.get("prior_log_loss")
    return defined(ll) and defined(prior_ll) and not ll < prior_ll


def prior_warning(result: dict) -> str | None:
    """The sentence saying the model loses to the prior on the evaluated set, or None when it does not."""
    overall = result["overall"]
    if not loses_to_prior(overall):
        return None
    return (f"the model loses to the prior on the evaluated set: log loss {overall['log_loss']:.4f} >= "
            f"{overall['prior_log_loss']:.4f} for a constant P(FAKE) = {number(result['prior'])}")  # fmt: skip


def _headline(g: dict) -> list[str]:
    """What a one-class (or any) set answers first: how many fakes are caught, how many reals are not."""
    t = number(g["threshold"])
    lines = []
    if g["n_fake"]:
        lines.append(f"**Detection rate: {g['fake_called_fake']} of {g['n_fake']} FAKE videos called FAKE "
                     f"({number(g['detection_rate'])})** at threshold {t}; mean P(FAKE) {number(g['mean_p_fake'])}.")  # fmt: skip
    if g["n_real"]:
        lines.append(f"**False-positive rate: {g['real_called_fake']} of {g['n_real']} REAL videos called FAKE "
                     f"({number(g['false_positive_rate'])})** at threshold {t}.")  # fmt: skip
    return lines


def _undefined_lines(g: dict, prior: float | None) -> list[str]:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for key, reason in undefined(g, prior).items():
        if NAMES.get(key):
            by_reason[reason].append(NAMES[key])
    return [f"Undefined here (n/a): {', '.join(names)}, because {reason}." for reason, names in by_reason.items()]


def _video_list(title: str, videos: list[dict], columns: tuple[str, ...]) -> list[str]:
    if not videos:
        return []
    lines = ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for v in videos:
        cells = [number(v[c]) if c == "p_fake" else str(v.get(c) or "") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _baselines_table(result: dict) -> list[str]:
    """The model's AUC beside the baselines' (:data:`BASELINE_AUCS`), overall and per type; n/a: undefined."""
    labels = ["prior (constant P(FAKE))", *(HANDMADE_LABELS[name] for name in HANDMADE)]
    lines = ["## The model against one-line statistics", "",
             "AUC of the model beside a constant P(FAKE) and two hand-made statistics of the clips it scored, "
             "no learning (`tasks/evaluate/handmade.py`: the mouth's opening against the loudness, the face's "
             "blur): the baselines a training run reports as `test_baselines_video_*_auc`. A model that does not "
             "beat them has learned no more than one line of code measures.", "",
             "| videos | model AUC | " + " | ".join(f"{label} AUC" for label in labels) + " |",
             "|---|" + "---:|" * (1 + len(labels))]  # fmt: skip
    for name, g in [("all", result["overall"]), *result["by_type"].items()]:
        cells = [number(g["auc"]), *(number(g.get(k)) for k in BASELINE_AUCS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def evaluation_markdown(result: dict, title: str, decision: str | None = None) -> str:
    """evaluation.md: the decision rule, the headline rates, the table, what is undefined and why,
    then the videos scored without a label and those that could not be scored.

    ``decision``: the rule's sentence (:func:`tasks.serve.decision.describe`); default: the threshold alone.
    """
    overall = result["overall"]
    rule = decision or f"FAKE when P(FAKE) >= {number(result['threshold'])}."
    header = ("| videos | REAL | FAKE | groups | AUC | AUC 95% CI | AP | log loss | prior log loss | accuracy "
              "| majority accuracy | detection rate | false-positive rate | mean P(FAKE) |")  # fmt: skip
    lines = [f"# {title}", "", f"Decision rule: {rule}", "", *_headline(overall), "", header,
             "|---|" + "---:|" * 13]  # fmt: skip
    for name, g in [("all", overall), *result["by_type"].items()]:
        lines.append(
            f"| {name} | {g['n_real']} | {g['n_fake']} | {g['n_groups']} | {number(g['auc'])} | "
            f"[{number(g['auc_lo'])}, {number(g['auc_hi'])}] | {number(g['average_precision'])} | "
            f"{number(g['log_loss'])} | {number(g['prior_log_loss'])} | {number(g['accuracy'])} | {number(g['majority_accuracy'])} | "
            f"{number(g['detection_rate'])} | {number(g['false_positive_rate'])} | {number(g['mean_p_fake'])} |"
        )
    prior = result["prior"]
    prior_text = (f"Prior baseline: constant P(FAKE) = {prior:.3f}, the training videos' FAKE fraction; majority: the "
                  "more frequent training class." if prior is not None else
                  "Prior and majority baselines: unknown (n/a), because the training split's FAKE fraction was not "
                  "given (`--prior`); they are never estimated from the evaluated labels.")  # fmt: skip
    lines += ["", *_undefined_lines(overall, prior)]
    lines += ["", f"Per type: that type's fakes against all {overall['n_real']} real videos. {prior_text} "
              f"Accuracy, detection and false-positive rates at the decision threshold above. "
              f"AUC intervals: {result.get('n_bootstrap', 0)} bootstrap resamples of groups (a REAL video and its "
              f"fakes). Videos that could not be scored: {result['unscored']}. Videos scored without a label "
              f"(not in the metrics): {result.get('unlabelled', 0)}."]  # fmt: skip
    lines += ["", *_baselines_table(result)]
    lines += _video_list("Scored without a label (no metadata entry)", result.get("unlabelled_videos", []),
                         ("video_id", "p_fake", "verdict"))  # fmt: skip
    lines += _video_list("Could not be scored", result.get("unscored_videos", []), ("video_id", "label", "reason"))
    return "\n".join(lines) + "\n"
