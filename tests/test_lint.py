"""ruff, configured in pyproject.toml: the lint rules pass on the whole repository, and (once the
repository has been formatted once) so does ``ruff format --check``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    pytest.importorskip("ruff")  # the test extra installs it
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_ruff_check_passes_on_the_repository():
    out = _ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert out.returncode == 0, (
        f"ruff check found problems (fix them, or `uv run ruff check --fix .`):\n{out.stdout}{out.stderr}"
    )


def test_ruff_check_reads_this_repositorys_rules():
    """The test above is only as good as the config it runs with: an unused import is caught, clean code is not."""
    args = (
        "check",
        "--no-cache",
        "--output-format",
        "concise",
        "--stdin-filename",
        str(ROOT / "tests" / "probe.py"),
        "-",
    )
    assert _ruff(*args, stdin="import os\n\nprint(os.sep)\n").returncode == 0
    bad = _ruff(*args, stdin="import os\n")
    assert bad.returncode == 1 and "F401" in bad.stdout


def test_ruff_format_check_passes_on_the_repository():
    out = _ruff("format", "--check", "--no-cache", ".")
    assert out.returncode == 0, f"not formatted (run `uv run ruff format .`):\n{out.stdout}{out.stderr}"
