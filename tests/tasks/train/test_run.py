"""run_training end to end on learnable synthetic shards with the real tiny AVFF (CPU)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from avff_model import AVFF, get_config

from storage import fs
from tasks.evaluate import metrics as M
from tasks.ingest.folds import fold_split, manifest_rows
from storage.decision import Decision, read_decision
from tasks.serve.scorer import load_model
from tasks.tracking.mlflow_adapter import is_step_series
from storage.checkpoint import load_checkpoint
from tasks.train.finish import METRICS_TABLE, RELIABILITY_PLOT, UNCALIBRATED
from tasks.train.optim import EarlyStopping
from tasks.synthetic.shards import write_synthetic_shards
from tasks.tracking.logger import InMemoryLogger
from tasks.train.run import Progress, batch_transform, load_encoders, load_run_data, run_training, save_encoders
from tasks.train.settings import TrainSettings

SMALL = {"num_slices": 2}  # the data sets img_size 32, 4 frames, 32x32 mels; K must fit 2 time tokens


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("data"))
    write_synthetic_shards(root)
    return root


def _settings(data: str, out: Path, **kw) -> TrainSettings:
    base = dict(data=data, output_dir=str(out), overrides=SMALL, pretrain_epochs=1, epochs=3, batch_size=8,
                lr=1e-3, patience=5, seed=0, device="cpu", shuffle_buffer=16, report_bootstrap=20, num_workers=0)  # fmt: skip
    return TrainSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def full(data, tmp_path_factory):
    """An uninterrupted run: stage 1 (1 epoch), stage 2 (3 epochs), test, report."""
    log = InMemoryLogger()
    out = tmp_path_factory.mktemp("full")
    return run_training(_settings(data, out), log=log), log


def test_a_run_learns_the_synthetic_pattern_and_reports_it(full):
    result, log = full
    stages = [r["stage"] for r in result.history]
    assert stages == ["pretrain", "classify", "classify", "classify"] and result.epochs_run == 4
    losses = [r["train_loss"] for r in result.history if r["stage"] == "classify"]
    assert losses[-1] < losses[0]
    assert result.test_metrics["test_video_auc"] >= 0.9 and result.test_metrics["test_clip_auc"] >= 0.85
    assert result.test_metrics["test_video_log_loss"] < result.test_metrics["test_baselines_video_prior_log_loss"]
    assert 0 < result.threshold < 1 and "test_video_at_val_threshold_f1" in result.test_metrics
    # per-step metrics continue across stages; per-epoch metrics use the global epoch
    assert [s for s, _ in log.metrics["pretrain_step_loss"]] == [1, 2]  # 16 REAL clips / 8
    assert [s for s, _ in log.metrics["train_step_loss"]] == list(range(3, 15))  # 3 epochs x 4 steps
    assert [s for s, _ in log.metrics["val_video_auc"]] == [2, 3, 4]
    assert log.params["model.num_slices"] == 2 and log.params["model.img_size"] == 32
    report = Path(result.report_path).read_text()
    assert report.startswith("# AVFF training report") and "Test metrics" in report
    logged = {Path(p).name for p, _ in log.artifacts}
    assert {"report.md", "curve_loss.png", "test_video_roc.png", "test_video_confusion.png"} <= logged
    assert {"val.parquet", "test.parquet"} <= logged and all(Path(p).exists() for p in result.plots)
    assert load_checkpoint(result.best_checkpoint).state["epoch"] == result.best_epoch


def test_the_run_calibrates_on_val_logs_the_map_and_ece_and_stores_it_beside_the_best_checkpoint(full):
    result, log = full
    a, b = result.slope, result.intercept
    assert log.metrics["calibration_slope"] == [(result.best_epoch, a)] and a != 1.0
    assert log.metrics["calibration_intercept"] == [(result.best_epoch, b)]
    [(_, before)], [(_, after)] = log.metrics["test_clip_uncalibrated_ece"], log.metrics["test_clip_ece"]
    assert 0 <= after <= 1 and 0 <= before <= 1
    on_page = [k for k in log.metrics if not is_step_series(k)]  # per-step curves go to the '· curves' child run
    assert len(on_page) <= 40  # the run page; everything else is in the metrics table
    decision = read_decision(result.best_checkpoint)  # with the read-out fitted by default (readout="fitted")
    assert decision == Decision(result.threshold, "f1", a, b, decision.readout) and decision.readout is not None
    scorer = load_model(result.best_checkpoint, device="cpu")
    assert (scorer.slope, scorer.intercept) == (a, b)
    rows = {(r["split"], r["level"], r["predictor"]): r for r in log.tables[METRICS_TABLE]}
    raw, cal = rows[("val", "clip", UNCALIBRATED)], rows[("val", "clip", "model")]
    assert cal["log_loss"] <= raw["log_loss"] and cal["auc"] == pytest.approx(raw["auc"])
    assert 0 <= cal["ece"] <= 1 and 0 <= raw["ece"] <= 1 and rows[("test", "clip", "model")]["ece"] == after
    assert cal["log_loss"] == pytest.approx(result.val_metrics["best_val_clip_log_loss"])
    assert RELIABILITY_PLOT in {Path(p).name for p, _ in log.artifacts}
    report = Path(result.report_path).read_text()
    assert f"P(FAKE) = sigmoid({a:.3f} · logit {b:+.3f})" in report and "## Calibration" in report
    gate = result.gate  # decided on cross-fitted val numbers, stated first in the report
    assert gate is not None and gate.metric == "val_video_log_loss" and report.splitlines()[2] == gate.headline()
    assert gate.value != pytest.approx(result.val_metrics["best_val_video_log_loss"])  # not the in-sample number
    assert gate.interval[0] <= gate.value - gate.prior <= gate.interval[1]


def test_a_fitted_readout_is_kept_in_the_decision_scored_by_the_scorer_and_gated_out_of_fold(data, tmp_path):
    """readout="fitted": the join fitted after training goes into decision.json, a scorer loaded from the best
    checkpoint applies it (its P(FAKE) are the run's test predictions), and the gate judges it cross-fitted;
    readout="end_to_end" keeps the trained sum and fits nothing."""
    from avff_model.inputs import clip_to_tensors
    from avff_model.readout import Readout
    from storage.shard_io import read_clips
    from storage.tables import PredictionRow, read_table
    from tasks.train.data import shard_urls

    log = InMemoryLogger()
    result = run_training(_settings(data, tmp_path, pretrain_epochs=0, epochs=2, readout="fitted"), log=log)
    decision = read_decision(result.best_checkpoint)
    readout = Readout.from_json(decision.readout)
    assert set(readout.weights) == {"fusion", "signals", "probe"} and len(readout.probe) == 27
    assert {k: v[-1][1] for k, v in log.metrics.items() if k.startswith("readout_weight_")} == {
        f"readout_weight_{k}": w for k, w in readout.weights.items()
    }
    scorer = load_model(result.best_checkpoint, device="cpu")
    assert scorer.model.readout == readout and (scorer.slope, scorer.intercept) == (result.slope, result.intercept)
    clips = [c for url in shard_urls(fs.IngestLayout(data), "test") for c in read_clips(url)]
    tensors = [clip_to_tensors(c) for c in clips]
    p = scorer.predict_proba(torch.stack([t["video"] for t in tensors]), torch.stack([t["audio"] for t in tensors]))
    kept = {(r.video_id, r.clip): r.p_fake for r in read_table(result.predictions["test"], PredictionRow)}
    np.testing.assert_allclose(p, [kept[(c.meta.video_id, c.meta.clip)] for c in clips], rtol=1e-4, atol=1e-5)
    assert "the read-out's join refitted on each half" in result.gate.reason
    report = Path(result.report_path).read_text()
    assert "## Read-out" in report and f"the texture probe's logit {readout.weights['probe']:+.3f}" in report
    e2e = run_training(_settings(data, tmp_path / "e2e", pretrain_epochs=0, epochs=1, readout="end_to_end"),
                       log=InMemoryLogger())  # fmt: skip
    assert read_decision(e2e.best_checkpoint).readout is None and load_model(e2e.best_checkpoint).model.readout is None
    assert "## Read-out" not in Path(e2e.report_path).read_text()


def test_the_texture_probe_reads_a_seeded_spread_of_the_train_split_when_it_is_capped(data, tmp_path, monkeypatch):
    """With more train clips than PROBE_CLIPS, the probe's clips come from a shuffled pass (shards in a seeded
    order, through the shuffle buffer), not the first shards' first clips; the same seed reads the same ones."""
    from storage.shard_io import read_clips
    from tasks.train import readout as readout_fit
    from tasks.train.data import shard_urls

    monkeypatch.setattr(readout_fit, "PROBE_CLIPS", 16)  # 2 batches of 8
    seen, collect = [], readout_fit.collect

    def spy(*args, **kw):
        parts = collect(*args, **kw)
        if kw.get("texture_only"):
            seen.append([k[:2] for k in parts.keys])
        return parts

    monkeypatch.setattr(readout_fit, "collect", spy)
    for name in ("a", "b"):
        run_training(_settings(data, tmp_path / name, pretrain_epochs=0, epochs=1, readout="fitted"),
                     log=InMemoryLogger())  # fmt: skip
    in_order = [(c.meta.video_id, c.meta.clip) for url in shard_urls(fs.IngestLayout(data), "train")
                for c in read_clips(url)]  # fmt: skip
    assert len(in_order) > 16 and len(seen[0]) == 16
    assert seen[0] != in_order[:16] and set(seen[0]) <= set(in_order)
    assert seen[0] == seen[1]  # seeded


