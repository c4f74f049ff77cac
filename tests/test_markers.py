"""Every test that starts a server (Prefect, MLflow, Ray) carries ``slow``, so ``-m "not slow"`` means what it says.

Checked statically, from the source: a test's fixtures are followed through the test module and
the conftest.py files above it (nearest first, as pytest resolves them) to the fixtures that
start servers. A new test that asks for ``trained`` (which needs ``prefect_server``) without the
marker fails here, whether or not anyone runs it.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# the fixtures that start a server: a throwaway Prefect API, a Ray head, the whole local stack
SERVER_FIXTURES = {
    "prefect_server": "conftest.py",
    "ray_address": "conftest.py",
    "flow_env": "reliability/conftest.py",
    "stack": "e2e/conftest.py",
}
BUILTIN = {"request", "tmp_path", "tmp_path_factory", "monkeypatch", "capsys", "capfd", "caplog", "recwarn",
           "pytestconfig", "cache", "record_property", "doctest_namespace"}  # fmt: skip


def _is_slow_mark(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "slow" and ast.unparse(node).endswith("mark.slow")


def _is_fixture(node: ast.FunctionDef) -> bool:
    return any(ast.unparse(d.func if isinstance(d, ast.Call) else d).endswith("fixture") for d in node.decorator_list)


def _args(node: ast.FunctionDef) -> list[str]:
    return [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]


def _fixtures(path: Path) -> dict[str, list[str]]:
    """name -> the fixtures it requests, for every fixture defined in ``path``."""
    if not path.exists():
        return {}
    tree = ast.parse(path.read_text(), filename=str(path))
    return {n.name: _args(n) for n in tree.body if isinstance(n, ast.FunctionDef) and _is_fixture(n)}


def _scopes(module: Path, root: Path) -> list[dict[str, list[str]]]:
    """The fixture scopes a test module sees, nearest first: itself, then each conftest.py up to ``root``."""
    scopes, folder = [_fixtures(module)], module.parent
    while True:
        scopes.append(_fixtures(folder / "conftest.py"))
        if folder == root:
            return scopes
        folder = folder.parent


def _needs(names: list[str], scopes: list[dict[str, list[str]]], level: int = 0) -> set[str]:
    """Every fixture ``names`` pull in (a fixture that requests its own name reaches the next scope up)."""
    found: set[str] = set()
    for name in names:
        if name in BUILTIN:
            continue
        for at in range(level, len(scopes)):
            if name in scopes[at]:
                found.add(name)
                requested = scopes[at][name]
                found |= _needs([r for r in requested if r != name], scopes, at)
                found |= _needs([r for r in requested if r == name], scopes, at + 1)
                break
    return found


def unmarked_server_tests(root: Path = TESTS) -> dict[str, list[str]]:
    """``path::test`` -> the server fixtures it needs, for each test without the ``slow`` marker."""
    offenders = {}
    for module in sorted(root.rglob("test_*.py")):
        tree = ast.parse(module.read_text(), filename=str(module))
        module_slow = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                          and any(_is_slow_mark(m) for m in ast.walk(n.value)) for n in tree.body)  # fmt: skip
        scopes = _scopes(module, root)
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
                continue
            if module_slow or any(_is_slow_mark(m) for d in node.decorator_list for m in ast.walk(d)):
                continue
            servers = sorted(_needs(_args(node), scopes) & set(SERVER_FIXTURES))
            if servers:
                offenders[f"{module.relative_to(root).as_posix()}::{node.name}"] = servers
    return offenders


def test_the_server_fixtures_exist_where_named():
    for name, conftest in SERVER_FIXTURES.items():
        assert name in _fixtures(TESTS / conftest), (
            f"{name} is no longer a fixture of tests/{conftest}: update SERVER_FIXTURES"
        )


def test_every_test_that_starts_a_server_is_marked_slow():
    offenders = unmarked_server_tests()
    assert not offenders, f"tests that start a server must carry @pytest.mark.slow: {offenders}"


def test_the_marker_check_follows_fixtures_through_conftests(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "import pytest\n@pytest.fixture\ndef prefect_server(): yield\n"
        "@pytest.fixture\ndef trained(prefect_server, tmp_path): return 1\n@pytest.fixture\ndef plain(): return 2\n")  # fmt: skip
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "conftest.py").write_text(
        "import pytest\n@pytest.fixture\ndef trained(trained): return trained\n"
    )
    (tmp_path / "sub" / "test_a.py").write_text(
        "import pytest\ndef test_missing(trained): pass\n@pytest.mark.slow\ndef test_marked(trained): pass\n"
        "def test_fine(plain, tmp_path): pass\n@pytest.fixture\ndef local(prefect_server): pass\n"
        "def test_local(local): pass\n")  # fmt: skip
    (tmp_path / "test_b.py").write_text(
        "import pytest\npytestmark = [pytest.mark.slow]\ndef test_any(prefect_server): pass\n"
    )
    assert unmarked_server_tests(tmp_path) == {"sub/test_a.py::test_missing": ["prefect_server"],
                                               "sub/test_a.py::test_local": ["prefect_server"]}  # fmt: skip
