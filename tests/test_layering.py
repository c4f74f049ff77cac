"""The dependency direction of STYLE.md: deployments -> flows -> tasks -> {avff_model, storage}."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"avff_model", "storage", "tasks", "flows", "deployments"}
# the storage libraries: shards and tables are read and written through storage/ only
STORAGE_LIBS = {"pyarrow", "webdataset", "fsspec"}
FORBIDDEN = {
    "avff_model": {"prefect", "ray", "mlflow", "flows", "tasks", "deployments", *STORAGE_LIBS},
    "storage": {"prefect", "ray", "mlflow", "flows", "tasks", "deployments", "avff_model"},
    "tasks": {"prefect", "ray", "flows", "deployments", *STORAGE_LIBS},
    "flows": {"deployments", *STORAGE_LIBS},
    "deployments": {*STORAGE_LIBS},
    "bench": {"deployments", *STORAGE_LIBS},  # benchmarks measure the public API of flows, tasks, storage, the model
}
# flows/cli.py is the console entry point, above everything (it also drives `avff stack`)
ABOVE_DEPLOYMENTS = {"flows/cli.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _forbidden_for(path: Path, package: str) -> set[str]:
    rel = path.relative_to(ROOT).as_posix()
    return FORBIDDEN[package] - {"deployments"} if rel in ABOVE_DEPLOYMENTS else FORBIDDEN[package]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layering(package):
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}/"
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & _forbidden_for(p, package)) for p in files}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_the_cli_entry_point_is_checked_too():
    cli = [p for p in (ROOT / "flows").glob("cli*.py")]
    assert ROOT / "flows" / "cli.py" in cli and len(cli) > 1
    assert all(STORAGE_LIBS <= _forbidden_for(p, "flows") for p in cli)
    assert "deployments" in _forbidden_for(ROOT / "flows" / "cli_train.py", "flows")


def _private_uses(path: Path) -> list[str]:
    """``from <project> import _x``, ``<anything>._x`` (not ``self._x``) and assignments to imported modules' attributes."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and n.module.split(".")[0] in PROJECT for a in n.names}  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            found += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, (ast.Assign, ast.AugAssign)):  # monkeypatching: module.attr = ...
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [f"{node.lineno}: {ast.unparse(t)} = ..." for t in targets if isinstance(t, ast.Attribute)
                      and isinstance(t.value, ast.Name) and t.value.id in modules]  # fmt: skip
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda u: int(u.split(":")[0]))


def test_benchmarks_use_only_the_public_api():
    """STYLE.md 16: a benchmark that calls ``_private`` members or monkeypatches measures what a refactor changes."""
    offenders = {str(p.relative_to(ROOT)): uses for p in sorted((ROOT / "bench").rglob("*.py")) if (uses := _private_uses(p))}
    assert not offenders, f"bench/ uses private names or monkeypatches: {offenders}"


def test_the_private_use_check_catches_what_it_names(tmp_path):
    sample = tmp_path / "b.py"
    sample.write_text("import flows.ingest as fi\nfrom tasks.x import _y\nfrom tasks.x import z\n"
                      "fi.run = None\ndet._run()\nself._ok\nsetattr(fi, 'a', 1)\n")  # fmt: skip
    assert [u.split(":")[0] for u in _private_uses(sample)] == ["2", "4", "5", "7"]


# MLflow is a tracking adapter: tasks/ reach it only through tasks/tracking/ and the pyfunc
# model (tasks/serve/), which MLflow loads by file.
MLFLOW_OK = ("tasks/tracking/", "tasks/serve/scorer.py", "tasks/serve/pyfunc_model.py")


def test_mlflow_stays_in_flows_and_the_tracking_adapter():
    files = [p for p in (ROOT / "tasks").rglob("*.py") if not p.relative_to(ROOT).as_posix().startswith(MLFLOW_OK)]
    offenders = sorted(str(p.relative_to(ROOT)) for p in files if "mlflow" in _imports(p))
    assert not offenders, f"only flows/ and {MLFLOW_OK} may import mlflow: {offenders}"