class _Crash(Exception):
    pass


class _CrashingLogger(InMemoryLogger):
    """Dies while logging the metrics of epoch ``at`` (after its checkpoint was written)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def log_metrics(self, metrics, step):
        if step == self.at and ("val_loss" in metrics or "pretrain_loss" in metrics):
            raise _Crash(f"simulated crash at epoch {step}")
        super().log_metrics(metrics, step)


@pytest.mark.parametrize("crash_at, elsewhere", [(1, False), (2, True)])
def test_resume_after_a_crash_equals_the_uninterrupted_run(data, full, tmp_path, crash_at, elsewhere, assert_same_run):
    """Crash after stage 1 (resume in place) or after stage-2 epoch 1 (resume into a new dir)."""
    reference, _ = full
    settings = _settings(data, tmp_path / "a")
    with pytest.raises(_Crash):
        run_training(settings, log=_CrashingLogger(crash_at))
    out = tmp_path / ("b" if elsewhere else "a")
    resume = settings.replace(output_dir=str(out), resume_from=str(tmp_path / "a"))
    resumed = run_training(resume, log=InMemoryLogger())
    assert resumed.epochs_run == 4 - crash_at
    assert_same_run(reference, resumed)


def test_early_stopping_stops_when_validation_stops_improving(data, tmp_path):
    # lr 1e-12: the weights barely move, so val log loss cannot improve by min_delta
    log = InMemoryLogger()
    result = run_training(_settings(data, tmp_path, stages="classify", epochs=20, lr=1e-12, min_delta=1e-4,
                                    patience=2, scheduler="constant"), log=log)  # fmt: skip
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert len(log.metrics["train_step_loss"]) == 3 * 4  # no fourth epoch was trained
    assert load_checkpoint(result.last_checkpoint).state["epoch"] == 3
    assert "test_video_auc" in result.test_metrics


def test_pretrained_encoders_carry_stage_1_into_a_classify_only_run(data, tmp_path):
    pre = run_training(_settings(data, tmp_path / "pre", stages="pretrain"), log=InMemoryLogger())
    assert pre.encoders and pre.best_checkpoint is None and pre.report_path is None
    log = InMemoryLogger()
    run = run_training(_settings(data, tmp_path / "cls", stages="classify", epochs=1,
                                 pretrained_encoders=pre.encoders), log=log)  # fmt: skip
    assert log.params["pretrained_encoders.loaded"] > 0 and log.params["pretrained_encoders.missing"] == 0
    assert [r["stage"] for r in run.history] == ["classify"] and run.report_path


def test_contradicting_shape_overrides_fail_before_training(data, tmp_path):
    with pytest.raises(ValueError, match="contradict"):
        run_training(_settings(data, tmp_path, overrides={**SMALL, "img_size": 64}), log=InMemoryLogger())


def test_shards_ingested_with_another_mel_setting_are_refused_before_training(data, tmp_path):
    """The audio normalisation (AUDIO_MEAN / AUDIO_STD) holds for ingest's default log-mel only."""
    import json
    import shutil

    other = tmp_path / "shards"
    shutil.copytree(data, other)
    (other / "ingest_config.json").write_text(json.dumps({"preprocess": {"n_mels": 64, "hop_ms": 10.0}}))
    with pytest.raises(ValueError, match=f"shards {other}: its log-mels were made with n_mels=64"):
        run_training(_settings(str(other), tmp_path / "out"), log=InMemoryLogger())
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_run_data_counts_roles_labels_groups_and_the_training_prior(data):
    layout = fs.IngestLayout(data)
    split = load_run_data(layout, None)
    assert {r: (s["videos_real"], s["videos_fake"], s["clips_real"], s["clips_fake"]) for r, s in split.stats.items()} == {
        "train": (8, 8, 16, 16), "val": (4, 4, 8, 8), "test": (4, 4, 8, 8)}  # fmt: skip
    assert len(split.labels["train"]) == 32 and split.labels["train"].sum() == 16  # clip labels, FAKE = 1
    prior = split.training_prior()
    assert prior.clips.tolist() == split.labels["train"].tolist() and prior.videos.tolist() == [0] * 8 + [1] * 8
    assert split.train_clips() == 32 and all(split.group_of[v] == v for v in split.group_of)
    fold = load_run_data(layout, 0)  # train+val pooled: fold 0 validates, test plays no role
    view = fold_split(manifest_rows(layout), 0)
    assert fold.view == view and fold.stats["test"]["videos_real"] + fold.stats["test"]["videos_fake"] == 0
    assert fold.stats["val"]["videos_real"] + fold.stats["val"]["videos_fake"] == len(view.val)
    assert fold.train_clips() == len(fold.labels["train"]) == 2 * len(view.train)


