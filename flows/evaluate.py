"""Prefect flow ``evaluate-avff``: score a registered model on any DFDC-format folder, no retraining.

Reports video-level AUC, AP, log loss, accuracy, detection and false-positive rates and mean
P(FAKE) overall and per manipulation type (when the metadata names one), beside the trivial
baselines and the AUCs of the hand-made statistics a training run also reports
(``eval_prior_auc``, ``eval_lip_sync_auc``, ``eval_sharpness_auc``), into MLflow and as
markdown. Verdicts use the model's own decision rule (its threshold and calibration,
``decision.json``), the one ``avff predict`` applies, and the report says which. A set of one class (fakes only, reals only) reports what is defined on it and names
what is not, and why. A file with no metadata entry is scored and listed as unlabelled. The
prior baseline is the FAKE fraction of the model's own training data (a tag of its model
version); a model that loses to it on the evaluated set is said so, in the log and the table,
when both log losses are defined.
Results go to the training experiment, in a run named after the flow run and tagged with
the concrete model version scored (``@champion`` resolved), so the registry page, the
training run and every evaluation of a model point at each other.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from flows import links
from flows.preflight import check_evaluate_inputs, model_uri, retrying_task
from storage.shard_schema import REAL
from tasks.evaluate.videos import (
    BASELINE_AUCS,
    clip_statistics,
    defined,
    evaluate_videos,
    evaluation_markdown,
    prior_warning,
    undefined,
)
from tasks.ingest.preprocess import face_detector
from tasks.ingest.scan import scan_dfdc, video_id_of
from storage.decision import Decision
from tasks.serve.decision import describe, verdict
from tasks.serve.predict import preprocess_for, score_video
from tasks.evaluate.probes import shortcut_probes
from tasks.serve.scorer import load_model
from tasks.tracking.mlflow_tracker import NOTE_TAG, MLflowTracker
from tasks.tracking.tracker import Tracker
from tasks.tracking.ui import EVALUATION_CONTEXT, RUN_TYPE_EVALUATION, RUN_TYPE_TAG


UNLABELLED = "missing_metadata"  # a scan refusal that is a video without a label: evaluate scores and lists it


class EvaluateConfig(BaseModel):
    """Parameters of evaluate-avff (validated by Prefect, shown as a form in the UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    data: str = Field(description="a DFDC-format folder (dfdc_train_part_*/ or one folder with metadata.json)")
    model: str = Field(
        "avff-dfdc@champion", description="NAME@alias|NAME@VERSION|NAME@latest|models:/...|runs:/...|local path"
    )
    tracking_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000")
    experiment: str = Field("avff", description="MLflow experiment of the evaluation run (the training one by default)")
    prior: float | None = Field(
        None,
        ge=0,
        le=1,
        description="FAKE fraction of the prior baseline; default: the "
        "model's training data (its version's train_fake_fraction tag)",
    )
    out: str | None = Field(None, description="where to write evaluation.md and scores.json (default: a temp dir)")
    probes: int = Field(
        0,
        ge=0,
        le=50,
        description="shortcut probes on this many REAL videos: how P(FAKE) moves "
        "when the audio is shifted, leading silence is added or cut, or the video is re-encoded",
    )


@dataclass(frozen=True)
class ResolvedModel:
    """The concrete model a spec names: ``uri`` loads exactly the version scored."""

    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None  # the training run that logged it
    train_fake_fraction: float | None = None


def resolve_model(spec: str, tracker: Tracker) -> ResolvedModel:
    """'avff-dfdc@champion' / '@latest' / '@3' -> that registry version (aliases do not move under us)."""
    uri = model_uri(spec)
    if not uri.startswith("models:/"):
        return ResolvedModel(uri)
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, number = ref.split("@", 1)
    else:
        name, _, number = ref.partition("/")
        if number == "latest":
            versions = tracker.model_versions(name)
            if not versions:
                raise LookupError(f"registered model {name!r} has no versions")
            number = str(max(v.version for v in versions))
    version = tracker.model_version(name, number)
    fraction = version.tags.get("train_fake_fraction")
    return ResolvedModel(tracker.version_uri(name, version.version), name, str(version.version), version.run_id,
                         float(fraction) if fraction is not None else None)  # fmt: skip


# read-only but for its own work_dir, which a rerun overwrites: safe to retry (a model server or
# object store that blinked)
@retrying_task("shortcut-probes")
def probe_model(data: str, uri: str, n: int, work_dir: str) -> list[dict]:
    """tasks.evaluate.probes on the first n REAL videos that have audio: one row per (video, probe)."""
    scan = scan_dfdc(data)
    scorer = load_model(uri)
    pre = preprocess_for(scorer)
    rows: list[dict] = []
    with face_detector(pre) as det:

        def score(path: str) -> float | None:
            return score_video(path, scorer, pre, det).p_fake

        for e in [e for e in scan.entries if e.label == REAL][:n]:
            for r in shortcut_probes(os.path.join(data, e.rel_path), score, os.path.join(work_dir, e.video_id)):
                rows.append({"video_id": e.video_id, "probe": r.probe, "p_fake": r.p_fake, "delta": r.delta})
    return rows


def probes_markdown(rows: list[dict]) -> str:
    """Mean change of P(FAKE) per probe against the re-encoded control, over the probed videos."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["probe"] != "control" and r["delta"] is not None:
            by.setdefault(r["probe"], []).append(r["delta"])
    videos = len({r["video_id"] for r in rows})
    lines = [f"## Shortcut probes ({videos} REAL videos)", "",
             "Mean change of P(FAKE) against the same video re-encoded unchanged. A model that reads lip sync "
             "rises when the audio is shifted; one that moves with leading silence or encoder quality keys on an "
             "artefact.", "", "| probe | mean ΔP(FAKE) | videos |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {name} | {sum(d) / len(d):+.3f} | {len(d)} |" for name, d in by.items()]
    return "\n".join(lines) + "\n"


def _targets(data: str, log) -> list[tuple[str, str, str | None, str | None, str]]:
    """(video_id, rel_path, label, manipulation, group) of every video to score: the labelled entries, then
    the files with no metadata entry (scored and listed unlabelled, never silently skipped). The group,
    the AUC bootstrap's unit, is a REAL's id shared by its fakes (their metadata's ``original``)."""
    scan = scan_dfdc(data)
    targets = [(e.video_id, e.rel_path, e.label, e.manipulation, e.original or e.video_id) for e in scan.entries]
    for r in scan.rejected:
        if r.reason == UNLABELLED:
            log.warning("%s: scored, but unlabelled (not in the metrics)", r.error)
            targets.append((video_id_of(r.rel_path), r.rel_path, None, None, video_id_of(r.rel_path)))
        else:
            log.warning("refused %s: %s", r.rel_path, r.error)
    return targets


@retrying_task("score-videos")  # read-only: safe to retry
def score_videos(data: str, uri: str) -> dict:
    """{"rows": one per video (P(FAKE), verdict by the model's decision rule, the hand-made statistics of
    the clips scored), "decision": the model's decision.json as a dict, None when it carries none}."""
    log = get_run_logger()
    targets = _targets(data, log)
    scorer = load_model(uri)
    pre = preprocess_for(scorer)
    rows = []
    with face_detector(pre) as det:
        for i, (video_id, rel_path, label, manipulation, group) in enumerate(targets):
            measured: dict[str, list[float]] = {}  # the hand-made statistics, on the clips the model scores
            s = score_video(os.path.join(data, rel_path), scorer, pre, det,
                            on_clips=lambda clips, into=measured: into.update(clip_statistics(clips)))  # fmt: skip
            rows.append({"video_id": video_id, "label": label, "manipulation": manipulation, "p_fake": s.p_fake,
                         "group": group,
                         "verdict": verdict(s.p_fake, scorer.threshold)["verdict"], "clips": s.clips,
                         "reason": s.reason, "faces": len(s.face_p_fake), "handmade": measured})  # fmt: skip
            if s.p_fake is None:
                log.warning("cannot score %s: %s", rel_path, s.error)
            if (i + 1) % 10 == 0:
                log.info("scored %d/%d videos", i + 1, len(targets))
    return {"rows": rows, "decision": scorer.decision.to_json() if scorer.decision else None}


def report_scores(scored: dict, prior: float | None, title: str) -> tuple[dict, str]:
    """score_videos' output -> (metrics at the model's own decision rule, evaluation.md).

    The result also holds the rule (``decision``), the metrics undefined on this set and why
    (``undefined``), and the loses-to-the-prior sentence (``warning``, None unless both log losses
    are defined and the model's is no better).
    """
    decision = Decision.from_json(scored["decision"]) if scored["decision"] else None
    threshold = verdict(None, decision.threshold if decision else None)["threshold"]
    result = evaluate_videos(scored["rows"], prior=prior, threshold=threshold)
    result["decision"] = {
        **(decision.to_json() if decision else {}),
        "threshold": threshold,
        "rule": describe(decision),
    }
    result["undefined"] = undefined(result["overall"], prior)
    result["warning"] = prior_warning(result)
    markdown = evaluation_markdown(result, title, describe(decision))
    if result["warning"]:
        markdown += f"\n**Warning**: {result['warning']}.\n"
    return result, markdown


def json_safe(value):
    """NaN and infinities -> None, recursively: scores.json must be valid JSON (no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _write_outputs(out: str, markdown: str, rows: list[dict], result: dict) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "evaluation.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(out, "scores.json"), "w") as f:
        json.dump(json_safe({"rows": rows, "result": result}), f, indent=2, allow_nan=False, default=str)


def _metrics(result: dict) -> dict[str, float]:
    """The defined numbers, as MLflow metrics, the headline first (the run page lists them in the order
    logged: the model's AUC and log loss, then the baselines'); an undefined one (NaN: AUC on one
    class) is left out and named in the run's ``undefined_metrics`` tag."""
    overall = result["overall"]
    first = [k for k in ("auc", "log_loss", "prior_auc", "prior_log_loss", *BASELINE_AUCS[1:]) if k in overall]
    metrics = {f"eval_{k}": overall[k] for k in [*first, *overall] if defined(overall[k])}
    for m, g in result["by_type"].items():
        metrics.update({f"eval_{m}_{k}": v for k, v in g.items() if defined(v)})
    return {k: float(v) for k, v in metrics.items()}


def _run_tags(
    model: ResolvedModel,
    config: EvaluateConfig,
    flow_run: dict[str, str],
    loses: bool,
    undefined_metrics: dict[str, str],
) -> dict[str, str]:
    scored = f"{model.name} version {model.version}" if model.version else model.uri
    made_by = links.markdown_link(flow_run["name"], flow_run.get("url")) if flow_run else "none"
    note = (f"Evaluation of {scored} on `{config.data}` by Prefect flow run {made_by} (evaluate-avff)."
            + (" **The model loses to the prior on this set.**" if loses else ""))  # fmt: skip
    tags = {"model": config.model, "model_uri": model.uri, "data": config.data, "avff.kind": "evaluation",
            RUN_TYPE_TAG: RUN_TYPE_EVALUATION,
            "loses_to_prior": str(loses).lower(), NOTE_TAG: note, **links.flow_run_tags(flow_run)}  # fmt: skip
    if undefined_metrics:
        tags["undefined_metrics"] = ", ".join(f"eval_{k}" for k in undefined_metrics)
    if model.version is not None:
        tags.update({"model_name": model.name, "model_version": model.version})
    if model.run_id:
        tags["training_run_id"] = model.run_id
    return tags


def log_scored_videos(tracker: Tracker, run_id: str, rows: list[dict], data: str) -> None:
    """The scored videos (label, P(FAKE), verdict) as the run's ``evaluation`` dataset input, beside
    the training runs' ``training`` manifest in MLflow's Datasets column."""
    import pandas as pd

    frame = pd.DataFrame([{k: r[k] for k in ("video_id", "label", "manipulation", "p_fake", "verdict")} for r in rows])
    name = f"evaluated:{os.path.basename(data.rstrip('/'))}"
    tracker.log_dataset(run_id, frame, name=name, predictions="p_fake", context=EVALUATION_CONTEXT)


@flow(name="evaluate-avff", log_prints=True)
def evaluate_avff(config: EvaluateConfig) -> dict:
    """Score every video of config.data with config.model; log metrics, table and scores to MLflow."""
    log = get_run_logger()
    check_evaluate_inputs(config.data, config.model, config.out)  # again: a run from the UI skipped the CLI's
    tracker = MLflowTracker.connect(config.tracking_uri)
    model = resolve_model(config.model, tracker)
    prior = config.prior if config.prior is not None else model.train_fake_fraction
    if prior is None:
        log.warning(
            "no training FAKE fraction for %s (and no --prior): the baselines are reported unknown, "
            "never estimated from the evaluated labels",
            model.uri,
        )
    scored = score_videos(config.data, model.uri)
    title = f"evaluate-avff: {model.name} version {model.version}" if model.version else f"evaluate-avff: {model.uri}"
    result, markdown = report_scores(scored, prior, f"{title} on {config.data}")
    rows, loses = scored["rows"], result["warning"] is not None
    if loses:
        log.warning(result["warning"])
    out = config.out or tempfile.mkdtemp(prefix="avff-eval-")
    if config.probes:
        with tempfile.TemporaryDirectory(prefix="avff-probes-") as work:
            result["probes"] = probe_model(config.data, model.uri, config.probes, work)
        markdown += "\n" + probes_markdown(result["probes"])
    _write_outputs(out, markdown, rows, result)
    experiment_id = tracker.use_experiment(config.experiment)
    flow_run = links.flow_run()
    tags = _run_tags(model, config, flow_run, loses, result["undefined"])
    with tracker.open_run(name=flow_run.get("name"), tags=tags) as run:
        logger = tracker.logger(run.run_id)
        logger.log_params({"model": config.model, "model_uri": model.uri, "data": config.data, "prior": result["prior"],
                           "threshold": result["threshold"]})  # fmt: skip
        logger.log_metrics(_metrics(result), step=0)
        logger.log_artifact(out, "evaluation")
        log_scored_videos(tracker, run.run_id, rows, config.data)
    run_link = links.run_url(tracker.uri, experiment_id, run.run_id)
    links.link_run(run_link, run.run_id, "the MLflow run of this evaluation")
    header = f"MLflow run {links.markdown_link(run.run_id, run_link)}\n\n"
    create_markdown_artifact(markdown=header + markdown, key="evaluation", description=f"MLflow run {run.run_id}")
    return {"run_id": run.run_id, "run_url": run_link, "model_uri": model.uri, "model_version": model.version,
            "loses_to_prior": loses, "out": out, "overall": result["overall"], "by_type": result["by_type"],
            "decision": result["decision"], "undefined": result["undefined"]}  # fmt: skip
