"""One real stack per test session: Prefect server + process worker, MLflow server, Ray head.

It lives in its own AVFF_HOME (a short temp dir: Ray's unix socket paths must fit in 107
bytes) on free non-default ports, so it never meets a user's running stack. The flows run
exactly as a user runs them: `prefect deploy --all`, `prefect deployment run`, the worker.
Timings are printed at the end of the pytest run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from deployments.runs import parse_flow_run_id, wait_for_flow_run
from deployments.stack import Stack, free_port

ROOT = Path(__file__).resolve().parents[2]
TIMINGS: dict[str, float] = {}
KEPT: list[str] = []
FLOW_TIMEOUT = 600


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_sep("-", "e2e stack timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name:28s} {seconds:6.1f} s")
    for home in KEPT:
        terminalreporter.write_line(f"e2e stack state kept for inspection: {home} (logs/, run/, ray/)")


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    return TIMINGS


class timed:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        TIMINGS[self.name] = time.perf_counter() - self.t0


@pytest.fixture(scope="session")
def stack(request):
    """The stack, up with Ray; brought down (again, idempotently) when the session ends.
    Its home (logs, DBs, Ray session) is kept when a test failed."""
    home = Path(tempfile.mkdtemp(prefix="avff-e2e-"))
    s = Stack(home, prefect_port=free_port(), mlflow_port=free_port(), ray_port=free_port(), ray_cpus=2,
              web_port=free_port())  # fmt: skip
    failed = True
    try:
        with timed("stack up (cold)"):
            s.up(ray=True)
        yield s
        failed = bool(request.session.testsfailed)
    finally:
        s.down()
        if failed:
            KEPT.append(str(home))
        else:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def cli_env(stack) -> dict[str, str]:
    """Environment of a user's shell after `eval "$(avff stack env)"` (own PREFECT_HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "MLFLOW_TRACKING_URI"}
    return {**env, **stack.env(), "PREFECT_HOME": str(stack.home / "cli"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def prefect_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    cmd = [str(Path(sys.executable).with_name("prefect")), "--no-prompt", *args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="session")
def deployed(stack, cli_env) -> str:
    with timed("prefect deploy --all"):
        return prefect_cli(["deploy", "--all"], cli_env)


def run_deployment(name: str, config: dict, env: dict[str, str], job_env: dict[str, str] | None = None) -> dict:
    """`prefect deployment run NAME --param config=...`, then wait for the run over REST."""
    args = ["deployment", "run", name, "--param", f"config={json.dumps(config)}"]
    if job_env:
        args += ["--job-variable", f"env={json.dumps(job_env)}"]
    out = prefect_cli(args, env)
    return wait_for_flow_run(env["PREFECT_API_URL"], parse_flow_run_id(out), timeout=FLOW_TIMEOUT)


@pytest.fixture(scope="session")
def e2e_sample(stack) -> Path:
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    with timed("sample (n_real=4)"):
        return Path(make_dfdc_sample(stack.home / "data" / "sample", n_real=4, duration_s=4.0, size=(128, 128)))


@pytest.fixture(scope="session")
def ingest_run(deployed, e2e_sample, stack, cli_env) -> tuple[dict, Path]:
    """ingest-dfdc/local through the worker, fanned out on the stack's Ray head."""
    out = stack.home / "data" / "shards"
    # 4 identities; splits hash each group (tasks/ingest/splits.py): seed 3 happens to give 2/1/1 groups, so that
    # every split (test included) gets videos
    config = {"data": str(e2e_sample), "out": str(out), "executor": "ray", "preprocess": {"face_size": 64},
              "videos_per_shard": 4, "ratios": [0.5, 0.25, 0.25], "seed": 3, "progress": False}  # fmt: skip
    with timed("flow run ingest-dfdc/local"):
        return run_deployment("ingest-dfdc/local", config, cli_env), out


@pytest.fixture(scope="session")
def train_run(ingest_run, stack, cli_env) -> tuple[dict, Path]:
    """train-avff/local through the worker; MLflow found through the worker's environment."""
    _, shards = ingest_run
    out = stack.home / "data" / "train"
    # register_if=always: one epoch need not beat the prior, and the test checks registration itself
    config = {"data": str(shards), "output_dir": str(out), "model_config": "tiny", "pretrain_epochs": 1,
              "epochs": 1, "batch_size": 8, "num_workers": 0, "device": "cpu", "register_if": "always"}  # fmt: skip
    # a tiny model on a shared 2-core box: intra-op threads only spin (a process-pool job variable)
    with timed("flow run train-avff/local"):
        return run_deployment("train-avff/local", config, cli_env, job_env={"OMP_NUM_THREADS": "1"}), out
