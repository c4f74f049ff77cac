"""Data-parallel training with real gloo process groups on CPU (tasks.train.run_distributed).

The equivalence holds because the global batch is the same set of clips: every train shard
of the synthetic set holds 8 clips, so with no shuffle buffer one rank's batch of 16 is two
whole shards, and two ranks' batches of 8 are the same two shards, one each (shards go to
ranks as ``urls[rank::world]`` of the same (seed, epoch) order). Stage 2's BCE is a per-clip
mean and the tiny preset has no dropout or BatchNorm, so DDP's averaged gradient is the
single-process gradient up to float summation order.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from storage.checkpoint import load_checkpoint, resolve_checkpoint
from storage.decision import read_decision
from tasks.synthetic.shards import write_synthetic_shards
from tasks.tracking.logger import JsonlLogger, read_jsonl_metrics
from tasks.train.run_distributed import spawn, train_rank
from tasks.train.run import run_training
from tasks.train.settings import TrainSettings

SMALL = {"num_slices": 2}
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("data"))
    write_synthetic_shards(root)  # train: 4 shards x 8 clips (4 REAL), val and test: 2 shards each
    return root


def _settings(data: str, out: Path, **kw) -> TrainSettings:
    base = dict(data=data, output_dir=str(out), overrides=SMALL, stages="classify", epochs=2, batch_size=16,
                lr=1e-3, patience=5, seed=0, device="cpu", precision="fp32", shuffle_buffer=0, dropout=0.0,
                report_bootstrap=10, log_checkpoints=False, num_workers=0)  # fmt: skip
    return TrainSettings(**{**base, **kw})


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5) or (math.isnan(a) and math.isnan(b))


def test_two_ranks_of_batch_8_train_like_one_process_of_batch_16(data, tmp_path):
    ref_log = JsonlLogger(path=str(tmp_path / "ref.jsonl"))
    ref = run_training(_settings(data, tmp_path / "ref"), log=ref_log)
    ddp = spawn(_settings(data, tmp_path / "ddp", batch_size=8), 2,
                functools.partial(JsonlLogger, path=str(tmp_path / "ddp.jsonl")), backend="gloo")  # fmt: skip
    ref_m, ddp_m = read_jsonl_metrics(ref_log.path), read_jsonl_metrics(str(tmp_path / "ddp.jsonl"))

    steps = ref_m["train_step_loss"]
    assert len(steps) == 4  # 2 epochs x 2 steps of 16 clips
    assert [s for s, _ in ddp_m["train_step_loss"]] == [s for s, _ in steps]
    for key in ("train_step_loss", "train_step_grad_norm", "train_step_lr"):
        assert all(_close(a, b) for (_, a), (_, b) in zip(ref_m[key], ddp_m[key])), (key, ref_m[key], ddp_m[key])
    assert len(ddp.history) == len(ref.history) == 2
    for ra, rb in zip(ref.history, ddp.history):
        for k in ("train_loss", "val_loss", "val_video_auc", "val_clip_log_loss", "val_video_log_loss"):
            assert _close(ra[k], rb[k]), (k, ra[k], rb[k])
    assert ddp.best_epoch == ref.best_epoch
    a, b = load_checkpoint(ref.last_checkpoint).weights, load_checkpoint(ddp.last_checkpoint).weights
    # atol 1e-4: the key part of a qkv bias has no true gradient (softmax ignores it), so Adam
    # turns float noise there into lr-sized steps (seen: 1.4e-5 after 4 steps of lr 1e-3)
    far = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-4)}
    assert not far, far
    # rank 0 alone scored all of test at the best checkpoint after the group closed
    assert _close(ref.test_metrics["test_video_auc"], ddp.test_metrics["test_video_auc"])
    assert _close(ref.test_metrics["test_clip_log_loss"], ddp.test_metrics["test_clip_log_loss"])
    assert Path(ddp.report_path).is_file()


def test_both_stages_run_under_ddp_and_the_adversarial_step_keeps_ranks_identical(data, tmp_path):
    """Stage 1 (generator + discriminator optimizers) is not batch-split-invariant (in-batch InfoNCE
    negatives, per-rank masks), so here the claim is DDP's: one weight set, stepped by both optimizers."""
    out = tmp_path / "both"
    res = spawn(_settings(data, out, stages="both", pretrain_epochs=1, epochs=1, batch_size=8), 2,
                functools.partial(JsonlLogger, path=str(tmp_path / "m.jsonl")), backend="gloo")  # fmt: skip
    m = read_jsonl_metrics(str(tmp_path / "m.jsonl"))
    assert len(m["pretrain_step_loss"]) == 1  # 16 REAL clips = one global batch of 2 x 8
    assert m["pretrain_step_disc_grad_norm"][0][1] > 0 and m["pretrain_step_grad_norm"][0][1] > 0
    pre = load_checkpoint(str(out / "checkpoints" / "epoch-0001"))
    assert pre.state["stage"] == "pretrain" and pre.state["world_size"] == 2 and pre.state["global_batch"] == 16
    init = load_checkpoint(str(out / "checkpoints" / "epoch-0001")).weights
    assert any(k.startswith(("video_disc", "audio_disc")) for k in init)
    assert [r["stage"] for r in res.history] == ["pretrain", "classify"]


