"""Faults during training: kill -9 / SIGTERM mid-epoch, a second run into the same folder, a disk
that fills during a checkpoint write, and an MLflow server that cannot be reached.

Covered elsewhere: a crash raised after epoch k resumes to the uninterrupted result
(tests/tasks/train/test_run.py::test_resume_after_a_crash_equals_the_uninterrupted_run),
and a checkpoint carrying a code-running pickle is refused
(tests/tasks/train/test_checkpoint.py::test_a_malicious_pickle_posing_as_a_checkpoint_is_refused).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avff_model import AVFF
from avff_model.config import get_config
from deployments.stack import free_port
from storage import fs
from storage.checkpoint import WEIGHTS, CheckpointError, CheckpointStore, load_checkpoint
from tasks.synthetic.shards import write_synthetic_shards
from tasks.tracking.logger import InMemoryLogger
from tasks.train.run import TrainLockedError, run_training
from tasks.train.settings import TrainSettings

SETTINGS = dict(overrides={"num_slices": 2}, pretrain_epochs=1, epochs=3, batch_size=8, lr=1e-3, patience=5, seed=0,
                device="cpu", shuffle_buffer=16, report_bootstrap=20, num_workers=0)  # fmt: skip
# the same run in a fresh interpreter, pinned to one thread like this module (same float sums)
_TRAIN = """
import json, sys, torch
torch.set_num_threads(1)
from tasks.tracking.logger import InMemoryLogger
from tasks.train.run import run_training
from tasks.train.settings import TrainSettings
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
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_result(data, tmp_path, assert_same_run, sig):
    """kill -9 (or SIGTERM, what a scheduler sends first) a training process right after its
    epoch-2 checkpoint (so inside epoch 3), resume from its output dir: same weights, history
    and test metrics as a run never killed."""
    reference = run_training(
        TrainSettings(data=data, output_dir=str(tmp_path / "ref"), **SETTINGS), log=InMemoryLogger()
    )

    out = tmp_path / "killed"
    kwargs = dict(data=data, output_dir=str(out), **SETTINGS)
    settings = TrainSettings(**kwargs)
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN, json.dumps(kwargs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _pointer(out) != "epoch-0002":
        time.sleep(0.01)
    alive = proc.poll() is None
    proc.send_signal(sig)
    _, err = proc.communicate()
    assert alive and _pointer(out) == "epoch-0002", f"kill missed the run (rc {proc.returncode}): {err[-2000:]}"
    assert proc.returncode == -sig
    assert not (out / "report.md").exists()

    resumed = run_training(settings.replace(resume_from=str(out)), log=InMemoryLogger())
    assert resumed.epochs_run == 2
    assert_same_run(reference, resumed)


@pytest.mark.slow  # starts a Prefect server
def test_unreachable_mlflow_fails_the_flow_loudly_before_any_training(data, tmp_path, monkeypatch, flow_env):
    """A tracking URI nobody answers: the flow raises an error naming it, and trains nothing
    (no epoch is spent on a run whose metrics would be lost)."""
    from flows.train import train_avff

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's default backs off for minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    config = TrainSettings(data=data, output_dir=str(out), tracking_uri=uri, overrides={"num_slices": 2},
                         pretrain_epochs=1, epochs=1, num_workers=0, device="cpu", experiment="avff-unreachable")  # fmt: skip
    with pytest.raises(Exception, match=uri.replace(".", r"\.")) as caught:
        train_avff(config)
    assert "Connection refused" in str(caught.value) or "Max retries" in str(caught.value), caught.value
    assert not (out / "checkpoints").exists()


def _lock_text(out: Path) -> str:
    try:
        return (out / ".train.lock").read_text()
    except OSError:
        return ""


