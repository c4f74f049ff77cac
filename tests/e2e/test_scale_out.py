"""Scale-out: `avff ingest --executor ray` on a two-node Ray cluster, shards written to S3.

Everything runs inside a network namespace this test creates (``ip netns``), where the only
interface is ``lo``: a multi-node Ray cluster listens on its node IP rather than in
single-node loopback mode, so the namespace is what keeps every server off the host's
network. Inside it: a moto S3 server, a Ray head and a second Ray node (one CPU each,
token authentication on, a token file in the test's temp dir), and the CLI itself, which
starts Prefect's temporary local server.

The Ray nodes get the S3 credentials and endpoint in their own environment: Ray workers
inherit the raylet's environment, not the driver's (on a real cluster: the node's role or
env). The shards on S3 must be byte-identical to the local reference run (``ingested``),
and both nodes must have processed units (``units_per_node`` in the flow's result).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.processes import stop

# its own deadlines (two Ray nodes at 300 s a start, two tries; the ingest 600 s) add up past pyproject's 900 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY_PORT = 6379  # fixed ports are safe: the namespace is new and only this test listens in it
S3_PORT = 5000
BUCKET = "avff-shards"
OUT = f"s3://{BUCKET}/ingest"
STARTUP_TIMEOUT = 300  # per Ray node: ~20 s on an idle machine, minutes on 2 busy cores
RAY_ERROR_LINE = re.compile(r"\[[^\]]* [EC] \d+ \d+\]")  # Ray's "[time E|C pid tid]": errors, failed checks

# run inside the namespace: wait until both Ray nodes are alive, print {node id: resources}
WAIT_FOR_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.time() + float(sys.argv[2])
while len(alive := [n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
    time.sleep(0.5)
print(json.dumps({n["NodeID"]: n["Resources"] for n in alive}))
"""

# run inside the namespace: what the run left on S3, read back through storage.fs
READ_BACK = """
import json, sys
from storage import fs
layout = fs.IngestLayout(sys.argv[1])
index = fs.read_parquet(layout.shard_index).to_pylist()
manifest = fs.read_parquet(layout.manifest).to_pylist()
print(json.dumps({
    "index": {r["path"]: r["sha256"] for r in index},
    "objects": {p: fs.sha256_of(p) for p in fs.list_files(layout.shards_dir, ".tar")},
    "records": len(fs.list_files(layout.shards_dir, ".tar.json")),
    "status": sorted({r["status"] for r in manifest}),
}))
"""


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace (ip netns)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


