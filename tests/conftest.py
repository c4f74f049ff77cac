"""Session-wide fixtures: one generated DFDC-format sample, one ingest of it, one Ray head.

Expensive things (Ray start-up, video generation, ingest) happen once per test session.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.stack import free_port, wait_for_port
from tests.processes import stop

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Prefect's temporary API server needs far more than its 20 s default on a busy 2-core machine
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
# Ray 2.60's `ray start` turns token auth on whenever ~/.ray/auth_token exists (anything that
# ran ray.init() locally creates it), but a driver joining by address does not: pin the mode
# for this session, with a token that lives only in this process tree.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", __import__("uuid").uuid4().hex)
# workers use this venv, even when pytest runs under `uv run` (see deployments/test.sh)
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# the raylet dies when its agents (30 s) or workers (60 s) register late, as on a loaded machine
os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
os.environ.setdefault("RAY_worker_register_timeout_seconds", "300")

FACE_SIZE = 64  # the tiny model's input size

# intra-op threads spin on a shared 2-core box (the tiny model ran ~100x slower with 2)
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def prefect_server():
    """One throwaway Prefect API (sqlite in a temp dir) for every flow run of the session."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def dfdc_sample(tmp_path_factory) -> Path:
    """A small DFDC-format dataset: 2 parts, reals + every manipulation type."""
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    return Path(
        make_dfdc_sample(
            tmp_path_factory.mktemp("dfdc") / "data", n_real=6, parts=2, duration_s=7.0, size=(160, 160), seed=0
        )
    )


@pytest.fixture(scope="session")
def ingest_config():
    from tasks.ingest.settings import IngestSettings

    def make(data, out, preprocess=None, **kw):
        """Small fast settings; ``preprocess`` (a dict of PreprocessConfig fields) on top of face_size=FACE_SIZE."""
        defaults = dict(videos_per_shard=8, executor="local", progress=False, ratios=(0.6, 0.2, 0.2))
        pre = {"face_size": FACE_SIZE, **(preprocess or {})}
        return IngestSettings(data=str(data), out=str(out), preprocess=pre, **{**defaults, **kw})

    return make


@pytest.fixture(scope="session")
def ingested(prefect_server, dfdc_sample, ingest_config, tmp_path_factory) -> Path:
    """The sample ingested once through the real Prefect flow (in-process executor)."""
    from flows.ingest import ingest_dfdc

    out = tmp_path_factory.mktemp("ingest") / "out"
    ingest_dfdc(ingest_config(dfdc_sample, out))
    return out


@pytest.fixture(scope="session")
def trained(prefect_server, ingested, tmp_path_factory) -> dict:
    """The tiny AVFF trained on the ingested sample through the real train-avff flow and a sqlite MLflow.

    Registered whatever its quality (register_if=always): the tests using it need a model version.
    """
    import mlflow

    from flows.train import train_avff
    from tasks.train.settings import TrainSettings

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.MlflowClient(uri).create_experiment("avff", artifact_location=str(root / "artifacts"))
    config = TrainSettings(data=str(ingested), output_dir=str(root / "train"), model_config="tiny", pretrain_epochs=1,
                           epochs=3, batch_size=8, num_workers=0, device="cpu", tracking_uri=uri, experiment="avff",
                           register_if="always")  # fmt: skip
    result = train_avff(config)
    mlflow.set_tracking_uri(None)
    return {**result, "tracking_uri": uri}


@pytest.fixture(scope="session")
def assert_same_run():
    """check(reference, other): two TrainResults are the same run (weights bit for bit, history, test metrics)."""
    import torch

    from storage.checkpoint import load_checkpoint

    def same(a, b) -> bool:
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    def check(reference, other) -> None:
        assert other.best_epoch == reference.best_epoch
        for tag in ("best_checkpoint", "last_checkpoint"):
            a, b = load_checkpoint(getattr(reference, tag)), load_checkpoint(getattr(other, tag))
            assert a.weights.keys() == b.weights.keys()
            assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights), tag
        assert len(other.history) == len(reference.history)
        for ra, rb in zip(reference.history, other.history):
            assert ra.keys() == rb.keys() and all(same(ra[k], rb[k]) for k in ra), (ra, rb)
        assert all(same(reference.test_metrics[k], other.test_metrics[k]) for k in reference.test_metrics)

    return check


@pytest.fixture(scope="session")
def ray_address():
    """A real Ray head bound to 127.0.0.1, started once; stopped by its pid."""
    port = free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    proc = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--block",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    wait_for_port(port, proc, timeout=180, name="ray start", poll=1.0)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(address=address, log_to_driver=False)  # fails here, clearly, if the head is not usable
    if proc.poll() is not None:
        raise RuntimeError(f"ray head exited with {proc.returncode}")
    try:
        yield address
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        finally:
            stop(proc, timeout=60)