def test_progress_round_trips_through_its_state_and_counts_epochs():
    progress = Progress(EarlyStopping(patience=2))
    progress.end_epoch(5)
    progress.es.step(0.4, progress.epoch)
    progress.history.append({"epoch": 1, "val_loss": 0.4})
    state = progress.state_dict()
    restored = Progress(EarlyStopping(patience=2))
    restored.load_state_dict(state)
    assert (restored.epoch, restored.global_step, restored.epochs_run) == (1, 5, 0)  # epochs_run: this call only
    assert restored.history == progress.history and restored.history is not progress.history
    assert restored.es.best == 0.4 and restored.es.best_epoch == 1


def test_batch_transform_is_off_by_default_and_seeded_by_the_global_epoch(tmp_path):
    assert batch_transform(_settings("d", tmp_path), 0, 3) is None
    cfg = _settings("d", tmp_path, progressive_epochs=2, progressive_start=0.5)
    assert [batch_transform(cfg, e, 1).scale for e in (0, 1)] == [0.5, 0.75] and batch_transform(cfg, 2, 1) is None
    draws = [batch_transform(cfg, 0, epoch).g.initial_seed() for epoch in (1, 1, 2)]
    assert draws[0] == draws[1] != draws[2]


@pytest.mark.parametrize("where", ["local", "memory"])
def test_encoders_round_trip_through_safetensors(tmp_path, where):
    torch.manual_seed(0)
    cfg = get_config("tiny", img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)
    a, b = AVFF(cfg), AVFF(cfg)
    uri = (
        str(tmp_path / "enc.safetensors")
        if where == "local"
        else f"memory://avff-enc-{uuid.uuid4().hex}/enc.safetensors"
    )
    save_encoders(a, uri)
    loaded, missing = load_encoders(b, uri)
    assert loaded == len(a.encoder_state_dict()) and missing == 0
    assert all(torch.equal(v, b.encoder_state_dict()[k]) for k, v in a.encoder_state_dict().items())


