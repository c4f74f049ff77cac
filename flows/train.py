"""Prefect flow ``train-avff``: one MLflow run around :func:`tasks.train.run.run_training`.

The flow checks its inputs, opens an MLflow run named after the Prefect flow run and tagged
with it (git commit, manifest sha256, config hash, the flow run's id and URL), logs the
manifest as the run's dataset, hands training the run's logger, then logs the best weights as a
pyfunc model (models from code: weights + config JSON + decision threshold, no pickle). The model enters the registry only if the gate the training run
decided passes: it beats the prior on val, both cross-fitted (``register_if``,
:mod:`tasks.evaluate.registry`; the run's report states the decision first), with a model card
as its description and the
aliases ``candidate`` and (when it beats the current one) ``champion``. Training itself
knows nothing of Prefect or MLflow, and this flow talks to MLflow only through the tracker
boundary (:mod:`tasks.tracking.tracker`).
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows import links
from flows.train_distributed import rank0_logger, train_data_parallel
from flows.preflight import ConfigError, require_ingest_output, require_path
from storage import fs
from storage.tables import ManifestRow, read_table
from storage.checkpoint import WEIGHTS, resolve_checkpoint
from tasks.tracking.mlflow_adapter import param_value
from tasks.tracking.mlflow_tracker import MLflowTracker
from tasks.tracking.tracker import Run, RunLogger, Tracker, recorded_run_id, remember_run
from tasks.tracking.ui import TAG_GIT_COMMIT
from tasks.train.progress import ProgressLog
from tasks.evaluate.registry import TAG_DATA, TAG_MONITOR, TAG_VALUE, Gate, champion_verdict, model_card
from tasks.evaluate.metric_names import monitor_mode
from storage.decision import Decision, ingest_preprocess, read_decision
from tasks.serve.scorer import log_pyfunc_model
from tasks.tracking.logger import flatten_params
from tasks.train.finish import is_summary
from tasks.train.run import TrainResult, run_training, training_lock
from tasks.train.settings import TrainSettings


def git_commit() -> str | None:
    """HEAD of the checkout this code runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_tags(config: TrainSettings) -> dict[str, str]:
    layout = fs.IngestLayout(config.data)
    tags = {"config_hash": config.config_hash(), "manifest_sha256": fs.sha256_of(layout.manifest),
            "data": config.data, "stages": config.stages}  # fmt: skip
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
        tags["git_commit"] = commit
    return tags


def check_inputs(config: TrainSettings, *, splits: bool = True) -> None:
    """Fail before any run starts on inputs that cannot work (flows.preflight.ConfigError).

    ``splits``: the manifest must have ingested videos in every split this run reads (cv/ablate
    pool train and val into folds, and pass False).
    """
    require_ingest_output(config.data)
    require_path(config.pretrained_encoders, "pretrained_encoders")
    require_path(config.resume_from, "resume_from")
    if splits:
        needed = ("train",) if config.stages == "pretrain" else ("train", "val", "test")
        require_splits(config.data, needed)


def require_splits(data: str, needed: tuple[str, ...]) -> None:
    """Every split in ``needed`` holds ingested videos of the manifest of ``data``."""
    rows = read_table(fs.IngestLayout(data).manifest, ManifestRow)
    counts = {s: sum(r.split == s and r.status == "ingested" for r in rows) for s in ("train", "val", "test")}
    empty = [s for s in needed if counts[s] == 0]
    if empty:
        shown = ", ".join(f"{s} {n}" for s, n in counts.items())
        raise ConfigError(f"no ingested video in the {' and '.join(empty)} split of {data} ({shown} videos): ingest "
                          "more videos or other --ratios, or see quarantine.parquet for the refused ones")  # fmt: skip


def log_dataset(tracker: Tracker, manifest_uri: str, digest: str, run_id: str) -> None:
    """The manifest as the run's input dataset (MLflow's Datasets panel), named by its digest."""
    import pandas as pd

    frame = pd.DataFrame([dataclasses.asdict(r) for r in read_table(manifest_uri, ManifestRow)])
    tracker.log_dataset(run_id, frame, name="dfdc-manifest", digest=digest[:16], source=manifest_uri,
                        context="training")  # fmt: skip


