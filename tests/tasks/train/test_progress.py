"""ProgressLog: lines from the per-step metrics, on a fake clock; the wrapped logger sees everything."""

from __future__ import annotations

from tasks.train.progress import ProgressLog
from tasks.tracking.logger import InMemoryLogger


def test_lines_carry_loss_rate_and_an_eta_once_an_epoch_length_is_known():
    now = [0.0]
    lines: list[str] = []
    inner = InMemoryLogger()
    log = ProgressLog(inner, lines.append, global_batch=16, every_s=10, clock=lambda: now[0])
    step = 0
    for epoch in range(2):
        for _ in range(10):  # 10 steps of 16 clips, 2 s each: 8 samples/s
            now[0] += 2.0
            step += 1
            log.log_metrics({"train_step_loss": 0.5, "train_step_lr": 1e-3}, step=step)
        log.log_metrics({"train_loss": 0.5, "val_video_auc": 0.75}, step=epoch + 1)
    steps = [ln for ln in lines if " step " in ln]
    assert steps[0] == "classify epoch 1 step 6 | loss 0.5000 | 8.0 samples/s"  # no ETA yet: epoch length unknown
    assert lines[1] == "classify epoch 1 done in 0:18 | train_loss 0.5000 | val_video_auc 0.7500"  # from its first step
    assert steps[1] == "classify epoch 2 step 5 | loss 0.5000 | 8.0 samples/s | epoch ETA 0:10"
    assert len(inner.metrics["train_step_loss"]) == 20 and inner.last("val_video_auc") == 0.75
    log.log_params({"a": 1})  # everything else reaches the wrapped logger
    assert inner.params == {"a": 1}