def test_the_schedule_counts_every_clip_the_training_loader_reads(tmp_path):
    from tasks.train.data import make_loader

    own = write_synthetic_shards(str(tmp_path / "own"))
    extra = write_synthetic_shards(str(tmp_path / "extra"), videos={"train": 2, "val": 1, "test": 1}, seed=1)
    data = load_run_data(own, None, extra=(extra,))
    read = sum(len(b["video_id"]) for b in make_loader(own, "train", batch_size=8, extra_layouts=[extra]))
    assert data.train_clips() == read == 32 + 8
    assert load_run_data(own, None).train_clips() == 32


def test_a_held_out_type_leaves_training_validation_and_the_pseudo_fakes_but_not_test(tmp_path):
    from tasks.train.data import make_loader

    layout = write_synthetic_shards(str(tmp_path / "d"), manipulations=("lipsync_offset", "face_blend"))
    data = load_run_data(layout, None, ("lipsync_offset",))
    held = {r.video_id for r in manifest_rows(layout) if r.manipulation == "lipsync_offset"}
    assert data.held_out == held and {v[:3] for v in held} == {"tra", "val", "tes"}
    counts = {role: (s["videos_real"], s["videos_fake"]) for role, s in data.stats.items()}
    assert counts == {"train": (8, 4), "val": (4, 2), "test": (4, 4)}  # test keeps them for the report
    for role in ("train", "val"):
        read = {v for b in make_loader(layout, role, batch_size=8, drop_videos=data.held_out) for v in b["video_id"]}
        assert not read & held and len(read) == sum(counts[role])
    cfg = _settings("d", tmp_path, pseudo_fakes={"p": 0.5}, exclude_manipulations=["lipsync_offset"])
    assert "audio_shift" not in batch_transform(cfg, 0, 1).pseudo_fakes.kinds
    only_the_stand_in = cfg.replace(pseudo_fakes={"p": 0.5, "kinds": ["audio_shift"]})
    assert batch_transform(only_the_stand_in, 0, 1) is None


