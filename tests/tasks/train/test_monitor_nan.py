"""A monitor that is NaN on the validation split (one class) stops training before it starts."""

from __future__ import annotations

import pytest

from tasks.synthetic.shards import write_synthetic_shards
from tasks.tracking.logger import InMemoryLogger
from tasks.train.run import run_training
from tasks.train.settings import TrainSettings


def test_one_class_val_with_an_auc_monitor_fails_before_any_epoch(tmp_path):
    data = tmp_path / "data"
    # val: one video, so one class; video AUC is undefined there
    write_synthetic_shards(
        str(data), videos={"train": 6, "val": 1, "test": 2}, shards={"train": 1, "val": 1, "test": 1}
    )
    settings = TrainSettings(data=str(data), output_dir=str(tmp_path / "out"), overrides={"num_slices": 2},
                             pretrain_epochs=1, epochs=2, batch_size=4, device="cpu", monitor="val_video_auc", num_workers=0)  # fmt: skip
    log = InMemoryLogger()
    with pytest.raises(ValueError, match="monitor 'val_video_auc' is undefined: the val split holds"):
        run_training(settings, log=log)
    assert not (tmp_path / "out" / "checkpoints").exists() or not any((tmp_path / "out" / "checkpoints").iterdir())
