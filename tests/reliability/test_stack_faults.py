"""A failed `stack up` leaves nothing running: what it started is stopped before the error."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from deployments.stack import Stack, StackError, free_ports, port_free

pytestmark = [
    pytest.mark.slow,  # boots a real Prefect server and MLflow server (~1 min on a busy box)
    pytest.mark.timeout(1800),
]  # its stack's own health deadline is 600 s a service


def _processes_in(home: Path) -> list[int]:
    """Live processes whose working directory is ``home`` (every service runs there)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") == str(home):
                    found.append(int(entry))
            except OSError:
                continue  # exited, or not ours to read
    return found


def test_a_failed_up_stops_the_services_it_started(tmp_path):
    """Prefect and MLflow come up healthy, then Ray cannot start (a CPU count it refuses, three
    attempts): `up` raises naming Ray, and Prefect and MLflow are stopped again, their ports
    free, no process of the stack left."""
    home = Path(tempfile.mkdtemp(prefix="avff-s", dir="/tmp"))  # short: Ray's socket paths
    ports = free_ports(4)
    stack = Stack(home, prefect_port=ports[0], mlflow_port=ports[1], ray_port=ports[2], ray_cpus=-1, timeout=600,
                  web_port=ports[3])  # fmt: skip
    try:
        with pytest.raises(StackError, match="ray exited during start"):
            stack.up(ray=True)
        for name in ("prefect", "mlflow"):  # they did start (and became healthy: Ray is waited for last)
            assert (home / "logs" / f"{name}.log").stat().st_size > 0
        assert "Resource quantities must be nonnegative" in (home / "logs" / "ray.log").read_text()
        assert stack.pids() == {}
        assert all(port_free(p) for p in (ports[0], ports[1], ports[3])), (
            "Prefect, MLflow or the web page still listens"
        )
        assert _processes_in(home) == []
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)
