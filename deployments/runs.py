"""Follow deployment runs and read their outcome over the servers' REST APIs (stdlib only).

Waiting polls ``GET /api/flow_runs/{id}`` instead of `prefect flow-run ...` calls (each CLI
call pays a 10-20 s import on a small box) or `--watch` (a websocket that a slow server
may drop). A failed run prints its logs. The train flow's outcome is read back from MLflow:
the latest training run of an experiment (not an evaluation run) and the registered version logged from that run.

    python -m deployments.runs id < `prefect deployment run` output     -> the flow run id
    python -m deployments.runs wait FLOW_RUN_ID [--timeout S]           -> 0 when COMPLETED
    python -m deployments.runs summary [--experiment avff] [--model avff-dfdc]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse

from deployments.stack import http_json
from tasks.tracking.ui import RUN_TYPE_EVALUATION, RUN_TYPE_TAG, TAG_STEPS_OF, ml_view

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
_HEADLINE = re.compile(r"test_video_(auc|log_loss|accuracy|eer)")
_UUID = re.compile(r"UUID:\s*([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


class FlowRunFailed(RuntimeError):
    """The flow run ended in a state other than COMPLETED; the message holds its logs."""


def parse_flow_run_id(cli_output: str) -> str:
    """The flow run id in the output of `prefect deployment run`."""
    m = _UUID.search(cli_output)
    if not m:
        raise ValueError(f"no flow run UUID in:\n{cli_output}")
    return m.group(1)


def flow_run_logs(api: str, flow_run_id: str, limit: int = 200) -> str:
    """The last ``limit`` log lines of a flow run (its tasks included)."""
    logs = http_json(f"{api}/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                            "sort": "TIMESTAMP_DESC", "limit": limit})  # fmt: skip
    return "\n".join(f"{r['timestamp'][11:19]} {r['level']:>2} {r['message']}" for r in reversed(logs))


def wait_for_flow_run(api: str, flow_run_id: str, timeout: float = 1800, poll: float = 2.0) -> dict:
    """Poll until the flow run is terminal; return it, or raise :class:`FlowRunFailed` / TimeoutError."""
    deadline = time.monotonic() + timeout
    run, state = {}, None
    while True:
        try:
            run = http_json(f"{api}/flow_runs/{flow_run_id}")
            state = (run.get("state") or {}).get("type")
        except (TimeoutError, urllib.error.URLError) as e:
            if not isinstance(getattr(e, "reason", e), TimeoutError):
                raise  # refused, 404...: the server is gone or the id is wrong
            # a busy sqlite server answers late: ask again
        if state in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {flow_run_id} still {state} after {timeout:.0f}s; is a worker polling "
                               f"pool {run.get('work_pool_name')!r}?")  # fmt: skip
        time.sleep(poll)
    if state != "COMPLETED":
        message = (run.get("state") or {}).get("message") or ""
        raise FlowRunFailed(f"flow run {run['name']} ({flow_run_id}) ended {state}: {message}\n"
                            f"--- logs ---\n{flow_run_logs(api, flow_run_id)}")  # fmt: skip
    return run


def run_seconds(run: dict) -> float:
    """Wall time of a finished flow run as the server recorded it."""
    return float(run.get("total_run_time") or 0.0)


# --------------------------------------------------------------------------- MLflow


def latest_mlflow_run(uri: str, experiment: str) -> dict | None:
    """The most recently started training run of ``experiment`` (REST ``runs/search``), or None.

    Neither an evaluation run (``avff evaluate``, tagged ``mlflow.runType``) nor a run's ``· curves`` child:
    after an evaluation the demo's summary and the screenshots still show the training run and its version.
    """
    q = urllib.parse.urlencode({"experiment_name": experiment})
    try:
        exp = http_json(f"{uri}/api/2.0/mlflow/experiments/get-by-name?{q}")["experiment"]
    except OSError:  # HTTPError 404: no such experiment yet
        return None
    found = http_json(f"{uri}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                      "order_by": ["attributes.start_time DESC"], "max_results": 50})  # fmt: skip
    for run in found.get("runs") or []:
        tags = {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}
        # a run's per-step curves live in a child run started after it: not a run of its own
        if TAG_STEPS_OF not in tags and tags.get(RUN_TYPE_TAG) != RUN_TYPE_EVALUATION:
            return run
    return None


def model_versions(uri: str, model: str, run_id: str | None = None) -> list[dict]:
    """Versions of registered ``model`` (those logged from ``run_id`` when given), newest first."""
    flt = f"name='{model}'" + (f" and run_id='{run_id}'" if run_id else "")
    found = http_json(f"{uri}/api/2.0/mlflow/model-versions/search?{urllib.parse.urlencode({'filter': flt})}")
    return sorted(found.get("model_versions") or [], key=lambda v: int(v["version"]), reverse=True)


def train_summary(uri: str, experiment: str = "avff", model: str = "avff-dfdc") -> dict:
    """Run id, metrics, registered version and report of the latest training run."""
    run = latest_mlflow_run(uri, experiment)
    if run is None:
        raise LookupError(f"no run in MLflow experiment {experiment!r} at {uri}")
    info, data = run["info"], run.get("data", {})
    versions = model_versions(uri, model, info["run_id"])
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    output_dir = params.get("train.output_dir")
    return {
        "mlflow_ui": ml_view(f"{uri}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"),
        "experiments_ui": ml_view(f"{uri}/#/experiments"),  # MLflow 3: the model-training view, not GenAI's
        "run_id": info["run_id"],
        "status": info["status"],
        "metrics": {m["key"]: m["value"] for m in data.get("metrics", [])},
        "model": model,
        "model_version": versions[0]["version"] if versions else None,
        "registry": {t["key"]: t["value"] for t in data.get("tags", [])}.get("registry"),  # the gate's reason
        "report": os.path.join(output_dir, "report.md") if output_dir else None,
        "report_artifact": f"{info['artifact_uri']}/report.md",
    }


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployments.runs", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("id", help="read `prefect deployment run` output on stdin, print the flow run id")
    w = sub.add_parser("wait", help="wait for a flow run; print its logs and exit 1 unless COMPLETED")
    w.add_argument("flow_run_id")
    w.add_argument("--timeout", type=float, default=1800)
    s = sub.add_parser("summary", help="latest training run of the experiment and its registered version (JSON)")
    s.add_argument("--experiment", default="avff")
    s.add_argument("--model", default="avff-dfdc")
    s.add_argument("--json", action="store_true", help="everything, metrics included, as JSON")
    args = p.parse_args(argv)
    if args.cmd == "id":
        print(parse_flow_run_id(sys.stdin.read()))
        return 0
    if args.cmd == "wait":
        api = os.environ.get("PREFECT_API_URL") or "http://127.0.0.1:4200/api"
        try:
            run = wait_for_flow_run(api, args.flow_run_id, timeout=args.timeout)
        except (FlowRunFailed, TimeoutError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"flow run {run['name']} COMPLETED in {run_seconds(run):.0f}s", file=sys.stderr)
        return 0
    uri = os.environ.get("MLFLOW_TRACKING_URI") or "http://127.0.0.1:5000"
    summary = train_summary(uri, args.experiment, args.model)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    headline = {k: round(v, 4) for k, v in summary["metrics"].items() if _HEADLINE.fullmatch(k)}
    version = f" version {summary['model_version']}" if summary["model_version"] else ""  # not "version None"
    print(f"MLflow UI:      {summary['experiments_ui']}\n"
          f"MLflow run:     {summary['run_id']} ({summary['status']})  {summary['mlflow_ui']}\n"
          f"test metrics:   {headline}\n"
          f"registry:       {summary['model']}{version}: {summary['registry']}\n"
          f"report:         {summary['report']}  (MLflow artifact {summary['report_artifact']})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