def test_a_run_holding_out_a_type_never_validates_on_it(tmp_path):
    from storage.tables import PredictionRow, read_table

    layout = write_synthetic_shards(str(tmp_path / "d"), manipulations=("lipsync_offset", "face_blend"))
    result = run_training(_settings(layout.root, tmp_path / "run", pretrain_epochs=0, epochs=1,
                                    exclude_manipulations=["face_blend"]), log=InMemoryLogger())  # fmt: skip
    held = {r.video_id for r in manifest_rows(layout) if r.manipulation == "face_blend"}
    scored = {split: {r.video_id for r in read_table(uri, PredictionRow)} for split, uri in result.predictions.items()}
    assert not scored["val"] & held and scored["test"] & held  # the threshold and T never saw it; test reports it
    assert result.dataset["val"]["videos_fake"] == 2 and result.dataset["test"]["videos_fake"] == 4


def test_class_weight_and_prior_count_what_the_training_loader_yields_with_extra_data_and_pseudo_fakes(tmp_path):
    """Own data 50 % FAKE, 40 extra REAL clips, pseudo-fakes p = 0.6: the loader yields ~69 % FAKE targets;
    the manifest alone says 50 % (what class_weight="prior" and the prior baseline used before)."""
    from tasks.train.data import make_loader

    own = write_synthetic_shards(str(tmp_path / "own"))
    extra = write_synthetic_shards(str(tmp_path / "extra"), videos={"train": 12, "val": 4, "test": 4},
                                   fake_fraction=0.0, seed=1)  # fmt: skip
    cfg = _settings(str(tmp_path / "own"), tmp_path / "out", stages="classify", epochs=1, class_weight="prior",
                    extra_train_data=(str(tmp_path / "extra"),), pseudo_fakes={"p": 0.6})  # fmt: skip
    fake = total = 0.0
    for epoch in range(8):  # the real loader and the run's own per-epoch transform, several epochs' draws
        transform = batch_transform(cfg, 0, epoch)
        for batch in make_loader(own, "train", batch_size=8, extra_layouts=[extra], shuffle=True, seed=0, epoch=epoch):
            target = transform(batch)["target"]
            fake, total = fake + float(target.sum()), total + len(target)
    counted = fake / total
    assert total == 8 * 72 and abs(counted - (16 + 0.6 * 56) / 72) < 0.05  # 16 FAKE + 0.6 of 56 REAL of 72
    data = load_run_data(own, None, extra=(extra,))
    assert len(data.loader_labels()) == data.train_clips() == 72 and data.loader_labels().sum() == 16
    log = InMemoryLogger()
    result = run_training(cfg, log=log)
    pos_weight = log.params["resolved.pos_weight"]
    assert pos_weight == pytest.approx((1 - counted) / counted, abs=0.12) and pos_weight < 0.6  # manifest: 1.0
    videos = (8 + 0.6 * (8 + 20)) / 36  # 8 FAKE, 8 own + 20 extra REAL videos
    assert result.train_fake_fraction == pytest.approx(videos)
    report = Path(result.report_path).read_text()
    assert (
        f"The training loader reads 72 clips a pass (extra_train_data included); the FAKE fraction of its "
        f"targets is {(16 + 0.6 * 56) / 72:.3f}" in report
    )
    assert result.test_metrics["test_baselines_clip_prior_log_loss"] == pytest.approx(
        M.log_loss(np.repeat([0, 1], [8, 8]), np.full(16, (16 + 0.6 * 56) / 72)), rel=1e-6
    )  # test: 8 REAL, 8 FAKE clips


