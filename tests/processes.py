"""Stopping the child processes tests start (servers, training runs): one way, everywhere."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM ``proc`` if it still runs, wait up to ``timeout`` seconds, then SIGKILL it; its exit status.

    Only ``proc`` itself is signalled (never a name or a group): a server that stops its own children on
    SIGTERM gets ``timeout`` seconds to do so.
    """
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
