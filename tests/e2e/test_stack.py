"""The local stack for real: up twice, deploy, ingest + train through the worker, MLflow, down.

Tests run in file order and share the session stack (tests/e2e/conftest.py); the last one
brings it down.
"""

from __future__ import annotations

import math
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from deployments.runs import model_versions, train_summary
from deployments.stack import Stack, StackError, alive, free_port, group_members, http_json, port_free

# its own deadlines (stack up, deploy 300 s, an ingest and a training run 600 s each) add up past pyproject's 900 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def test_up_twice_starts_nothing_new(stack, timings):
    before = stack.pids()
    assert set(before) == {"prefect", "mlflow", "ray", "worker", "web"}
    t0 = time.perf_counter()
    urls = stack.up(ray=True)
    timings["stack up (already up)"] = time.perf_counter() - t0
    assert stack.pids() == before
    assert urls["prefect_api"] == stack.prefect_api and urls["ray"] == stack.ray_address
    assert all(s["healthy"] for s in stack.status().values())
    # the drop-a-video page, on 127.0.0.1, pointed at this stack's MLflow
    with urllib.request.urlopen(urls["web"], timeout=30) as r:
        assert b'<input id="file" type="file"' in r.read()
    web_env = Path(f"/proc/{before['web']}/environ").read_bytes().split(b"\0")
    assert f"MLFLOW_TRACKING_URI={stack.mlflow_uri}".encode() in web_env
    # the worker hands the servers to every flow run through its environment
    worker_env = Path(f"/proc/{before['worker']}/environ").read_bytes().split(b"\0")
    assert f"MLFLOW_TRACKING_URI={stack.mlflow_uri}".encode() in worker_env
    assert f"RAY_ADDRESS={stack.ray_address}".encode() in worker_env
    assert b"RAY_AUTH_MODE=token" in worker_env  # the head's own token, whatever ~/.ray/auth_token holds


def test_a_taken_port_is_a_clear_error_before_anything_starts(stack, tmp_path):
    taken = stack.ports
    other = Stack(tmp_path / "a", prefect_port=taken["prefect"], mlflow_port=free_port())
    with pytest.raises(StackError, match=rf"port {taken['prefect']} in use by another process: set AVFF_PREFECT_PORT"):
        other.up()
    other = Stack(tmp_path / "b", prefect_port=free_port(), mlflow_port=taken["mlflow"])
    with pytest.raises(StackError, match=rf"port {taken['mlflow']} in use by another process: set AVFF_MLFLOW_PORT"):
        other.up()
    assert other.pids() == {}  # the free Prefect port was not started either


def test_deploy_puts_every_deployment_on_the_process_pool(deployed, stack):
    deployments = http_json(f"{stack.prefect_api}/deployments/filter", {})
    by_name = {(d["entrypoint"], d["name"]): d for d in deployments}
    assert {("flows.ingest.ingest_dfdc", "local"), ("flows.train.train_avff", "local")} <= set(by_name)
    root = str(Path(__file__).resolve().parents[2])
    for d in deployments:
        assert d["work_pool_name"] == "avff-process"
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": root}}]
    assert by_name[("flows.ingest.ingest_dfdc", "local")]["parameters"]["config"]["data"] == "./data/sample"


def test_ingest_deployment_writes_shards_for_every_split(ingest_run, e2e_sample):
    run, out = ingest_run
    assert run["state"]["type"] == "COMPLETED"
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(manifest) == len(list(e2e_sample.rglob("*.mp4"))) == 28
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    # a unit that failed on Ray (e.g. a worker that cannot import the flow's module) quarantines all its videos
    assert not [q for q in quarantine if q["reason"] == "worker_failed"], quarantine
    assert sum(r["status"] == "ingested" for r in manifest) >= 24, quarantine
    shards = pq.read_table(out / "shards.parquet").to_pylist()
    assert {s["split"] for s in shards} == {"train", "val", "test"}
    for s in shards:
        assert Path(s["path"]).stat().st_size > 0 and s["samples"] > 0


def test_train_deployment_logs_to_mlflow_and_registers_the_model(train_run, stack):
    run, out = train_run
    assert run["state"]["type"] == "COMPLETED"
    summary = train_summary(stack.mlflow_uri, "avff", "avff-dfdc")
    assert summary["status"] == "FINISHED" and summary["model_version"] == "1"
    metrics = summary["metrics"]
    assert {"train_loss", "val_loss", "pretrain_loss", "test_video_auc"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert Path(summary["report"]) == out / "report.md" and (out / "report.md").read_text().startswith("#")
    q = urllib.parse.urlencode({"run_id": summary["run_id"]})
    artifacts = http_json(f"{stack.mlflow_uri}/api/2.0/mlflow/artifacts/list?{q}")["files"]
    assert "report.md" in {f["path"] for f in artifacts}
    (version,) = model_versions(stack.mlflow_uri, "avff-dfdc", summary["run_id"])
    assert version["status"] == "READY"
    # served through the tracking server into the stack's own artifact directory
    assert list((stack.home / "mlflow" / "artifacts").rglob("report.md"))
    # the UI's run page loads the run through GraphQL (a broken graphene once made it HTTP 500)
    query = "query($d: MlflowGetRunInput) { mlflowGetRun(input: $d) { run { info { runId status } } } }"
    answer = http_json(
        f"{stack.mlflow_uri}/graphql", {"query": query, "variables": {"d": {"runId": summary["run_id"]}}}
    )
    assert answer["data"]["mlflowGetRun"]["run"]["info"] == {"runId": summary["run_id"], "status": "FINISHED"}


def test_down_stops_every_process_it_started(stack, timings):
    pids = stack.pids()
    family = {p for pgid in pids.values() for p in group_members(pgid)}
    assert len(family) > len(pids)  # servers spawn children (uvicorn, raylet, gcs_server, ...)
    t0 = time.perf_counter()
    assert set(stack.down()) == {"prefect", "mlflow", "ray", "worker", "web"}
    timings["stack down"] = time.perf_counter() - t0
    assert not [p for p in family if alive(p)]
    assert not [p for pgid in pids.values() for p in group_members(pgid)]
    assert stack.pids() == {} and stack.down() == []
    assert all(port_free(p) for p in stack.ports.values())
