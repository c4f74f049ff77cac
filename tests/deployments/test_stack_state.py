"""The stack's bookkeeping without servers: pid files, process groups, ports, the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments import stack as st
from deployments.runs import parse_flow_run_id


def _write_state(home: Path, name: str, proc: subprocess.Popen, argv: list[str]) -> None:
    (home / "run").mkdir(parents=True, exist_ok=True)
    state = {"pid": proc.pid, "pgid": proc.pid, "port": None, "argv": argv, "started": time.time(), "env": {}}
    (home / "run" / f"{name}.json").write_text(json.dumps(state))


def _wait_exec(proc: subprocess.Popen, marker: str) -> None:
    """Until the child has exec'd (before that /proc shows the parent's command line)."""
    deadline = time.monotonic() + 10
    while marker not in " ".join(st.cmdline(proc.pid) or []) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_down_never_kills_a_pid_that_runs_something_else(tmp_path):
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        _wait_exec(other, "sleep")
        # a stale pid file whose pid now belongs to an unrelated process
        _write_state(tmp_path, "prefect", other, ["/venv/bin/prefect", "server", "start", "--port", "4200"])
        stack = st.Stack(tmp_path)
        assert stack.pids() == {}
        assert stack.down() == []
        assert st.alive(other.pid) and not (tmp_path / "run" / "prefect.json").exists()
    finally:
        other.kill()
        other.wait()


def test_down_stops_the_service_and_its_children(tmp_path):
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    argv = [sys.executable, "-c", script]
    proc = subprocess.Popen(argv, start_new_session=True)
    _wait_exec(proc, script)
    deadline = time.monotonic() + 10
    while len(st.group_members(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    family = st.group_members(proc.pid)
    assert len(family) == 2
    _write_state(tmp_path, "worker", proc, argv)
    stack = st.Stack(tmp_path)
    assert stack.pids() == {"worker": proc.pid}
    assert stack.down() == ["worker"]
    assert not [p for p in family if st.alive(p)] and stack.pids() == {}


def test_down_kills_what_a_crashed_service_left_in_its_group(tmp_path):
    script = "import subprocess; subprocess.Popen(['sleep', '60'])"  # the leader exits, its child stays
    argv = [sys.executable, "-c", script]
    proc = subprocess.Popen(argv, start_new_session=True)
    proc.wait()
    (orphan,) = st.group_members(proc.pid)
    _write_state(tmp_path, "ray", proc, argv)
    stack = st.Stack(tmp_path)
    assert stack.pids() == {}  # not running...
    assert stack.down() == [] and not st.alive(orphan)  # ...but nothing of it is left either


def test_port_free_sees_a_listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not st.port_free(port)
    assert st.port_free(port)


def test_ray_temp_dir_fits_unix_socket_paths(tmp_path):
    assert st.Stack("/tmp/h").home / "ray" == st.Stack("/tmp/h")._ray_temp()
    deep = st.Stack(tmp_path / ("x" * 80))._ray_temp()
    assert len(str(deep)) <= 48 and deep == st.Stack(tmp_path / ("x" * 80))._ray_temp()  # stable per home


def test_ports_come_from_arguments_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AVFF_PREFECT_PORT", "4311")
    monkeypatch.delenv("AVFF_MLFLOW_PORT", raising=False)
    stack = st.Stack(tmp_path, mlflow_port=5999)
    assert stack.ports["prefect"] == 4311 and stack.ports["mlflow"] == 5999 and stack.ports["ray"] == 6379
    assert stack.env() == {
        "PREFECT_API_URL": "http://127.0.0.1:4311/api",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
    }


def test_cli_status_of_a_stopped_stack_says_not_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AVFF_PREFECT_PORT", "4311")
    assert st.main(["status", "--home", str(tmp_path)]) == st.NOT_RUNNING == 3
    out = capsys.readouterr().out
    assert out == f"stack not running (home {tmp_path}): start it with `avff stack up`\n"  # no export lines


def test_flow_run_id_is_read_from_prefect_cli_output():
    out = "Created flow run 'loose-oarfish'.\n└── UUID: 1a5cd06d-4a94-4cc6-b8be-afadc7a8e853\n└── Parameters: {}"
    assert parse_flow_run_id(out) == "1a5cd06d-4a94-4cc6-b8be-afadc7a8e853"
    with pytest.raises(ValueError):
        parse_flow_run_id("Error: deployment not found")


def test_a_ray_port_in_rays_worker_port_range_is_refused_before_anything_starts(tmp_path):
    """Ray refuses a GCS port inside its own worker port range (10002-19999): `avff stack up` with
    AVFF_RAY_PORT=16387 tried three times (~1 min) and ended on an empty "its last lines:"."""
    stack = st.Stack(tmp_path, ray_port=16387)
    with pytest.raises(st.StackError) as refused:
        stack._check(stack._service("ray"))
    assert str(refused.value) == ("port 16387 lies in Ray's worker port range 10002-19999, which Ray refuses for "
                                  "its head: set AVFF_RAY_PORT outside it")  # fmt: skip
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.json"))  # nothing started
    ok = st.Stack(tmp_path, ray_port=st.free_port())  # the OS's ephemeral range, above Ray's worker ports
    assert ok._check(ok._service("ray")) is True


def test_cli_up_that_cannot_start_is_one_avff_stack_error_line(tmp_path, capsys, monkeypatch):
    """Like every avff error: `avff stack: error: …`, one line, exit 1 (it printed a bare "error: …")."""
    from flows.cli import main

    for name, port in zip(("PREFECT", "MLFLOW", "WEB"), st.free_ports(3)):
        monkeypatch.setenv(f"AVFF_{name}_PORT", str(port))
    monkeypatch.setenv("AVFF_RAY_PORT", "16387")
    assert main(["stack", "up", "--with-ray", "--home", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "avff stack: error: port 16387 lies in Ray's worker port range 10002-19999, which Ray refuses for its head: "
        "set AVFF_RAY_PORT outside it\n"
    )
