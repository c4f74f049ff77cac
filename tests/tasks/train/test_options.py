"""run_training with the experiment switches on: each one reaches the run (tiny AVFF, CPU, seconds)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from storage import fs
from tasks.ingest.folds import fold_split, manifest_rows
from tasks.synthetic.shards import write_synthetic_shards
from tasks.tracking.logger import InMemoryLogger
from tasks.train.run import run_training
from tasks.train.settings import MixAugment, TrainSettings, audio_augment_preset, video_augment_preset

SMALL = {"num_slices": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("data"))
    write_synthetic_shards(root, fake_fraction=0.25)  # train: 16 videos, 4 FAKE, 2 clips each
    return root


def _settings(data: str, out, **kw) -> TrainSettings:
    base = dict(data=data, output_dir=str(out), overrides=SMALL, stages="classify", epochs=2, batch_size=8,
                lr=1e-3, patience=5, device="cpu", shuffle_buffer=16, report_bootstrap=10, num_workers=0)  # fmt: skip
    return TrainSettings(**{**base, **kw})


def test_every_switch_reaches_the_run(data, tmp_path):
    log = InMemoryLogger()
    settings = _settings(
        data, tmp_path, fusion="late", dropout=0.1, video_augment=video_augment_preset("strong"),
        audio_augment=audio_augment_preset("sync_safe"), mix=MixAugment(mixup_alpha=0.4, cutmix_alpha=1.0),
        loss="focal", focal_gamma=1.0, class_weight="prior", label_smoothing=0.1, aux_weight=0.3,
        contrastive_weight=0.05, branch_weight=0.2, curriculum_epochs=2, curriculum_start=0.5, progressive_epochs=2,
    )  # fmt: skip
    result = run_training(settings, log=log)
    assert log.params["model.fusion"] == "late" and log.params["model.dropout"] == 0.1
    assert log.params["model.aux_heads"] is True
    assert log.params["resolved.pos_weight"] == pytest.approx(24 / 8)  # n_real / n_fake train clips
    rows = [r for r in result.history if r["stage"] == "classify"]
    assert [r["curriculum_fraction"] for r in rows] == [0.5, 0.75]
    assert [r["progressive_scale"] for r in rows] == [0.5, 0.75]
    assert all(
        {"train_aux_video", "train_aux_audio", "train_contrastive", "train_logit_fusion"} <= r.keys() for r in rows
    )
    # the curriculum trains on 16 then 24 of the 32 clips: 2 + 3 steps of 8
    assert [s for s, _ in log.metrics["train_step_loss"]] == [1, 2, 3, 4, 5]
    assert "train_step_aux_video" in log.metrics and "train_step_cls" in log.metrics
    assert "test_video_auc" in result.test_metrics and "best_val_video_auc" in result.val_metrics
    assert log.metrics["best_val_video_log_loss"][0][0] == result.best_epoch


def test_a_fold_run_validates_on_its_fold_and_never_reads_test(data, tmp_path):
    result = run_training(_settings(data, tmp_path, epochs=1, fold=0), log=InMemoryLogger())
    split = fold_split(manifest_rows(fs.IngestLayout(data)), 0)
    val_ids = set(pq.read_table(result.predictions["val"])["video_id"].to_pylist())
    assert val_ids == split.val and {v[:3] for v in val_ids} == {"tra", "val"}  # pooled from both splits
    assert result.test_metrics == {} and "test" not in result.predictions and result.report_path is None
    assert result.val_metrics["best_val_video_n"] == len(split.val)


def test_named_switches_may_not_contradict_overrides(data, tmp_path):
    with pytest.raises(ValueError, match="contradicts"):
        run_training(_settings(data, tmp_path, fusion="late", overrides={**SMALL, "fusion": "attention"}),
                     log=InMemoryLogger())  # fmt: skip
    with pytest.raises(ValueError, match="unknown fusion"):
        _settings(data, tmp_path, fusion="nope")
    with pytest.raises(ValueError, match="class_weight"):
        _settings(data, tmp_path, class_weight="inverse")
