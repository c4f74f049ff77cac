"""The dependency direction of STYLE.md: deployments -> flows -> tasks -> {avff_model, storage}."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "avff_model": {"prefect", "ray", "mlflow", "flows", "tasks", "deployments"},
    "storage": {"prefect", "ray", "mlflow", "flows", "tasks", "deployments", "avff_model"},
    "tasks": {"prefect", "ray", "flows", "deployments"},
    "flows": {"deployments"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layering(package):
    # flows/cli.py is the console entry point, above everything (it also drives `avff stack`)
    files = [p for p in (ROOT / package).rglob("*.py") if p.relative_to(ROOT).as_posix() != "flows/cli.py"]
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package]) for p in files}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {offenders}"


# MLflow is a tracking adapter: tasks/ reach it only through tasks/tracking/ and the pyfunc
# model (tasks/serve/), which MLflow loads by file.
MLFLOW_OK = ("tasks/tracking/", "tasks/serve/scorer.py", "tasks/serve/pyfunc_model.py")


def test_mlflow_stays_in_flows_and_the_tracking_adapter():
    files = [p for p in (ROOT / "tasks").rglob("*.py") if not p.relative_to(ROOT).as_posix().startswith(MLFLOW_OK)]
    offenders = sorted(str(p.relative_to(ROOT)) for p in files if "mlflow" in _imports(p))
    assert not offenders, f"only flows/ and {MLFLOW_OK} may import mlflow: {offenders}"
