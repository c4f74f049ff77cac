"""The local stack: Prefect server + process worker, MLflow tracking server, the drop-a-video page
(`avff web`, scoring with the registry's champion), optional Ray head.

All state lives in one directory, ``$AVFF_HOME`` (default ``./.avff/stack``)::

    prefect/          PREFECT_HOME of the server and the worker (prefect.db, result storage)
    mlflow/           mlflow.db (tracking + model registry) and artifacts/ (served by the server)
    ray/              Ray's temp dir (sessions, logs) when short enough for Ray's unix sockets
    run/<name>.json   pid, port and argv of each service this stack started
    run/ray_auth_token  the Ray head's token (mode 0600), exported as RAY_AUTH_TOKEN_PATH
    logs/<name>.log   stdout + stderr of each service

``up`` is idempotent: a service whose pid file names a live process with the same command
line is left alone. ``down`` stops only those processes (a recycled pid is never killed).
Every server binds to 127.0.0.1; no service phones home.

    python -m deployments.stack up [--with-ray] | down | status | env      (or: avff stack ...)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

POOL = "avff-process"
HOST = "127.0.0.1"
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000, "ray": 6379, "web": 8765}
PORT_ENV = {
    "prefect": "AVFF_PREFECT_PORT",
    "mlflow": "AVFF_MLFLOW_PORT",
    "ray": "AVFF_RAY_PORT",
    "web": "AVFF_WEB_PORT",
}
# stop order: the worker first (it talks to Prefect, its flow runs to MLflow and Ray), the page before MLflow
SERVICES = ("worker", "web", "ray", "mlflow", "prefect")
# Ray's default worker port range (`ray start --min-worker-port/--max-worker-port`): its head refuses a port in it
RAY_WORKER_PORTS = (10002, 19999)
# Ray's unix socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes
_RAY_TEMP_MAX = 48
_QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    # with `uv run` among a driver's ancestors (e.g. `uv run pytest` started the worker), Ray 2.60
    # runs every worker through `uv run` in a copy of the working dir: no venv there, tasks hang
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PYTHONUNBUFFERED": "1",
}


class StackError(RuntimeError):
    """A service could not be started, was not healthy in time, or its port is taken."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None
    healthy: Callable[[], bool]


# --------------------------------------------------------------------------- probes


