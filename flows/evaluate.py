"""Prefect flow ``evaluate-avff``: score a registered model on any DFDC-format folder, no retraining.

Reports video-level AUC, AP, log loss and accuracy overall and per manipulation type (when
the metadata names one), beside the trivial baselines, into MLflow and as markdown.
"""

from __future__ import annotations

import json
import os
import tempfile

import mlflow
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from flows.cli_predict import model_uri
from flows.train import resolve_tracking_uri
from tasks.evaluate import evaluate_videos, evaluation_markdown
from tasks.faces import FaceDetector
from tasks.metadata import scan_dfdc
from tasks.predict import preprocess_for, score_video
from tasks.serving import load_model
from tasks.splits import identity_groups


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    data: str = Field(description="a DFDC-format folder (dfdc_train_part_*/ or one folder with metadata.json)")
    model: str = Field("avff-dfdc@latest", description="NAME@latest|NAME@VERSION|models:/...|runs:/...|local path")
    tracking_uri: str | None = None
    experiment: str = "avff-eval"
    prior: float | None = Field(
        None, ge=0, le=1,
        description="the training split's video-level FAKE fraction, for the prior baseline (unknown when not given)",
    )  # fmt: skip
    out: str | None = Field(None, description="where to write evaluation.md and scores.json (default: a temp dir)")


@task(name="score-videos", cache_policy=NO_CACHE)
def score_videos(cfg: EvaluateConfig) -> list[dict]:
    log = get_run_logger()
    scan = scan_dfdc(cfg.data)
    for r in scan.rejected:
        log.warning("refused %s: %s", r.rel_path, r.error)
    scorer = load_model(model_uri(cfg.model))
    pre = preprocess_for(scorer)
    groups = identity_groups(scan.entries).groups  # the bootstrap's unit: a REAL and its fakes
    rows = []
    with FaceDetector(min_score=pre.min_det_score, detect_side=pre.detect_side) as det:
        for i, e in enumerate(scan.entries):
            s = score_video(os.path.join(cfg.data, e.rel_path), scorer, pre, det)
            rows.append({"video_id": e.video_id, "label": e.label, "manipulation": e.manipulation,
                         "group": groups[e.video_id], "p_fake": s.p_fake, "clips": s.clips, "reason": s.reason})  # fmt: skip
            if s.p_fake is None:
                log.warning("cannot score %s: %s", e.rel_path, s.error)
            if (i + 1) % 10 == 0:
                log.info("scored %d/%d videos", i + 1, len(scan.entries))
    return rows


@flow(name="evaluate-avff", log_prints=True)
def evaluate_avff(config: EvaluateConfig) -> dict:
    """Score every video of config.data with config.model; log metrics, table and scores to MLflow."""
    mlflow.set_tracking_uri(resolve_tracking_uri(config.tracking_uri))
    rows = score_videos(config)
    result = evaluate_videos(rows, prior=config.prior)
    markdown = evaluation_markdown(result, f"evaluate-avff: {config.model} on {config.data}")
    out = config.out or tempfile.mkdtemp(prefix="avff-eval-")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "evaluation.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(out, "scores.json"), "w") as f:
        json.dump({"rows": rows, "result": result}, f, indent=2, default=str)
    mlflow.set_experiment(config.experiment)
    with mlflow.start_run(tags={"model": config.model, "data": config.data}) as run:
        mlflow.log_params({"model": config.model, "data": config.data})
        metrics = {f"eval_{k}": v for k, v in result["overall"].items() if isinstance(v, (int, float))}
        for m, g in result["by_type"].items():
            metrics.update({f"eval_{m}_{k}": v for k, v in g.items() if isinstance(v, (int, float))})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=0)
        mlflow.log_artifacts(out, artifact_path="evaluation")
    create_markdown_artifact(markdown=markdown, key="evaluation", description=f"MLflow run {run.info.run_id}")
    return {"run_id": run.info.run_id, "out": out, "overall": result["overall"], "by_type": result["by_type"]}