# ---------------------------------------------------------------- image size: the preset's, not the shards'
def test_laptop_on_224px_shards_stays_at_112px_and_within_8gb():
    """The README's real-data command ingests 224 px faces and trains `laptop`: the model keeps its
    112 px (392 video tokens, not 1568) and its batch-32 estimate, signal branches included, fits 8 GB."""
    from avff_model import estimate_activation_bytes, estimate_params
    from tasks.train.data import InputShape
    from tasks.train.run import resolve_model_config

    cfg = resolve_model_config("laptop", {}, InputShape(img_size=224, num_frames=16, n_mels=128, mel_frames=320))
    assert cfg.img_size == 112 and cfg.num_video_tokens == 392
    estimate = estimate_activation_bytes(cfg, 32)
    state = 16 * estimate_params(cfg)["total"]  # fp32 weights + grads + Adam m, v
    assert estimate["signals"] > 0 and estimate["total"] + state + 2**30 < 8e9  # + ~1 GiB CUDA context and slack


def test_smaller_shards_are_never_enlarged():
    from tasks.train.data import InputShape
    from tasks.train.run import resolve_model_config

    small = InputShape(img_size=64, num_frames=16, n_mels=128, mel_frames=320)
    assert resolve_model_config("laptop", {}, small).img_size == 64  # the shards' size, as before
    assert resolve_model_config("laptop", {"img_size": 32}, small).img_size == 32  # shrunk on request
    odd = InputShape(img_size=100, num_frames=16, n_mels=128, mel_frames=320)
    assert resolve_model_config("laptop", {}, odd).img_size == 96  # whole 16 px patches
    with pytest.raises(ValueError, match=r"img_size=128 contradicts the shards' 64 px") as err:
        resolve_model_config("laptop", {"img_size": 128}, small)
    assert "\n" not in str(err.value)


def test_native_rate_clips_mask_as_many_slices_as_their_audio_has_time_tokens():
    """A native clip's 64 mel columns make 4 audio time tokens: 4 slices, not the preset's 8 (a config error
    before); spread clips keep the preset's 8; an explicit num_slices is kept (and checked)."""
    from tasks.train.data import InputShape
    from tasks.train.run import resolve_model_config

    native = InputShape(img_size=64, num_frames=16, n_mels=128, mel_frames=64)
    assert resolve_model_config("tiny", {}, native).num_slices == 4
    spread = InputShape(img_size=64, num_frames=16, n_mels=128, mel_frames=320)
    assert resolve_model_config("tiny", {}, spread).num_slices == 8
    assert resolve_model_config("tiny", {"num_slices": 2}, native).num_slices == 2
    with pytest.raises(ValueError, match="num_slices <= audio time tokens"):
        resolve_model_config("tiny", {"num_slices": 8}, native)


