"""Prefect flows ``cv-avff`` and ``ablate-avff``: many training runs under one MLflow parent run.

- ``cv-avff``: grouped k-fold cross-validation over the manifest's ``fold`` column; train+val
  pooled, fold k validates, the test split is never read (:mod:`tasks.ingest.folds`). One child run
  per fold; the parent logs ``cv_mean_*`` / ``cv_std_*`` of every fold metric and a table.
- ``ablate-avff``: named variants (overrides of a base :class:`~tasks.train.settings.TrainSettings`) x
  seeds, one child run each; the parent gets a comparison table (markdown + bar plot of AUC
  and log loss with seed error bars) with the trivial baselines as rows.

Child runs are MLflow runs under the parent (:meth:`tasks.tracking.tracker.Tracker.child_run`, what
``nested=True`` makes), created through an explicit client so they can run in worker threads. Runs go one after another
(``max_parallel=1``, reproducible) or fan out as Prefect tasks on a ThreadPoolTaskRunner of
``max_parallel`` threads: every run then shares the process's CPU/GPU and global RNG (model
initialisation draws from it), so parallel runs are not bitwise reproducible. Nothing is
registered in the model registry: these flows compare, ``train-avff`` ships.

Their parameters, :class:`CVConfig` and :class:`AblationConfig`, live in
:mod:`tasks.train.experiment_settings` (no flow, torch or Prefect import), where ``avff cv`` /
``avff ablate`` generate their flags from; this module re-exports them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.train import run_tags
from storage import fs
from tasks.evaluate import experiments as X
from tasks.ingest.folds import fold_split, list_folds, manifest_rows
from tasks.tracking.logger import flatten_params
from tasks.tracking.mlflow_tracker import MLflowTracker
from tasks.tracking.tracker import Run, RunLogger, Tracker
from tasks.evaluate.metric_names import BEST_VAL, key
from tasks.train.experiment_settings import AblationConfig, CVConfig
from tasks.train.run import run_training
from tasks.train.settings import TrainSettings

CV_TABLE = (key(BEST_VAL, "video", "auc"), key(BEST_VAL, "video", "log_loss"), key(BEST_VAL, "video", "balanced_accuracy"),
            key(BEST_VAL, "clip", "auc"), key(BEST_VAL, "clip", "log_loss"))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ChildJob:
    """One training run under the parent: its name, settings, params and tags."""

    name: str
    settings: TrainSettings
    params: dict[str, Any]
    tags: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Parent:
    """The parent run and the tracker its children are opened on (a worker thread's task takes it)."""

    tracker: Tracker
    run: Run

    @property
    def run_id(self) -> str:
        return self.run.run_id


# no retries: an attempt opens its own MLflow child run and trains from scratch, so a retry would leave a
# FAILED child beside a second one under the parent and pay for the training twice
@task(name="train-child", cache_policy=NO_CACHE)
def train_child(job: ChildJob, parent: Parent) -> dict:
    """One training run as an MLflow child of ``parent``; returns its id and flat metrics."""
    with parent.tracker.child_run(parent.run, job.name, job.tags) as logger:
        logger.log_params(job.params)
        result = run_training(job.settings, log=logger)
    return {"name": job.name, "run_id": logger.run_id, "best_epoch": result.best_epoch,
            "metrics": {**result.val_metrics, **result.test_metrics}}  # fmt: skip


def run_children(jobs: list[ChildJob], parent: Parent, max_parallel: int) -> list[dict]:
    """In order, one at a time; or as Prefect tasks on ``max_parallel`` threads (results in job order)."""
    if max_parallel <= 1:
        return [train_child(job, parent) for job in jobs]
    with ThreadPoolTaskRunner(max_workers=max_parallel) as runner:
        futures = [runner.submit(train_child, parameters={"job": job, "parent": parent}) for job in jobs]
        return [f.result() for f in futures]


@contextlib.contextmanager
def parent_run(train: TrainSettings, kind: str,
               artifact_location: str | None = None) -> Iterator[tuple[RunLogger, Parent]]:  # fmt: skip
    """The parent run (the flow's thread owns it) in the train config's experiment, tagged; ended on exit.
    ``artifact_location``: where the experiment keeps its artifacts if it is created here (None: the store's default)."""
    tracker = MLflowTracker.connect(train.tracking_uri)
    tracker.use_experiment(train.experiment, artifact_location)
    with tracker.open_run(name=f"{kind}-{train.config_hash()[:8]}") as run:
        logger = tracker.logger(run.run_id)
        logger.set_tags({**run_tags(train), "avff.experiment": kind})
        yield logger, Parent(tracker, run)


def _log_text(logger: RunLogger, files: dict[str, str | bytes], artifact_path: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            p = Path(tmp) / name
            p.write_bytes(content.encode() if isinstance(content, str) else content)
            logger.log_artifact(str(p), artifact_path)


def _train_params(config: TrainSettings) -> dict[str, Any]:
    return flatten_params(config.model_dump(by_alias=True, exclude={"tracking_uri"}), "train")


def fold_jobs(config: CVConfig) -> tuple[list[int], list[ChildJob]]:
    """The folds to run and one job each; raises before any training on unknown or unusable folds."""
    train = config.train
    rows = manifest_rows(fs.IngestLayout(train.data))
    folds = config.folds if config.folds is not None else list_folds(rows)
    if not folds:
        raise ValueError(f"no ingested train/val videos in {fs.IngestLayout(train.data).manifest}: nothing to "
                         "cross-validate (were they all quarantined? see quarantine.parquet next to it)")  # fmt: skip
    for k in folds:  # unknown folds, empty sides, groups across folds
        fold_split(rows, k)
    jobs = [
        ChildJob(f"fold-{k}", train.replace(fold=k, output_dir=fs.join(train.output_dir, f"fold-{k}"),
                                            log_checkpoints=config.log_checkpoints),
                 {**_train_params(train), "cv.fold": k}, {"avff.fold": str(k)})
        for k in folds
    ]  # fmt: skip
    return folds, jobs


def log_cv_summary(logger: RunLogger, folds: list[int], results: list[dict]) -> tuple[dict[str, X.Spread], str]:
    """``cv_mean_*`` / ``cv_std_*`` metrics (step 0), ``cv_summary.md`` and ``cv_folds.json`` in the parent."""
    per_fold = {k: r["metrics"] for k, r in zip(folds, results)}
    summary = X.summarize(list(per_fold.values()))
    logger.log_metrics(X.summary_metrics(summary, "cv"), step=0)
    table = X.cv_markdown(per_fold, CV_TABLE)
    runs = {str(k): {"run_id": r["run_id"], "best_epoch": r["best_epoch"], "metrics": r["metrics"]}
            for k, r in zip(folds, results)}  # fmt: skip
    _log_text(logger, {"cv_summary.md": table, "cv_folds.json": json.dumps(runs, indent=2, default=str)})
    return summary, table


@flow(name="cv-avff", log_prints=True)
def cv_avff(config: CVConfig) -> dict:
    """Grouped k-fold CV of one training config: a child run per fold, mean and std in the parent."""
    folds, jobs = fold_jobs(config)
    with parent_run(config.train, "cv") as (logger, parent):
        logger.log_params({**_train_params(config.train), "cv.folds": json.dumps(folds),
                           "cv.max_parallel": config.max_parallel})  # fmt: skip
        results = run_children(jobs, parent, config.max_parallel)
        summary, table = log_cv_summary(logger, folds, results)
    create_markdown_artifact(markdown=table, key="cv-summary", description=f"MLflow run {parent.run_id}")
    get_run_logger().info("cv-avff: %d folds under MLflow run %s", len(folds), parent.run_id)
    return {"run_id": parent.run_id, "child_run_ids": [r["run_id"] for r in results], "folds": folds,
            "mean": {k: s.mean for k, s in summary.items()}, "std": {k: s.std for k, s in summary.items()}}  # fmt: skip


def variant_job(name: str, train: TrainSettings) -> ChildJob:
    """Variant ``name``'s run with ``train`` (its seed's) as a child job, named and tagged by variant and seed
    (bench/results.py trains its variants through this and :func:`run_children` too)."""
    return ChildJob(f"{name}-seed{train.seed}", train, _train_params(train),
                    {"avff.variant": name, "avff.seed": str(train.seed)})  # fmt: skip


def ablation_jobs(config: AblationConfig) -> list[ChildJob]:
    """One job per variant x seed, in that order."""
    return [variant_job(name, config.variant_config(name, seed)) for name in config.variants for seed in config.seeds]


def log_comparison(logger: RunLogger, config: AblationConfig, jobs: list[ChildJob],
                   results: list[dict]) -> tuple[list[X.ComparisonRow], str]:  # fmt: skip
    """The table, the bar plot and runs.json under ``ablation/`` in the parent; row metrics at step 0."""
    by_variant: dict[str, list[dict]] = {name: [] for name in config.variants}
    for job, r in zip(jobs, results):
        by_variant[job.tags["avff.variant"]].append(r["metrics"])
    rows = X.comparison_rows(by_variant, split=config.split, level=config.level)
    table = X.comparison_markdown(rows, split=config.split, level=config.level, seeds=config.seeds)
    for row in rows:
        logger.log_metrics({f"{row.name}_{m}_{stat}": getattr(row.get(m), stat)
                            for m in X.TABLE_METRICS for stat in ("mean", "std")}, step=0)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        logger.log_artifact(str(X.plot_comparison(rows, Path(tmp) / "comparison.png")), "ablation")
    runs = [{"variant": j.tags["avff.variant"], "seed": int(j.tags["avff.seed"]), **r} for j, r in zip(jobs, results)]
    _log_text(logger, {"comparison.md": table, "runs.json": json.dumps(runs, indent=2, default=str)}, "ablation")
    return rows, table


@flow(name="ablate-avff", log_prints=True)
def ablate_avff(config: AblationConfig) -> dict:
    """Variants x seeds as child runs; a comparison table and bar plot in the parent run."""
    jobs = ablation_jobs(config)
    with parent_run(config.base, "ablation") as (logger, parent):
        logger.log_params({**_train_params(config.base),
                           "ablation.variants": json.dumps(config.variants, sort_keys=True),
                           "ablation.seeds": json.dumps(config.seeds), "ablation.split": config.split,
                           "ablation.level": config.level})  # fmt: skip
        results = run_children(jobs, parent, config.max_parallel)
        rows, table = log_comparison(logger, config, jobs, results)
    create_markdown_artifact(markdown=table, key="ablation-comparison", description=f"MLflow run {parent.run_id}")
    get_run_logger().info("ablate-avff: %d runs under MLflow run %s", len(results), parent.run_id)
    return {"run_id": parent.run_id, "child_run_ids": [r["run_id"] for r in results], "table": table,
            "rows": {r.name: {m: dataclasses.asdict(r.get(m)) for m in X.TABLE_METRICS} for r in rows}}  # fmt: skip