# no retries: a second attempt would train again from scratch into the same MLflow run, logging every
# metric twice at the same steps (a resumed run is asked for explicitly: resume_from)
@task(name="train", cache_policy=NO_CACHE)
def train(settings: TrainSettings, logger: RunLogger, tracker: Tracker, locked: bool = False) -> TrainResult:
    """run_training on this process, or on ``world_size`` data-parallel ranks; progress lines every 10 s.

    ``locked``: the flow holds the output folder's lock already."""
    world_size, ray_address, batch = settings.world_size, settings.ray_address, settings.batch_size
    if world_size == 1 and ray_address is None:
        return run_training(settings, log=ProgressLog(logger, get_run_logger().info, global_batch=batch), locked=locked)
    get_run_logger().info(
        "data-parallel: %d ranks x batch %d = global batch %d (%s)",
        world_size,
        batch,
        world_size * batch,
        f"Ray at {ray_address}" if ray_address else "this machine",
    )
    # rank 0 logs to this MLflow run; its progress lines go to its stdout (the worker's log)
    make_log = functools.partial(rank0_logger, tracker, logger.run_id, world_size * batch)
    return train_data_parallel(settings, make_log=make_log, locked=locked)


def _log_model(tracker: Tracker, result: TrainResult, run_id: str, data: str, criterion: str) -> str:
    """Log the best checkpoint as a pyfunc in run ``run_id``; returns its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / WEIGHTS
        best = resolve_checkpoint(result.best_checkpoint)
        weights.write_bytes(fs.read_bytes(fs.join(best, WEIGHTS)))
        kept = read_decision(best)  # the fitted read-out (readout="fitted") lives only there
        decision = Decision(0.5 if result.threshold is None else result.threshold,
                            criterion if result.threshold is not None else "default",
                            result.slope, result.intercept, kept.readout if kept is not None else None)  # fmt: skip
        return tracker.log_model(run_id, functools.partial(log_pyfunc_model, str(weights), result.model_config,
                                                           preprocess=ingest_preprocess(data), decision=decision))  # fmt: skip


def _fake_fraction(dataset: dict, split: str = "train") -> float | None:
    d = dataset.get(split) or {}
    n = d.get("videos_real", 0) + d.get("videos_fake", 0)
    return d.get("videos_fake", 0) / n if n else None


def resumable_run(resume_from: str | None, experiment_id: str, tracker: Tracker | None = None) -> str | None:
    """The run that wrote resume_from's checkpoints (:func:`~tasks.tracking.tracker.recorded_run_id`), when
    ``tracker`` (default: the process's tracking URI) has it in this experiment; else None: a new run it is."""
    run_id = recorded_run_id(resume_from)
    run = (tracker or MLflowTracker()).find_run(run_id) if run_id else None
    return run_id if run is not None and run.experiment_id == experiment_id else None


def split_changed_params(logged: dict[str, str], params: dict) -> tuple[dict, dict]:
    """(params to log: new or unchanged, params whose value differs from the logged one)."""
    new = {k: v for k, v in params.items() if logged.get(k, param_value(v)) == param_value(v)}
    return new, {k: v for k, v in params.items() if k not in new}


# no retries: an attempt that failed after registering would be retried as "already registered by this
# run" and leave the version without its aliases and model card; one that failed while logging the
# model would log a second copy in the run
@task(name="register-model", cache_policy=NO_CACHE)
def register_model(tracker: Tracker, result: TrainResult, config: TrainSettings, run_id: str,
                   run_link: str | None, flow_run: dict[str, str]) -> dict:  # fmt: skip
    """Log the best model; register it only past the prior gate; set ``candidate`` / ``champion``.

    Returns {"version", "aliases", "gate"}; version None when nothing was registered (no
    stage-2 checkpoint, or the gate refused).
    """
    log = get_run_logger()
    if result.best_checkpoint is None:  # a pretrain-only run has no classifier
        return {"version": None, "aliases": [], "gate": "no stage-2 checkpoint"}
    earlier = [v for v in tracker.model_versions(config.registered_model) if v.run_id == run_id]
    if earlier:  # a resumed run that had already registered: one run, one version
        version = max(int(v.version) for v in earlier)
        log.info(
            "run %s already registered %s version %s: not registering again", run_id, config.registered_model, version
        )
        return {"version": str(version), "aliases": [], "gate": f"already registered as version {version} by this run"}
    mode = monitor_mode(config.monitor)
    gate = result.gate  # decided by the training run on cross-fitted val numbers, stated in its report
    if gate is None:
        return {"version": None, "aliases": [], "gate": "the run computed no gate"}
    model_uri = _log_model(tracker, result, run_id, config.data, config.threshold_criterion)
    tracker.logger(run_id).set_tags(
        {"registry": ("registered: " if gate.register else "not registered: ") + gate.reason}
    )
    if not gate.register:
        log.warning("not registering the model in %s: %s", config.registered_model, gate.reason)
        return {"version": None, "aliases": [], "gate": gate.reason}
    manifest_sha = fs.sha256_of(fs.IngestLayout(config.data).manifest)
    promote, why = champion_verdict(gate, mode, manifest_sha, tracker.alias_tags(config.registered_model, "champion"))
    tags = _version_tags(gate, result, manifest_sha, flow_run)
    version = tracker.register(model_uri, config.registered_model, tags)
    tracker.describe_version(
        config.registered_model, version, _card(gate, result, config, manifest_sha, run_link, flow_run)
    )
    aliases = ["candidate", "champion"] if promote else ["candidate"]
    for alias in aliases:
        tracker.set_alias(config.registered_model, alias, version)
    log.info("registered %s version %s (%s); champion: %s", config.registered_model, version, ", ".join(aliases), why)
    return {"version": str(version), "aliases": aliases, "gate": gate.reason, "champion": why}


def _version_tags(gate: Gate, result: TrainResult, manifest_sha: str, flow_run: dict[str, str]) -> dict[str, str]:
    tags = {TAG_MONITOR: gate.metric, TAG_VALUE: repr(gate.value), "prior_value": repr(gate.prior),
            TAG_DATA: manifest_sha, "threshold": repr(result.threshold)}  # fmt: skip
    fraction = result.train_fake_fraction if result.train_fake_fraction is not None else _fake_fraction(result.dataset)
    if fraction is not None:  # evaluate-avff's prior baseline
        tags["train_fake_fraction"] = repr(fraction)
    return {**tags, **links.flow_run_tags(flow_run)}


def _card(gate: Gate, result: TrainResult, config: TrainSettings, manifest_sha: str, run_link: str | None,
          flow_run: dict[str, str]) -> str:  # fmt: skip
    model = {"preset": config.model_preset, "fusion": result.model_config.get("fusion"),
             "img_size": result.model_config.get("img_size"), "num_frames": result.model_config.get("num_frames"),
             "best_epoch": result.best_epoch}  # fmt: skip
    card_links = {"MLflow run": run_link or "(this version's run)"}
    if flow_run:
        card_links["Prefect flow run"] = flow_run.get("url") or flow_run["id"]
    return model_card(gate=gate, data=config.data, manifest_sha256=manifest_sha, dataset=result.dataset,
                      val_metrics=result.val_metrics, test_metrics=result.test_metrics, threshold=result.threshold,
                      threshold_criterion=config.threshold_criterion, preprocess=ingest_preprocess(config.data),
                      model=model, links=card_links)  # fmt: skip


def open_tracked_run(tracker: Tracker, run: Run, config: TrainSettings, flow_run: dict[str, str],
                     resumed: bool) -> tuple[RunLogger, str | None]:  # fmt: skip
    """Record, link, tag and parametrise the flow's run; returns its logger and UI link."""
    remember_run(config.output_dir, run.run_id)
    run_link = links.run_url(tracker.uri, run.experiment_id, run.run_id)
    links.link_run(run_link, run.run_id, "the MLflow run of this flow run")
    logger = tracker.logger(run.run_id, summary=is_summary)  # the run page: summary first
    tags = run_tags(config)
    logger.set_tags({**tags, **links.flow_run_tags(flow_run)})
    # the tracking URI may carry credentials: it is the run's location, not a parameter
    params = flatten_params(config.model_dump(by_alias=True, exclude={"tracking_uri"}), "train")
    if resumed:  # MLflow refuses to change a logged param: what changed on resume becomes a tag
        get_run_logger().info("resuming MLflow run %s from %s: its curves continue", run.run_id, config.resume_from)
        params, changed = split_changed_params(dict(run.params), params)
        logger.set_tags({f"resumed.{k}": str(v) for k, v in changed.items()})
    logger.log_params(params)
    log_dataset(tracker, fs.IngestLayout(config.data).manifest, tags["manifest_sha256"], run.run_id)
    return logger, run_link


def train_then_close(config: TrainSettings, logger: RunLogger, tracker: Tracker) -> TrainResult:
    """:func:`train`; the child run of curves ends with training, FAILED when it raises."""
    try:
        result = train(config, logger, tracker, locked=True)
    except BaseException:
        logger.close("FAILED")
        raise
    logger.close()
    return result


@flow(name="train-avff", log_prints=True)
def train_avff(config: TrainSettings) -> dict:
    """Train AVFF on ingested shards, track the run in MLflow and register the best model if it beats the prior."""
    check_inputs(config)
    tracker = MLflowTracker.connect(config.tracking_uri)
    experiment_id = tracker.use_experiment(config.experiment)
    flow_run = links.flow_run()
    # the lock first: a run refused by it must not have written its run record (or anything) there
    with training_lock(config.output_dir) as held:
        resumed = resumable_run(config.resume_from, experiment_id, tracker)
        with tracker.open_run(name=flow_run.get("name"), resume=resumed) as run:
            if held is not None:
                held.describe(f"MLflow run {run.run_id}")
            logger, run_link = open_tracked_run(tracker, run, config, flow_run, resumed is not None)
            result = train_then_close(config, logger, tracker)
            registry = register_model(tracker, result, config, run.run_id, run_link, flow_run)
            model_line = _model_line(config.registered_model, registry, tracker.uri)
            tracker.set_note(run.run_id, _run_note(flow_run, model_line))  # the run page's description
    return _finished(run.run_id, run_link, model_line, registry, result)


def _finished(run_id: str, run_link: str | None, model_line: str, registry: dict, result: TrainResult) -> dict:
    """The report as a Prefect artifact, a log line, and the flow's result."""
    header = f"MLflow run {links.markdown_link(run_id, run_link)} · model: {model_line}\n\n"
    if result.report_path:  # the same report in the Prefect UI
        create_markdown_artifact(markdown=header + fs.read_bytes(result.report_path).decode(), key="training-report",
                                 description=f"MLflow run {run_id}")  # fmt: skip
    get_run_logger().info("run %s: best epoch %s, model version %s", run_id, result.best_epoch, registry["version"])
    return {
        "run_id": run_id,
        "run_url": run_link,
        "model_version": registry["version"],
        "aliases": registry["aliases"],
        "registry": registry["gate"],
        "report": result.report_path,
        "test_metrics": {k: v for k, v in result.test_metrics.items() if k.startswith(("test_clip_", "test_video_"))},
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "output_dir": result.output_dir,
    }


def _model_line(name: str, registry: dict, tracking_uri: str) -> str:
    """Markdown: the registered version (linked) and its aliases, or why nothing was registered."""
    version = registry["version"]
    if version is None:
        return f"not registered: {registry['gate']}"
    url = links.model_version_url(tracking_uri, name, version)
    return f"{links.markdown_link(f'{name} version {version}', url)} ({', '.join(registry['aliases'])})"


def _run_note(flow_run: dict[str, str], model_line: str) -> str:
    """The MLflow run's description: which flow run made it, what became of the model, where the numbers are."""
    made_by = (f"Prefect flow run {links.markdown_link(flow_run['name'], flow_run.get('url'))} (train-avff)"
               if flow_run else "train-avff, outside a Prefect flow run")  # fmt: skip
    return (
        f"Made by {made_by}.\n\nModel: {model_line}.\n\nArtifacts: `report.md` (the training report), "
        "`metrics_table.json` (val and test, clip and video level, against the prior and majority baselines). "
        "Curves: every epoch's here, after the summary; live during training, with the per-step ones, "
        "on the child run `· curves`."
    )