def test_one_rank_trains_bit_for_bit_like_the_single_process_run(data, tmp_path, monkeypatch, assert_same_run):
    """A rank is the same Run given another world (tasks.train.world): with one rank nothing else differs,
    DDP and the gathering included (world_size 1 averages over one gradient, gathers one rank)."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    kw = dict(stages="both", pretrain_epochs=1, epochs=2, batch_size=8)
    ref = run_training(_settings(data, tmp_path / "ref", **kw), log=JsonlLogger(path=str(tmp_path / "ref.jsonl")))
    one = train_rank(_settings(data, tmp_path / "one", **kw), functools.partial(JsonlLogger, path=str(tmp_path / "one.jsonl")),
                     backend="gloo", init_method=f"file://{tmp_path}/rendezvous")  # fmt: skip
    assert_same_run(ref, one)
    assert read_jsonl_metrics(str(tmp_path / "one.jsonl")) == read_jsonl_metrics(str(tmp_path / "ref.jsonl"))
    assert read_decision(one.best_checkpoint) == read_decision(ref.best_checkpoint)
    report = Path(one.report_path).read_text().replace(str(tmp_path / "one"), str(tmp_path / "ref"))
    assert report == Path(ref.report_path).read_text()
    # what a rank adds to a checkpoint: the global batch a resume must keep
    ranked, plain = load_checkpoint(one.last_checkpoint).state, load_checkpoint(ref.last_checkpoint).state
    assert (ranked["world_size"], ranked["global_batch"]) == (1, 8) and "global_batch" not in plain


def _launch(data: str, out: Path, log: Path, **kw) -> subprocess.Popen:
    """A 2-rank run in its own process tree (the test kills one of its ranks)."""
    cfg = out.parent / "settings.pkl"
    cfg.write_bytes(pickle.dumps(_settings(data, out, batch_size=8, epochs=200, patience=1000, **kw)))
    code = (
        "import pickle, tasks.train.run_distributed as T; "
        f"T.spawn(pickle.load(open({str(cfg)!r}, 'rb')), 2, backend='gloo')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stderr=open(log, "w"))


def test_a_kill_9_of_one_rank_leaves_a_run_that_resumes_on_another_world_size(data, tmp_path, monkeypatch):
    out, err = tmp_path / "run", tmp_path / "stderr.txt"
    proc = _launch(data, out, err)
    try:
        deadline = time.monotonic() + 120
        pids: dict[int, int] = {}
        while (
            proc.poll() is None
            and time.monotonic() < deadline
            and not (pids.get(1) and (out / "checkpoints" / "last.json").exists())
        ):
            pids = {int(r): int(p) for r, p in re.findall(r"^rank (\d+)/2 pid (\d+)$", err.read_text(), re.M)}
            time.sleep(0.05)
        assert 1 in pids and (out / "checkpoints" / "last.json").exists(), err.read_text()
        os.kill(pids[1], signal.SIGKILL)
        assert proc.wait(timeout=60) != 0  # mp.spawn ends rank 0 too and raises
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "signal" in err.read_text().lower() or "SIGKILL" in err.read_text()

    ckpt = load_checkpoint(resolve_checkpoint(str(out)))
    done = int(ckpt.state["epoch"])
    assert done >= 1 and ckpt.state["global_batch"] == 16

    # a different global batch is refused before any step (one in-process gloo rank)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="global batch of 16"):
        train_rank(_settings(data, tmp_path / "refused", batch_size=8, resume_from=str(out)), backend="gloo",
                   init_method=f"file://{tmp_path}/rendezvous-1")  # fmt: skip

    # one rank of 16 = two ranks of 8: resumes and finishes one more epoch, test and report included
    res = train_rank(_settings(data, out, batch_size=16, epochs=done + 1, patience=1000, resume_from=str(out)),
                     backend="gloo", init_method=f"file://{tmp_path}/rendezvous-2")  # fmt: skip
    assert res.epochs_run == 1 and len(res.history) == done + 1
    assert res.history[-1]["epoch"] == done + 1 and res.test_metrics
