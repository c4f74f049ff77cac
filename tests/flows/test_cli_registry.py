"""Issue 25: a registry ``--model`` that is not there is one line, before any import or flow run.

After a demo whose model the gate refused, `avff evaluate` (default avff-dfdc@champion) started a flow
run that failed with Prefect's log lines and left it behind; `avff predict` imported MLflow and said
"train one with `avff train`". Both now ask the tracking server over REST first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.stack import free_port, wait_for_port
from flows.cli.registry import require_registered
from flows.preflight import ConfigError

ROOT = Path(__file__).resolve().parents[1].parent
PROBE = (
    "import sys\nfrom flows.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "print(sorted(m for m in ('flows.evaluate', 'prefect', 'torch', 'mlflow') if m in sys.modules))"
)


def _avff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_no_tracking_server_is_one_line_before_prefect_or_mlflow_load(command, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "a.mp4").write_bytes(b"")  # a file: predict asks the server only when it has a video to score
    target = ["--data", str(tmp_path)] if command == "evaluate" else [str(tmp_path / "a.mp4")]
    out = _avff(command, *target, "--tracking-uri", uri)
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"avff {command}: error: no MLflow server answers at {uri}") and "avff stack up" in line
    assert out.stdout.strip() == "[]"  # nothing imported: no flow, no Prefect, no MLflow, no torch


def test_paths_run_uris_and_local_stores_are_left_to_the_command(tmp_path):
    require_registered(str(tmp_path), None)  # a training output folder
    require_registered("runs:/abc/model", "http://127.0.0.1:1")
    require_registered("avff-dfdc@champion", f"sqlite:///{tmp_path}/mlflow.db")  # read by the command itself
    with pytest.raises(ConfigError, match="no such folder or file"):
        require_registered("avff-dfdc/1", None)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` on sqlite holding avff-dfdc version 1 with alias champion."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})  # fmt: skip
    try:
        wait_for_port(port, proc, timeout=240, name="mlflow server")
        from mlflow import MlflowClient

        uri = f"http://127.0.0.1:{port}"
        client = MlflowClient(uri)
        client.create_registered_model("avff-dfdc")
        run = client.create_run(experiment_id="0")  # a version comes from a run (nothing need be logged)
        client.create_model_version("avff-dfdc", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.set_registered_model_alias("avff-dfdc", "champion", "1")
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow  # starts an MLflow server
def test_the_registry_is_asked_what_it_holds(tracking_server, tmp_path):
    for held in ("avff-dfdc@champion", "avff-dfdc@1", "avff-dfdc@latest", "avff-dfdc"):
        require_registered(held, tracking_server)
    with pytest.raises(ConfigError, match="no model named 'other' is registered .* beats the prior on val"):
        require_registered("other@champion", tracking_server)
    for missing in ("avff-dfdc@best", "avff-dfdc@7"):
        with pytest.raises(ConfigError, match=f"--model {missing}: avff-dfdc at .* has latest version 1 and "
                                              f"aliases @champion = 1"):  # fmt: skip
            require_registered(missing, tracking_server)
    out = _avff("evaluate", "--data", str(tmp_path), "--model", "avff-dfdc@best", "--tracking-uri", tracking_server)
    assert len(out.stderr.splitlines()) == 1 and "has latest version 1" in out.stderr
    assert out.stdout.strip() == "[]"  # refused before the flow's import: no flow run to leave behind


def test_predict_with_no_video_to_score_is_one_line_before_the_model_loads(tmp_path):
    """`avff predict typo.mp4` loaded the model (torch, MLflow: ~30 s on a busy 2-core box) before it said the file
    was missing; when none of the named videos is a file, it says so at once (exit 2, nothing imported)."""
    (tmp_path / "folder.mp4").mkdir()
    for model in (str(tmp_path), "avff-dfdc@champion"):  # a folder; the registry, with no server answering
        out = _avff("predict", str(tmp_path / "a.mp4"), str(tmp_path / "folder.mp4"), "--model", model,
                    "--tracking-uri", f"http://127.0.0.1:{free_port()}")  # fmt: skip
        (line,) = out.stderr.splitlines()
        assert line == (f"avff predict: error: no video to score: {tmp_path / 'a.mp4'}: no such file; "
                        f"{tmp_path / 'folder.mp4'}: not a regular file")  # fmt: skip
        assert out.stdout.strip() == "[]"  # nothing imported: no MLflow, no torch
