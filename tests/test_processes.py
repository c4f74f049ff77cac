"""tests/processes.py: the one way tests stop the processes they start."""

import signal
import subprocess
import sys

from tests.processes import stop

_STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def _started(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"  # its signal handlers are in place
    return proc


def test_a_process_that_obeys_sigterm_ends_by_it():
    proc = _started("import time; print('ready', flush=True); time.sleep(60)")
    assert stop(proc) == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout():
    proc = _started(_STUBBORN)
    assert stop(proc, timeout=0.5) == -signal.SIGKILL


def test_a_finished_process_keeps_its_exit_status():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    assert stop(proc) == 3