@pytest.fixture(scope="module")
def data_64px(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("data64"))
    write_synthetic_shards(root, videos={"train": 8, "val": 4, "test": 4}, shards={"train": 2, "val": 1, "test": 1},
                           img_size=64)  # fmt: skip
    return root


def test_a_run_shrinks_larger_shards_to_the_models_size_and_says_so(data_64px, tmp_path):
    log = InMemoryLogger()
    settings = _settings(data_64px, tmp_path, overrides={**SMALL, "img_size": 32}, pretrain_epochs=1, epochs=1)
    result = run_training(settings, log=log)
    assert log.params["model.img_size"] == 32 and log.params["resolved.frames"] == "64 px shards -> 32 px"
    assert "64 px shards -> 32 px" in Path(result.report_path).read_text()
    # scoring resizes the same way: the preprocessing's 64 px clips reach the 32 px model as the loader's do
    from storage.shard_io import read_clips
    from tasks.serve.predict import model_inputs
    from tasks.train.data import make_loader, shard_urls

    scorer = load_model(result.best_checkpoint, device="cpu")
    layout = fs.IngestLayout(data_64px)
    clips = list(read_clips(shard_urls(layout, "test")[0]))
    inputs = model_inputs(clips, scorer.config.img_size)  # video (N, 3, T, 32, 32), mouth (N, 4), lips (N, T, 2)
    batch = next(iter(make_loader(layout, "test", batch_size=len(clips), shuffle=False, img_size=32)))
    assert inputs["video"].shape[-2:] == (32, 32)
    assert all(torch.equal(inputs[k], batch[k]) for k in ("video", "mouth", "lips"))
    assert scorer.predict_proba(**inputs).shape == (len(clips),)


def test_a_run_reports_the_hand_made_statistics_as_baselines_in_mlflow_the_table_and_the_report(tmp_path,
                                                                                                 monkeypatch):  # fmt: skip
    """Talking faces and their lipsync_offset fakes (the generator's people and voices, the audio shifted):
    the hand-made lip-sync statistic separates them, the sharpness statistic cannot (same pixels); the run
    logs both beside the prior in a real MLflow store and writes them into its table and its report."""
    import json

    from mlflow import MlflowClient

    from tasks.synthetic.shards import write_lipsync_shards
    from tasks.tracking.mlflow_adapter import MLflowLogger

    layout = write_lipsync_shards(str(tmp_path / "lip"))
    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = client.create_run(client.create_experiment("lip")).info.run_id
    result = run_training(_settings(layout.root, tmp_path / "run", pretrain_epochs=0, epochs=1),
                          log=MLflowLogger(client, run_id))  # fmt: skip
    metrics = client.get_run(run_id).data.metrics
    for split in ("best_val", "test"):
        assert metrics[f"{split}_baselines_video_lip_sync_auc"] >= 0.95
        assert metrics[f"{split}_baselines_video_sharpness_auc"] == 0.5  # a REAL and its fake: the same frames
        assert f"{split}_baselines_video_prior_auc" in metrics
    table = json.loads(Path(client.download_artifacts(run_id, METRICS_TABLE, str(tmp_path))).read_text())
    rows = {(r[0], r[1], r[2]): dict(zip(table["columns"], r)) for r in table["data"]}
    assert rows[("test", "video", "hand-made lip-sync statistic")]["n"] == 8  # 4 people, REAL and FAKE each
    assert ("val", "clip", "hand-made sharpness statistic") in rows
    report = Path(result.report_path).read_text()
    lip = metrics["test_baselines_video_lip_sync_auc"]
    assert (
        f"| hand-made lip-sync statistic | {lip:.3f} |" in report
        and "| hand-made sharpness statistic | 0.500 |" in report
    )