def http_ok(url: str, timeout: float = 5.0, data: bytes | None = None) -> bool:
    """True when ``url`` answers 2xx (POST when ``data`` is given)."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_json(url: str, payload: dict | None = None, timeout: float = 30.0):
    """GET (or POST ``payload``) ``url`` and decode its JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def port_free(port: int) -> bool:
    """True when nothing listens on ``port`` (on 127.0.0.1 or on all interfaces)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the OS considers free now (for tests and side-by-side stacks)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open while choosing, so none is handed out twice)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def _tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=2):
        return True
    return False


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float, name: str, poll: float = 0.2) -> None:
    """Until something accepts on 127.0.0.1:``port``; raises if ``proc`` exits first or after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        if _tcp_open(port):
            return
        time.sleep(poll)
    raise TimeoutError(f"{name} not listening on {HOST}:{port} after {timeout}s")


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of ``pid`` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    """True for a running process; reaps it first when it is our own exited child."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live pids in process group ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[1] == pgid and st[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


def _client_env(env: dict[str, str]) -> dict[str, str]:
    return {k: env[k] for k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_AUTH_MODE") if k in env}


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- the stack


class Stack:
    """The local services under one home directory; see the module docstring."""

    def __init__(self, home: str | os.PathLike | None = None, *, prefect_port: int | None = None,
                 mlflow_port: int | None = None, ray_port: int | None = None, ray_cpus: int | None = None,
                 pool: str = POOL, timeout: float | None = None, web_port: int | None = None):  # fmt: skip
        self.home = Path(home or os.environ.get("AVFF_HOME") or ".avff/stack").resolve()
        given = {"prefect": prefect_port, "mlflow": mlflow_port, "ray": ray_port, "web": web_port}
        self.ports = {k: int(given[k] or os.environ.get(PORT_ENV[k]) or DEFAULT_PORTS[k]) for k in DEFAULT_PORTS}
        self.ray_cpus = ray_cpus or int(os.environ.get("AVFF_RAY_CPUS") or os.cpu_count() or 1)
        self.pool = pool
        # a Prefect server migrating its sqlite DB on a busy 2-core box needs ~20-80 s
        self.timeout = float(timeout or os.environ.get("AVFF_STACK_TIMEOUT") or 240)
        self.bin = Path(sys.executable).parent  # prefect, mlflow and ray of this environment

    # ------------------------------------------------------------ addresses

    def _port(self, name: str) -> int:
        """The port a running service listens on (even if AVFF_*_PORT changed since), else the configured one."""
        state = self._running(name)
        return state["port"] if state else self.ports[name]

    @property
    def prefect_api(self) -> str:
        return f"http://{HOST}:{self._port('prefect')}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{HOST}:{self._port('mlflow')}"

    @property
    def ray_address(self) -> str:
        return f"{HOST}:{self._port('ray')}"

    @property
    def web_url(self) -> str:
        return f"http://{HOST}:{self._port('web')}/"

    def urls(self) -> dict[str, str]:
        urls = {"prefect_ui": self.prefect_api.removesuffix("/api"), "prefect_api": self.prefect_api,
                "mlflow": self.mlflow_uri, "web": self.web_url}  # fmt: skip
        if self._running("ray"):
            urls["ray"] = self.ray_address
        return urls

    def env(self) -> dict[str, str]:
        """What a client (CLI, script, worker) exports to use this stack."""
        env = {"PREFECT_API_URL": self.prefect_api, "MLFLOW_TRACKING_URI": self.mlflow_uri}
        if self._running("ray"):
            # =0: clients keep 127.0.0.1 as their node address instead of resolving it to the host's IP
            env.update(RAY_ADDRESS=self.ray_address, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **self._ray_auth())
        return env

    def _ray_auth(self) -> dict[str, str]:
        """Token auth for the Ray head and every client, with this stack's own token.

        Left unset, Ray 2.60 turns token auth on for `ray start` as soon as ~/.ray/auth_token
        exists (any local ray.init() writes one) while `ray.init(address=...)` clients stay
        "disabled" and fail with InvalidAuthToken; set explicitly, both sides agree.
        """
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self._path("run", "ray_auth_token"))}

    def _write_ray_token(self) -> None:
        path = self._path("run", "ray_auth_token")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # readable by this user only
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))

    # ------------------------------------------------------------ paths and state

    def _path(self, *parts: str) -> Path:
        return self.home.joinpath(*parts)

    def _state_file(self, name: str) -> Path:
        return self._path("run", f"{name}.json")

    def _log(self, name: str) -> Path:
        return self._path("logs", f"{name}.log")

    def _ray_temp(self) -> Path:
        own = self._path("ray")
        if len(str(own)) <= _RAY_TEMP_MAX:
            return own
        return Path("/tmp") / f"avff-ray-{hashlib.sha256(str(self.home).encode()).hexdigest()[:10]}"

    def _running(self, name: str) -> dict | None:
        """The saved state of ``name`` if its pid is alive and still runs the saved command."""
        try:
            state = json.loads(self._state_file(name).read_text())
        except (OSError, ValueError):
            return None
        argv = cmdline(state["pid"])
        # a script started as `prefect ...` shows up as `python .../prefect ...`: compare the tail
        tail = state["argv"][1:]
        if not alive(state["pid"]) or argv is None or argv[len(argv) - len(tail) :] != tail:
            return None
        return state

    @contextlib.contextmanager
    def _locked(self):
        """One `up`/`down` at a time per home (two shells racing would start two servers)."""
        self._path("run").mkdir(parents=True, exist_ok=True)
        with open(self._path("run", "stack.lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ------------------------------------------------------------ service definitions

    def _base_env(self) -> dict[str, str]:
        # the user's own PREFECT_* (a profile, an API URL, a database) must not leak into the stack
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return {**env, **_QUIET, "PREFECT_HOME": str(self._path("prefect")), "PREFECT_API_URL": self.prefect_api,
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # fmt: skip

    def _service(self, name: str) -> Service:
        env = self._base_env()
        if name == "prefect":
            db = self._path("prefect", "prefect.db")
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{db}"
            argv = [str(self.bin / "prefect"), "server", "start", "--host", HOST, "--port", str(self.ports["prefect"])]
            return Service(name, argv, env, self.ports["prefect"], lambda: http_ok(f"{self.prefect_api}/health"))
        if name == "mlflow":
            argv = [str(self.bin / "mlflow"), "server", "--host", HOST, "--port", str(self.ports["mlflow"]),
                    "--backend-store-uri", f"sqlite:///{self._path('mlflow', 'mlflow.db')}",
                    "--artifacts-destination", str(self._path("mlflow", "artifacts")), "--serve-artifacts",
                    "--workers", "1"]  # fmt: skip
            # no GenAI job runner: it forks 7 huey consumers (~75 MB each) that training never uses
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
            return Service(name, argv, env, self.ports["mlflow"], lambda: http_ok(f"{self.mlflow_uri}/health"))
        if name == "web":
            # the champion, loaded at the first upload (none is registered before training) and again when it moves
            env["MLFLOW_TRACKING_URI"] = self.mlflow_uri
            argv = [str(self.bin / "avff"), "web", "--port", str(self.ports["web"]),
                    "--model", os.environ.get("AVFF_WEB_MODEL", "avff-dfdc@champion")]  # fmt: skip
            return Service(name, argv, env, self.ports["web"], lambda: http_ok(f"{self.web_url}health"))
        if name == "ray":
            # Every port assigned up front: the fixed defaults (10001, 52365) collide with any other
            # Ray on the machine, and with unassigned agent ports the raylet waits only 15 s (not
            # tunable) for the Python agents to publish theirs, then aborts ("Timed out waiting for
            # file .../metrics_agent_port_*"); a busy 2-core box needs longer to import them.
            flags = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
                     "--dashboard-agent-listen-port", "--runtime-env-agent-port", "--metrics-export-port",
                     "--ray-client-server-port")  # fmt: skip
            ports = [a for flag, port in zip(flags, free_ports(len(flags))) for a in (flag, str(port))]
            # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (in every env) keeps all of them on 127.0.0.1; our own
            # temp dir keeps /tmp/ray/ray_current_cluster (read by every bare ray.init()) untouched
            argv = [str(self.bin / "ray"), "start", "--head", "--node-ip-address", HOST,
                    "--port", str(self.ports["ray"]), "--num-cpus", str(self.ray_cpus), "--include-dashboard", "false",
                    "--disable-usage-stats", "--temp-dir", str(self._ray_temp()), *ports, "--block"]  # fmt: skip
            env.update(self._ray_auth())
            env.pop("RAY_AUTH_TOKEN", None)  # one token source: an inherited RAY_AUTH_TOKEN competes with the file
            return Service(name, argv, env, self.ports["ray"], self._ray_started)
        if name == "worker":
            env.update(self.env())
            if "RAY_AUTH_TOKEN_PATH" in env:  # our Ray: its token file, not an inherited token
                env.pop("RAY_AUTH_TOKEN", None)
            env["PREFECT_WORKER_QUERY_SECONDS"] = os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "2")
            argv = [str(self.bin / "prefect"), "worker", "start", "--pool", self.pool, "--type", "process",
                    "--name", self._worker_name()]  # fmt: skip
            return Service(name, argv, env, None, self._worker_online)
        raise KeyError(name)

    def _ray_started(self) -> bool:
        """`ray start` printed its banner: the GCS is up *and* the raylet registered (an open GCS
        port alone is not enough, the raylet can still abort)."""
        state = self._running("ray")
        if not state or not _tcp_open(state["port"]):
            return False
        with open(self._log("ray"), "rb") as f:
            f.seek(state.get("log_offset", 0))
            return b"Ray runtime started" in f.read()

    def _worker_name(self) -> str:
        return f"avff-{hashlib.sha256(str(self.home).encode()).hexdigest()[:8]}"

    def _worker_online(self) -> bool:
        """Our worker has registered in the pool and sent a heartbeat since it started."""
        state = self._running("worker")
        try:
            workers = http_json(f"{self.prefect_api}/work_pools/{self.pool}/workers/filter", {}, timeout=10)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        for w in workers or []:
            beat = w.get("last_heartbeat_time")
            if w.get("name") == self._worker_name() and w.get("status") == "ONLINE" and beat and state:
                if datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() >= state["started"] - 5:
                    return True
        return False

    # ------------------------------------------------------------ start, wait, stop

    def _check(self, svc: Service) -> bool:
        """True when ``svc`` must be started and can be; False when it already runs; else raise."""
        state = self._running(svc.name)
        if state:
            if state.get("port") != svc.port:
                raise StackError(f"{svc.name} already runs on port {state.get('port')} (pid {state['pid']}, home "
                                 f"{self.home}): run `avff stack down` before changing ports")  # fmt: skip
            return False
        if svc.name == "ray" and RAY_WORKER_PORTS[0] <= svc.port <= RAY_WORKER_PORTS[1]:
            raise StackError(f"port {svc.port} lies in Ray's worker port range {RAY_WORKER_PORTS[0]}-"
                             f"{RAY_WORKER_PORTS[1]}, which Ray refuses for its head: set {PORT_ENV['ray']} outside it")  # fmt: skip
        if svc.port is not None and not port_free(svc.port):
            raise StackError(f"port {svc.port} in use by another process: set {PORT_ENV[svc.name]}")
        return True

    def _start(self, svc: Service) -> bool:
        """Start ``svc`` unless it already runs; False when it was already running."""
        if not self._check(svc):
            return False
        for d in ("logs", "prefect", "mlflow/artifacts"):
            self._path(d).mkdir(parents=True, exist_ok=True)
        if svc.name == "ray":
            self._write_ray_token()
            # our last head's address: `ray start` refuses to start when it matches any raylet's
            # --gcs-address in `ps` (even another network namespace's); port_free() vouched for the port
            (self._ray_temp() / "ray_current_cluster").unlink(missing_ok=True)
        log = self._log(svc.name)
        with open(log, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(svc.argv)}\n".encode())
            out.flush()
            offset = out.tell()  # where this start's output begins
            # its own session: `down` can stop the service and every child it spawned as one group
            proc = subprocess.Popen(svc.argv, env=svc.env, cwd=self.home, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        state = {"pid": proc.pid, "pgid": proc.pid, "port": svc.port, "argv": svc.argv, "started": time.time(),
                 "log_offset": offset, "env": _client_env(svc.env)}  # fmt: skip
        self._state_file(svc.name).write_text(json.dumps(state, indent=2))
        return True

    def _wait(self, svc: Service) -> None:
        deadline = time.monotonic() + self.timeout
        pid = json.loads(self._state_file(svc.name).read_text())["pid"]
        while True:
            if not alive(pid):  # not _running(): before exec, /proc shows the parent's command line
                raise StackError(f"{svc.name} exited during start (log: {self._log(svc.name)}); its last lines:\n"
                                 f"{log_tail(self._log(svc.name))}")  # fmt: skip
            if svc.healthy():
                return
            if time.monotonic() > deadline:
                raise StackError(f"{svc.name} not healthy after {self.timeout:.0f}s (AVFF_STACK_TIMEOUT; log: "
                                 f"{self._log(svc.name)}); its last lines:\n{log_tail(self._log(svc.name))}")  # fmt: skip
            time.sleep(1.0)

    def _wait_ray(self, attempts: int = 3) -> None:
        """Ray's own start-up has fixed 15-30 s deadlines (agents, node registration) that a busy
        box can miss while the other servers boot; a failed start is retried on new ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._wait(self._service("ray"))
            except StackError as e:
                if attempt == attempts or "exited during start" not in str(e):
                    raise
                print(f"ray start failed (attempt {attempt}/{attempts}), retrying", file=sys.stderr)
                self._stop("ray")
                self._start(self._service("ray"))

    def _stop(self, name: str, grace: float = 30.0) -> bool:
        """SIGTERM the service (Ray: its `ray start` process, which stops its own daemons), then
        SIGKILL whatever of its process group is left after ``grace`` seconds. True when it ran."""
        try:
            saved = json.loads(self._state_file(name).read_text())
        except (OSError, ValueError):
            return False
        state = self._running(name)
        self._state_file(name).unlink(missing_ok=True)
        pid, pgid = saved["pid"], saved["pgid"]
        if state is None and (alive(pid) or not group_members(pgid)):
            # the pid now runs something else (recycled), or nothing of ours is left. Children
            # still in the group of a *dead* leader are ours: Linux reuses no pid that is a live pgid.
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM) if name == "ray" and state else os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (alive(pid) or group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.5)
            if name == "ray" and not alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGTERM)  # stragglers of an unclean Ray exit
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        alive(pid)  # reap
        return state is not None

    # ------------------------------------------------------------ public API

    def up(self, ray: bool = False) -> dict[str, str]:
        """Start what is not running (Prefect, MLflow, optionally Ray, then the worker); wait
        until each is healthy; return the URLs."""
        with self._locked():
            services = [self._service(n) for n in ["prefect", "mlflow", "web"] + (["ray"] if ray else [])]
            for svc in services:  # every port checked before anything starts: no half-started stack
                self._check(svc)
            started: list[str] = []
            try:
                for svc in services:  # start all, then wait: the servers boot in parallel
                    if self._start(svc):
                        started.append(svc.name)
                for svc in services[:3]:
                    self._wait(svc)
                if ray:
                    self._wait_ray()
                worker = self._service("worker")
                state = self._running("worker")
                if state and state["env"] != _client_env(worker.env):
                    self._stop("worker")  # started before Ray was: restart it with RAY_ADDRESS
                if self._start(worker):
                    started.append("worker")
                self._wait(worker)
            except BaseException:
                # a failed `up` leaves the machine as it found it: what this call started is stopped
                # (services that already ran before it are left alone)
                for name in SERVICES:
                    if name in started:
                        self._stop(name)
                raise
            return self.urls()

    def down(self) -> list[str]:
        """Stop the services this home started; returns the names that were running."""
        with self._locked():
            return [name for name in SERVICES if self._stop(name)]

    def status(self) -> dict[str, dict]:
        """Per service: running, pid, url, healthy (an unhealthy running service is still starting)."""
        out = {}
        urls = {"prefect": self.prefect_api.removesuffix("/api"), "mlflow": self.mlflow_uri,
                "ray": self.ray_address, "worker": f"pool {self.pool}", "web": self.web_url}  # fmt: skip
        for name in ("prefect", "mlflow", "worker", "web", "ray"):
            state = self._running(name)
            healthy = bool(state) and self._service(name).healthy()
            out[name] = {"running": bool(state), "pid": state and state["pid"], "url": urls[name], "healthy": healthy}
        return out

    def pids(self) -> dict[str, int]:
        """pid (= process group) of each running service."""
        return {name: s["pid"] for name in SERVICES if (s := self._running(name))}