class Namespace:
    """A throwaway network namespace with only loopback up, and the processes started in it."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.name = f"avff-{uuid.uuid4().hex[:10]}"
        self.tmp, self.env = tmp, env
        self.procs: dict[str, subprocess.Popen] = {}
        created = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if created.returncode != 0:
            pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")

    def cmd(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        try:
            out = subprocess.run(self.cmd(args), cwd=ROOT, env=env or self.env, capture_output=True, text=True,
                                 timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{' '.join(args)} timed out after {timeout}s\n{self.diagnostics()}") from e
        assert out.returncode == 0, (f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                                     f"{out.stderr[-3000:]}\n{self.diagnostics()}")  # fmt: skip
        return out

    def start(self, name: str, args: list[str], log_name: str | None = None) -> subprocess.Popen:
        """A long-running process (`ip netns exec` execs it: the pid is the server's own)."""
        with open(self.tmp / f"{log_name or name}.log", "wb") as log:
            proc = subprocess.Popen(self.cmd(args), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        self.procs[name] = proc
        return proc

    def diagnostics(self) -> str:
        """State of every started process, the tails of their logs and the errors in Ray's own logs."""
        lines = [f"{name}: pid {p.pid}, " + ("running" if p.poll() is None else f"exited {p.returncode}")
                 for name, p in self.procs.items()]  # fmt: skip
        for path in sorted(self.tmp.glob("*.log")):
            lines.append(f"--- {path.name} (tail)\n{path.read_text(errors='replace')[-1500:]}")
        for path in sorted((self.tmp / "ray").glob("session_*/logs/*")):
            if path.is_file() and path.name.startswith(
                ("gcs_server", "raylet", "dashboard_agent", "runtime_env_agent")
            ):
                text = path.read_text(errors="replace")
                errors = [ln for ln in text.splitlines() if RAY_ERROR_LINE.match(ln)]
                if errors:
                    lines.append(f"--- {path.relative_to(self.tmp)} (errors)\n" + "\n".join(errors[:20]))
        return "\n".join(lines)

    def start_ray(self, name: str, args: list[str], timeout: float, attempts: int = 2) -> int:
        """`ray start --block` until it reports the node up; returns the attempts it took.

        Ray gives a new raylet a fixed 30 s to register with the GCS (ray/_private/node.py),
        which a busy 2-core machine can miss; `ray start` then exits and stops its children,
        so a second attempt starts clean.
        """
        for attempt in range(1, attempts + 1):
            log = self.tmp / f"{name}-{attempt}.log"
            proc = self.start(name, args, log_name=log.stem)
            deadline = time.time() + timeout
            while time.time() < deadline and proc.poll() is None:
                if "Ray runtime started" in log.read_text(errors="replace"):
                    return attempt
                time.sleep(0.5)
            if proc.poll() is None:
                raise TimeoutError(f"{name} not up after {timeout}s:\n{self.diagnostics()}")
            print(f"{name}: attempt {attempt} exited {proc.returncode}\n{self.diagnostics()}")  # shown on failure
        raise RuntimeError(f"{name} failed to start {attempts} times:\n{self.diagnostics()}")

    def wait_for_port(self, name: str, port: int, timeout: float) -> None:
        probe = self.cmd(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"])  # cheaper than a python per try
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}:\n{self.diagnostics()}")
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{name} not listening on 127.0.0.1:{port} after {timeout}s:\n{self.diagnostics()}")

    def close(self) -> None:
        """SIGTERM what was started (newest first), SIGKILL stragglers, delete the namespace."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            stop(proc)  # all were signalled first, so they stop together; this waits, then kills stragglers
        # Ray's own children (gcs, raylets, workers) live only in this namespace
        left = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


@pytest.fixture(scope="module")
def cluster(timings):
    """Namespace + moto S3 + a two-node Ray cluster; returns (namespace, {Ray node id: resources})."""
    if reason := _skip_reason():
        pytest.skip(reason)
    tmp = Path(tempfile.mkdtemp(prefix="avso-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    token = tmp / "ray-token"
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_", "AWS_", "MLFLOW_"))}
    env = {
        **keep,
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,  # nothing from ~/.aws
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
        # a raylet exits when its agents (30 s) or workers (60 s) register late, as on a busy machine
        "RAY_agent_register_timeout_ms": "300000", "RAY_worker_register_timeout_seconds": "300",
        # the CLI's temporary Prefect server migrates a fresh database first: slow when busy
        "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }  # fmt: skip
    ns = Namespace(tmp, env)
    try:
        ns.run(["ip", "link", "set", "lo", "up"], timeout=30)
        addrs = ns.run(["ip", "-o", "addr", "show"], timeout=30).stdout
        assert {line.split()[1] for line in addrs.splitlines()} == {"lo"}, addrs  # nothing but loopback in here
        t0 = time.perf_counter()
        ns.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(S3_PORT)])
        ray = str(BIN / "ray")
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--temp-dir",
                  str(tmp / "ray"), "--object-store-memory", str(100 << 20), "--block"]  # fmt: skip
        # one node at a time, nothing else of ours running: a raylet starting on 2 saturated
        # cores can miss Ray's 30 s registration window (seen with the reference ingest beside it)
        tries = ns.start_ray("ray-head", [ray, "start", "--head", "--port", str(RAY_PORT), "--include-dashboard",
                                          "false", "--dashboard-agent-listen-port", "52365", "--min-worker-port",
                                          "20000", "--max-worker-port", "20999", *common], STARTUP_TIMEOUT)  # fmt: skip
        tries += ns.start_ray("ray-node2", [ray, "start", "--address", f"127.0.0.1:{RAY_PORT}", "--resources",
                                            '{"node2": 1}', "--dashboard-agent-listen-port", "52366",
                                            "--min-worker-port", "21000", "--max-worker-port", "21999", *common],
                              STARTUP_TIMEOUT)  # fmt: skip
        ns.wait_for_port("moto", S3_PORT, 60)
        ns.run([sys.executable, "-c", f"import boto3; boto3.client('s3').create_bucket(Bucket='{BUCKET}')"], timeout=60)
        out = ns.run([sys.executable, "-c", WAIT_FOR_NODES, f"127.0.0.1:{RAY_PORT}", "60"], timeout=STARTUP_TIMEOUT)
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(nodes) == 2, f"second Ray node not alive:\n{ns.diagnostics()}"
        timings[f"scale-out: cluster up ({tries} ray starts)"] = time.perf_counter() - t0
        yield ns, nodes
    finally:
        t0 = time.perf_counter()
        ns.close()
        timings["scale-out: teardown"] = time.perf_counter() - t0
        shutil.rmtree(tmp, ignore_errors=True)


def _relative_hashes(index: dict[str, str], root: str) -> dict[str, str]:
    return {
        posixpath.relpath(path.removeprefix("s3://"), root.removeprefix("s3://")): sha for path, sha in index.items()
    }


def test_two_node_ray_ingest_to_s3_matches_local_run(cluster, ingested, dfdc_sample, timings):
    ns, nodes = cluster
    index = pq.read_table(ingested / "shards.parquet").to_pylist()
    reference = {os.path.relpath(r["path"], ingested): r["sha256"] for r in index}
    assert len(reference) >= 4, "too few units to keep two single-CPU nodes busy"

    t0 = time.perf_counter()
    # the `ingested` fixture's settings (face 64, 8 videos/shard, ratios 0.6/0.2/0.2): same plan, same shard names
    cli = ns.run([sys.executable, "-m", "flows.cli", "ingest", "--data", str(dfdc_sample), "--out", OUT,
                  "--executor", "ray", "--face-size", "64", "--videos-per-shard", "8", "--ratios", "0.6", "0.2", "0.2"],
                 env={**ns.env, "RAY_ADDRESS": f"127.0.0.1:{RAY_PORT}"}, timeout=600)  # fmt: skip
    timings["scale-out: avff ingest (ray)"] = time.perf_counter() - t0
    result = json.loads(cli.stdout[cli.stdout.index("{") :])
    assert (result["ingested"], result["quarantined"]) == (result["videos"], 0), cli.stderr[-3000:]
    assert result["shards"] == len(reference) and result["skipped_units"] == 0

    # both nodes did work, and they are the two nodes of this cluster (the head and "node2")
    per_node = result["units_per_node"]
    assert set(per_node) == set(nodes) and all(n >= 1 for n in per_node.values()), per_node
    assert sum(per_node.values()) == len(reference)
    assert sorted("node2" in res for res in nodes.values()) == [False, True]

    back = json.loads(ns.run([sys.executable, "-c", READ_BACK, OUT], timeout=120).stdout.strip().splitlines()[-1])
    assert _relative_hashes(back["index"], OUT) == reference  # same names, same bytes as the local run
    assert back["objects"] == back["index"]  # the objects on S3 hash to what the index says
    assert back["records"] == len(reference) and back["status"] == ["ingested"]
