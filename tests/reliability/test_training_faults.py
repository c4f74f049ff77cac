"""Faults during training: kill -9 mid-epoch, and an MLflow server that cannot be reached.

Covered elsewhere: a crash raised after epoch k resumes to the uninterrupted result
(tests/tasks/test_train_training.py::test_resume_after_a_crash_equals_the_uninterrupted_run),
and a checkpoint carrying a code-running pickle is refused
(tests/tasks/test_train_checkpoint.py::test_a_malicious_pickle_posing_as_a_checkpoint_is_refused).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments.stack import free_port
from tasks.synthetic_shards import write_synthetic_shards
from tasks.tracking import InMemoryLogger
from tasks.training import TrainSettings, run_training

SETTINGS = dict(overrides={"num_slices": 2}, pretrain_epochs=1, epochs=3, batch_size=8, lr=1e-3, patience=5, seed=0,
                device="cpu", shuffle_buffer=16, report_bootstrap=20)  # fmt: skip
# the same run in a fresh interpreter, pinned to one thread like this module (same float sums)
_TRAIN = """
import json, sys, torch
torch.set_num_threads(1)
from tasks.tracking import InMemoryLogger
from tasks.training import TrainSettings, run_training
run_training(TrainSettings(**json.loads(sys.argv[1])), log=InMemoryLogger())
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("shards"))
    write_synthetic_shards(root)
    return root


def _pointer(out: Path, tag: str = "last") -> str | None:
    try:
        return json.loads((out / "checkpoints" / f"{tag}.json").read_text())["checkpoint"]
    except (OSError, ValueError, KeyError):
        return None  # not written yet (or being replaced: the rename is atomic, the read may race it)


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_result(data, tmp_path, assert_same_run):
    """kill -9 a training process right after its epoch-2 checkpoint (so inside epoch 3),
    resume from its output dir: same weights, history and test metrics as a run never killed."""
    reference = run_training(TrainSettings(data=data, output_dir=str(tmp_path / "ref"), **SETTINGS), log=InMemoryLogger())

    out = tmp_path / "killed"
    kwargs = dict(data=data, output_dir=str(out), **SETTINGS)
    settings = TrainSettings(**kwargs)
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN, json.dumps(kwargs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _pointer(out) != "epoch-0002":
        time.sleep(0.01)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert alive and _pointer(out) == "epoch-0002", f"kill missed the run (rc {proc.returncode}): {err[-2000:]}"
    assert not (out / "report.md").exists()

    resumed = run_training(dataclasses.replace(settings, resume_from=str(out)), log=InMemoryLogger())
    assert resumed.epochs_run == 2
    assert_same_run(reference, resumed)


def test_unreachable_mlflow_fails_the_flow_loudly_before_any_training(data, tmp_path, monkeypatch, flow_env):
    """A tracking URI nobody answers: the flow raises an error naming it, and trains nothing
    (no epoch is spent on a run whose metrics would be lost)."""
    from flows.train import TrainConfig, train_avff

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's default backs off for minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    config = TrainConfig(data=data, checkpoint_dir=str(out), tracking_uri=uri, overrides={"num_slices": 2},
                         pretrain_epochs=1, epochs=1, num_workers=0, device="cpu", experiment="avff-unreachable")  # fmt: skip
    with pytest.raises(Exception, match=uri.replace(".", r"\.")) as caught:
        train_avff(config)
    assert "Connection refused" in str(caught.value) or "Max retries" in str(caught.value), caught.value
    assert not (out / "checkpoints").exists()