def test_a_second_training_into_the_same_folder_refuses_at_once_naming_the_first(data, tmp_path):
    """A training process holds its output folder (frozen with SIGSTOP so the overlap is
    certain); a second run_training into it refuses within seconds, naming the first's pid and
    host, and writes nothing. Thawed, the first completes. Its lock file, left behind, names a
    dead process and blocks no one (flock dies with its holder)."""
    out = tmp_path / "out"
    kwargs = dict(data=data, output_dir=str(out), **{**SETTINGS, "epochs": 1})
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN, json.dumps(kwargs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and f"pid {proc.pid} " not in _lock_text(out):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        before = sorted(p.name for p in out.rglob("*"))
        t0 = time.perf_counter()
        with pytest.raises(
            TrainLockedError, match=rf"another training run is writing to {out} .*held by pid {proc.pid} on host"
        ):
            run_training(TrainSettings(**kwargs), log=InMemoryLogger())
        assert time.perf_counter() - t0 < 10
        assert sorted(p.name for p in out.rglob("*")) == before
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert (out / "report.md").exists() and _pointer(out) is not None
    assert f"pid {proc.pid} " in _lock_text(out)  # stale: its holder is gone
    with fs.exclusive_lock(str(out), ".train.lock", "training run") as held:
        assert held is not None and _lock_text(out).startswith(f"pid {os.getpid()} ")


_FLOW = """
import json, sys, torch
torch.set_num_threads(1)
from flows.train import train_avff
from tasks.train.settings import TrainSettings
print("RUN", train_avff(TrainSettings(**json.loads(sys.argv[1])))["run_id"])
"""


def _digests(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.slow  # starts a Prefect server
def test_a_refused_training_flow_writes_nothing_and_resume_continues_the_first_run(
    data, tmp_path, flow_env, monkeypatch
):
    """Issue 27: the second ``train-avff`` into a folder wrote its ``mlflow_run.json`` before the
    lock refused it, so ``--resume-from`` later continued the refused run's (empty, failed) MLflow
    run. Now the lock comes first: the refused flow leaves every byte of the folder as it was and
    starts no MLflow run; the first run (frozen meanwhile) completes, and resuming from the folder
    continues the first run."""
    import mlflow

    from flows.train import resumable_run, train_avff

    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = mlflow.MlflowClient(uri).create_experiment("avff-lock", artifact_location=str(tmp_path / "artifacts"))
    out = tmp_path / "out"
    kwargs = dict(data=data, output_dir=str(out), tracking_uri=uri, experiment="avff-lock", **{**SETTINGS, "epochs": 1})
    proc = subprocess.Popen([sys.executable, "-c", _FLOW, json.dumps(kwargs)], env=flow_env, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while (
            time.time() < deadline
            and proc.poll() is None
            and not (
                f"pid {proc.pid} " in _lock_text(out)
                and "MLflow run" in _lock_text(out)
                and (out / "mlflow_run.json").exists()
            )
        ):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        before = _digests(out)
        first = json.loads((out / "mlflow_run.json").read_text())["run_id"]
        with pytest.raises(TrainLockedError, match=rf"held by pid {proc.pid} on host .*MLflow run {first}"):
            train_avff(TrainSettings(**kwargs))
        mlflow.set_tracking_uri(None)
        assert _digests(out) == before
        assert [r.info.run_id for r in mlflow.MlflowClient(uri).search_runs([experiment])] == [first]
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert f"RUN {first}" in stdout
    mlflow.set_tracking_uri(uri)
    try:
        assert resumable_run(str(out), experiment) == first
    finally:
        mlflow.set_tracking_uri(None)


_SAVE_TWICE = """
import dataclasses, errno, resource, signal, sys, torch
from avff_model import AVFF
from avff_model.config import get_config
from storage.checkpoint import CheckpointStore
root, limit = sys.argv[1], int(sys.argv[2])
cfg = get_config("tiny")
torch.manual_seed(0)
model = AVFF(cfg)
store = CheckpointStore(root)
store.save("epoch-0001", model, dataclasses.asdict(cfg), {"epoch": 1}, tags=("last",))
with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
if limit:  # a real write failure (EFBIG) at the kernel, from this file size on
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    store.save("epoch-0002", model, dataclasses.asdict(cfg), {"epoch": 2}, tags=("last",))
    print("saved")
except OSError as e:
    print("failed", errno.errorcode[e.errno])
"""


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: int):
    """A tmpfs of ``size`` bytes at ``path`` (real ENOSPC), or skip where mounting is not allowed."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:200]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("fault", ["enospc_tmpfs", "efbig_rlimit"])
def test_disk_full_during_a_checkpoint_write_leaves_the_previous_checkpoint_loadable(tmp_path, fault):
    """Checkpoint 1 is saved, then the disk fills while checkpoint 2 is written: the save fails
    with the kernel's own error, ``last`` still names checkpoint 1 and it loads bit for bit, no
    temp file is left, and once there is room again the next save works.

    Two real faults: a tmpfs sized to hold one checkpoint and a half (ENOSPC; needs root, else
    skipped) and RLIMIT_FSIZE below the weights' size (EFBIG; any user). Both fail the real
    write() through the real file objects of ``storage.fs.atomic_open``.
    """
    reference = tmp_path / "reference"
    done = subprocess.run([sys.executable, "-c", _SAVE_TWICE, str(reference), "0"], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.stdout.split() == ["saved"], done.stderr[-3000:]
    one = sum(p.stat().st_size for p in (reference / "epoch-0001").iterdir())
    weights = (reference / "epoch-0001" / WEIGHTS).stat().st_size
    with contextlib.ExitStack() as stack:
        if fault == "enospc_tmpfs":
            root = stack.enter_context(_small_tmpfs(tmp_path / "disk", one + one // 2)) / "checkpoints"
            limit, expected = 0, "ENOSPC"
        else:
            root, limit, expected = tmp_path / "checkpoints", weights // 2, "EFBIG"
        done = subprocess.run([sys.executable, "-c", _SAVE_TWICE, str(root), str(limit)], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.stdout.split() == ["failed", expected], (done.stdout, done.stderr[-3000:])
        store = CheckpointStore(str(root))
        assert store.resolve("last") == str(root / "epoch-0001")
        kept, ref = load_checkpoint(str(root / "last.json")), load_checkpoint(str(reference / "epoch-0001"))
        assert kept.state == {"epoch": 1} and kept.weights.keys() == ref.weights.keys()
        assert all(torch.equal(kept.weights[k], ref.weights[k]) for k in ref.weights)
        assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
        with pytest.raises(CheckpointError):
            load_checkpoint(str(root / "epoch-0002"))  # the half-written one is never taken for a checkpoint
        if fault == "enospc_tmpfs":
            subprocess.run(["mount", "-o", f"remount,size={4 * one}", str(root.parent)], check=True)
        second = load_checkpoint(str(reference / "epoch-0002"))
        model = AVFF(get_config("tiny"))
        model.load_state_dict(second.weights)
        store.save("epoch-0002", model, second.config, second.state, tags=("last",))  # room again: it works
        assert load_checkpoint(str(root / "last.json")).state == {"epoch": 2}
