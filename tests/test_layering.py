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
# `avff stack` (flows/cli/stack.py) drives deployments/stack.py: the one CLI module above deployments/
ABOVE_DEPLOYMENTS = {"flows/cli/stack.py"}


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
    cli = list((ROOT / "flows" / "cli").glob("*.py"))
    assert ROOT / "flows" / "cli" / "__init__.py" in cli and len(cli) > 1
    assert all(STORAGE_LIBS <= _forbidden_for(p, "flows") for p in cli)
    assert "deployments" in _forbidden_for(ROOT / "flows" / "cli" / "train.py", "flows")


def _private_uses(path: Path) -> list[str]:
    """``from <project> import _x``, ``<anything>._x`` (not ``self._x``) and assignments to imported modules' attributes."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and n.module.split(".")[0] in PROJECT for a in n.names}  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            found += [
                f"{node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")
            ]
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
    offenders = {
        str(p.relative_to(ROOT)): uses for p in sorted((ROOT / "bench").rglob("*.py")) if (uses := _private_uses(p))
    }
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


# Above tasks/, MLflow is reached only through the tracker boundary (tasks.tracking.tracker.Tracker, its
# one implementation tasks.tracking.mlflow_tracker): swapping the tracker touches tasks/tracking/ alone.
# Files not moved yet, each with what still calls MLflow itself; the list only shrinks (empty: every one moved).
MLFLOW_NOT_YET: dict[str, str] = {}


def test_above_tasks_mlflow_is_reached_only_through_the_tracker():
    files = [p for top in ("flows", "deployments", "bench") for p in sorted((ROOT / top).rglob("*.py"))]
    importing = {p.relative_to(ROOT).as_posix() for p in files if "mlflow" in _imports(p)}
    assert files
    assert not importing - set(MLFLOW_NOT_YET), (
        f"import tasks.tracking (Tracker) instead of mlflow in: {sorted(importing - set(MLFLOW_NOT_YET))}"
    )
    assert set(MLFLOW_NOT_YET) <= importing, f"moved behind the tracker: drop {set(MLFLOW_NOT_YET) - importing}"


# The concerns inside tasks/ (and their flows) talk through storage/ and avff_model/, never
# through each other: what training writes and serving reads (checkpoints, decision.json) is
# storage/, the model's input contract is avff_model/inputs.py. module prefix -> forbidden prefixes
CONCERNS = {
    "tasks.train": ("tasks.serve",),
    "tasks.serve": ("tasks.train",),
    "tasks.evaluate": ("tasks.train",),
    # the one video writer, below every concern that writes videos
    "tasks.media": (
        "tasks.ingest",
        "tasks.train",
        "tasks.serve",
        "tasks.evaluate",
        "tasks.synthetic",
        "tasks.tracking",
    ),
    # the serving and evaluating flows do not load the training flow (nor, through it, training)
    "flows.evaluate": ("flows.train", "tasks.train"),
    "flows.cli.evaluate": ("flows.train", "tasks.train"),
    "flows.cli.predict": ("flows.train", "tasks.train"),
}


def _module_of(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts)


def _project_imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at any depth (``from tasks import train`` names ``tasks.train``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] in PROJECT}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _concern_offenders(files: list[Path], root: Path = ROOT) -> dict[str, list[str]]:
    offenders = {}
    for path in files:
        module = _module_of(path, root)
        forbidden = [f for concern, fs in CONCERNS.items() if _under(module, concern) for f in fs]
        bad = sorted(m for m in _project_imports(path) if any(_under(m, f) for f in forbidden))
        if bad:
            offenders[path.relative_to(root).as_posix()] = bad
    return offenders


def test_train_serve_and_evaluate_never_import_each_other():
    files = sorted((ROOT / "tasks").rglob("*.py")) + sorted((ROOT / "flows").rglob("*.py"))
    assert ROOT / "flows" / "cli" / "predict.py" in files
    offenders = _concern_offenders(files)
    assert not offenders, f"a concern imports another (rules: {CONCERNS}): {offenders}"


def _cli_imports(path: Path) -> list[str]:
    """The CLI modules ``path`` imports: ``flows.cli`` and below (and a stray ``flows.cli_*`` module)."""
    return sorted(m for m in _project_imports(path) if _under(m, "flows.cli") or m.startswith("flows.cli_"))


def _outside_the_cli(root: Path) -> list[Path]:
    """Every module of flows/ that is not in the CLI package flows/cli/."""
    return [p for p in sorted((root / "flows").rglob("*.py")) if root / "flows" / "cli" not in p.parents]


def test_no_flow_imports_the_cli():
    """The CLI is its own package, flows/cli/, above the flows: a flow that imports it drags argparse and
    printing in, and a flow run started from Prefect or a deployment would depend on the console's face."""
    assert (ROOT / "flows" / "cli" / "__init__.py").is_file(), "the CLI is the package flows/cli/"
    flows = _outside_the_cli(ROOT)
    stray = [p.relative_to(ROOT).as_posix() for p in flows if p.name.startswith("cli")]
    assert flows and not stray, f"CLI modules belong in flows/cli/: {stray}"
    offenders = {p.relative_to(ROOT).as_posix(): bad for p in flows if (bad := _cli_imports(p))}
    assert not offenders, f"no module of flows/ outside flows/cli/ may import flows.cli: {offenders}"


def test_the_cli_check_catches_what_it_names(tmp_path):
    (tmp_path / "flows" / "cli").mkdir(parents=True)
    (tmp_path / "flows" / "cli" / "train.py").write_text("from flows.train import train_avff\n")
    flow = tmp_path / "flows" / "evaluate.py"
    flow.write_text("from flows import cli\nfrom flows.client import c\ndef f():\n    import flows.cli.predict\n")
    assert _outside_the_cli(tmp_path) == [flow]
    assert _cli_imports(flow) == ["flows.cli", "flows.cli.predict"]
    # the layout before the package: flows/cli.py beside the flows, its siblings flows/cli_*.py
    old = tmp_path / "flows" / "cli_experiments.py"
    old.write_text("from flows.cli import one_line\nfrom flows.cli_train import t\n")
    assert old in _outside_the_cli(tmp_path) and _cli_imports(old) == ["flows.cli", "flows.cli.one_line",
                                                                       "flows.cli_train", "flows.cli_train.t"]  # fmt: skip


def test_the_concern_checks_catch_what_they_name(tmp_path):
    probe = tmp_path / "tasks" / "serve" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from tasks.train.data import x\nfrom tasks import train\nimport tasks.trainer\n"
                     "from storage.checkpoint import y\n")  # fmt: skip
    assert _concern_offenders([probe], tmp_path) == {
        "tasks/serve/probe.py": ["tasks.train", "tasks.train.data", "tasks.train.data.x"]
    }
    fine = tmp_path / "tasks" / "evaluate" / "probe.py"
    fine.parent.mkdir(parents=True)
    fine.write_text("from tasks.serve.decision import verdict\nfrom tasks.trainer import t\n")
    assert _concern_offenders([fine], tmp_path) == {}