# --------------------------------------------------------------------------- CLI


def exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={v}" for k, v in env.items())


NOT_RUNNING = 3  # `status` of a stack with nothing running (LSB's "program is not running")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["up", "down", "status", "env"],
                   help="status exits 0 when prefect, mlflow, the worker and the web page are healthy, 1 when some are not, "
                   f"{NOT_RUNNING} when nothing runs; env prints the exports")  # fmt: skip
    p.add_argument("--with-ray", action="store_true", help="also start a Ray head (RAY_ADDRESS for the worker)")
    p.add_argument("--home", default=None, help="state directory (default: $AVFF_HOME, else ./.avff/stack)")


def run(args: argparse.Namespace, prog: str = "python -m deployments.stack") -> int:
    stack = Stack(args.home)
    try:
        if args.action == "up":
            t0 = time.perf_counter()
            urls = stack.up(ray=args.with_ray)
            print(f"stack up in {time.perf_counter() - t0:.0f}s (state in {stack.home})", file=sys.stderr)
            for k, v in urls.items():
                print(f"  {k:12s} {v}", file=sys.stderr)
            print(exports(stack.env()))
        elif args.action == "down":
            stopped = stack.down()
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
        elif args.action == "status":
            rows = stack.status()
            if not any(s["running"] for s in rows.values()):  # nothing to export or to look at
                print(f"stack not running (home {stack.home}): start it with `avff stack up`")
                return NOT_RUNNING
            for name, s in rows.items():
                state = "healthy" if s["healthy"] else ("starting/unhealthy" if s["running"] else "stopped")
                print(f"{name:8s} {state:18s} pid {str(s['pid'] or '-'):8s} {s['url']}")
            print(exports(stack.env()))
            return 0 if all(rows[n]["healthy"] for n in ("prefect", "mlflow", "worker", "web")) else 1
        else:
            print(exports(stack.env()))
    except StackError as e:
        # one line (the log file it names has the rest); `up` has already stopped what it started
        print(f"{prog}: error: {str(e).splitlines()[0].removesuffix('; its last lines:')}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployments.stack", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
